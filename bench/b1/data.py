"""B1's data: the alpaca rows as chat messages, each tool's input files, and the token counts the bench reports.

Every tool sees the same rows: user = instruction, a newline and the input (when there is one); assistant =
output. The bench counts tokens once, the same way for every tool: the chat template applied to the whole
conversation, cut at MAX_LENGTH on the right; the supervised tokens are the ones after the prompt (the template
applied to the user turn with the assistant header).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_LENGTH = 512
EVAL_START, EVAL_ROWS = 400, 50


def load_rows(path: Path) -> list[dict[str, Any]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or len(rows) < EVAL_START + EVAL_ROWS:
        raise SystemExit(f"{path}: expected a JSON list of at least {EVAL_START + EVAL_ROWS} alpaca rows")
    return rows


def split(rows: list[dict[str, Any]], n_train: int,
          n_eval: int = EVAL_ROWS) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The first n_train rows (at most EVAL_START) to train on and the n_eval rows from 400 on to evaluate on."""
    if not 1 <= n_train <= EVAL_START:
        raise SystemExit(f"--rows must be between 1 and {EVAL_START} (rows {EVAL_START}+ are held out), got {n_train}")
    if not 1 <= n_eval <= EVAL_ROWS:
        raise SystemExit(f"--eval-rows must be between 1 and {EVAL_ROWS}, got {n_eval}")
    return rows[:n_train], rows[EVAL_START:EVAL_START + n_eval]


def messages(row: dict[str, Any]) -> list[dict[str, str]]:
    user = "\n".join(p for p in (row.get("instruction", ""), row.get("input", "")) if p)
    return [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]


def _ids(tokenizer: Any, msgs: list[dict[str, str]], gen_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen_prompt)
    if isinstance(out, dict) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    return list(out)


def encode(tokenizer: Any, row: dict[str, Any], max_length: int = MAX_LENGTH) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one row: the chat template, cut at max_length; labels -100 on the prompt."""
    msgs = messages(row)
    full = _ids(tokenizer, msgs, gen_prompt=False)
    prompt = _ids(tokenizer, msgs[:1], gen_prompt=True)
    if full[:len(prompt)] != prompt:
        raise ValueError("the chat template renders the prompt differently inside the whole conversation")
    labels = [-100] * len(prompt) + full[len(prompt):]
    return full[:max_length], labels[:max_length]


@dataclass(frozen=True)
class TokenCounts:
    rows: int
    real_tokens: int           # non-padding tokens fed to the model, summed over rows
    supervised_tokens: int     # tokens that carry loss
    attn_sq: int               # sum over rows of length**2 (the attention FLOP term)
    cut_rows: int              # rows longer than max_length (cut on the right)


def count(tokenizer: Any, rows: list[dict[str, Any]], max_length: int = MAX_LENGTH) -> TokenCounts:
    real = sup = sq = cut = 0
    for row in rows:
        ids, labels = encode(tokenizer, row, max_length)
        full_len = len(_ids(tokenizer, messages(row), gen_prompt=False))
        real += len(ids)
        sq += len(ids) ** 2
        sup += sum(1 for x in labels if x != -100)
        cut += full_len > max_length
    return TokenCounts(len(rows), real, sup, sq, cut)


def write_inputs(work: Path, train: list[dict[str, Any]], evals: list[dict[str, Any]]) -> dict[str, Path]:
    """Writes each tool's training file into `work`; returns their paths by name."""
    work.mkdir(parents=True, exist_ok=True)
    paths = {"alpaca": work / "train_alpaca.json", "eval_alpaca": work / "eval_alpaca.json",
             "messages": work / "train_messages.jsonl", "prompt_completion": work / "train_pc.jsonl",
             "lf_info": work / "dataset_info.json"}
    keep = [{k: r.get(k, "") for k in ("instruction", "input", "output")} for r in train]
    paths["alpaca"].write_text(json.dumps(keep, ensure_ascii=False, indent=1), encoding="utf-8")
    paths["eval_alpaca"].write_text(json.dumps(evals, ensure_ascii=False, indent=1), encoding="utf-8")
    with paths["messages"].open("w", encoding="utf-8") as fh:
        for r in train:
            fh.write(json.dumps({"messages": messages(r)}, ensure_ascii=False) + "\n")
    with paths["prompt_completion"].open("w", encoding="utf-8") as fh:
        for r in train:
            m = messages(r)
            fh.write(json.dumps({"prompt": m[:1], "completion": m[1:]}, ensure_ascii=False) + "\n")
    info = {"b1_train": {"file_name": paths["alpaca"].name, "formatting": "alpaca",
                         "columns": {"prompt": "instruction", "query": "input", "response": "output"}}}
    paths["lf_info"].write_text(json.dumps(info, indent=1), encoding="utf-8")
    return paths


def peer_parser(description: str) -> argparse.ArgumentParser:
    """The options run.py gives every peer script: model, data, output and B1's fixed training settings."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=int, default=16)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--logging-steps", type=int, default=10)
    return p
