"""`hone infer`: predictions for every row of a dataset (or a run's validation split), with metrics.

A row's prompt is its conversation up to the last assistant reply; that reply is the reference. Rows whose
conversation ends with a user turn are predicted without a reference.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence, TextIO

from ..config import DataCfg, RunCfg
from ..data.conversation import Conversation, Message
from ..errors import DataError
from ..runs import CONFIG_FILE, RunInfo
from .engine import Generation, Request
from .metrics import bleu_rouge

log = logging.getLogger("hone")


@dataclass
class Row:
    messages: list[Message]
    reference: str | None
    source: str = ""


@dataclass
class InferResult:
    records: list[dict[str, Any]]
    metrics: dict[str, float] = field(default_factory=dict)
    output: Path | None = None


def rows_from(convs: Sequence[Conversation]) -> list[Row]:
    """Prompt and reference of each conversation; plain-text rows have neither, so they are refused."""
    out = []
    for c in convs:
        if c.is_text:
            raise DataError(f"{c.source or 'a row'} is plain text (pre-training data): it has no prompt to answer; "
                            "give conversation data (alpaca, sharegpt or messages rows)")
        msgs = list(c.messages)
        ref = None
        if msgs and msgs[-1].role == "assistant":
            ref = msgs.pop().content
        if not any(m.role == "user" for m in msgs):
            raise DataError(f"{c.source or 'a row'} has no user turn to answer")
        out.append(Row(msgs, ref, c.source))
    return out


def read_prompts(d: DataCfg) -> list[Conversation]:
    """Every row of the datasets in file order (``NAME#N`` / ``max_samples``: the first rows), read by hone's
    data readers; unlike training data, a row may end with a user turn (a prompt with no reference)."""
    from ..data.formats import RowError, fill_placeholders, to_conversation
    from ..data.pipeline import plan_sources
    from ..data.sources import file_format, read_file, read_source

    out: list[Conversation] = []
    for spec, src in plan_sources(d)[0]:
        if src.fn is not None or not src.files:
            convs, _, report = read_source(src, d.model_name, d.model_author)
            if report.bad:
                b = report.bad[0]
                raise DataError(f"{b.location}: {b.reason}: {b.detail} ({len(report.bad)} bad rows in {src.name})")
        else:
            convs = []
            for path in src.files:
                rows = list(read_file(path, src.split))
                fspec = file_format(rows, src.spec)
                for row, loc, err in rows:
                    try:
                        if err is not None:
                            raise err
                        conv = to_conversation(row, fspec, loc)
                    except RowError as e:
                        raise DataError(f"{loc}: {e.reason}: {e.detail}; fix or remove the row") from None
                    convs.append(fill_placeholders(conv, d.model_name, d.model_author))
        n = spec.count or d.max_samples
        out += convs[:n] if n else convs
    return out


def load_conversations_for(cfg: RunCfg, run: RunInfo | None, dataset_given: bool
                           ) -> tuple[list[Conversation], str]:
    """The conversations to use and a name for them: the given dataset (all of it), else the run's validation
    split (``max_samples`` keeps its first rows)."""
    from ..data.pipeline import load_conversations

    if dataset_given:
        d = replace(cfg.data, val_dataset=(), val_size=0.0)
        if run is not None and not d.model_name and (run.run_dir / CONFIG_FILE).is_file():
            trained = run.config().data  # the names the run filled into {{name}} / {{author}}
            d = replace(d, model_name=trained.model_name, model_author=trained.model_author)
        return read_prompts(d), ", ".join(cfg.data.dataset)
    if run is None:
        raise DataError("name the data with --dataset (or pass --adapter RUN to use the run's validation split)")
    _, convs, _, _ = load_conversations(run.config().data)
    if not convs:
        raise DataError(f"the run {run.run_dir} has no validation split (it trained with val_size 0 and no "
                        "val_dataset); name the data with --dataset")
    if cfg.data.max_samples is not None:
        convs = convs[:cfg.data.max_samples]
    return convs, f"the validation split of {run.run_dir.name}"


def predict(engine: Any, rows: Sequence[Row], cfg: RunCfg, adapter: str | None = None,
            show_progress: bool = True) -> list[dict[str, Any]]:
    """Generate a reply for every row (batched); one record per row, in order."""
    from tqdm import tqdm

    reqs = [Request(r.messages, cfg.gen, adapter, seed=cfg.train.seed) for r in rows]
    bar = tqdm(total=len(reqs), desc="generating", unit="row", disable=not show_progress, file=sys.stderr)
    try:
        gens = engine.generate_many(reqs, batch_size=cfg.gen.infer_batch_size, progress=bar.update)
    finally:
        bar.close()
    return [record(r, g) for r, g in zip(rows, gens)]


def record(row: Row, g: Generation) -> dict[str, Any]:
    prompt = next(m.content for m in reversed(row.messages) if m.role == "user")
    return {"prompt": prompt, "reference": row.reference, "prediction": g.text,
            "messages": [{"role": m.role, "content": m.content} for m in row.messages],
            "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
            "finish_reason": g.finish_reason, "source": row.source}


def write_jsonl(records: Sequence[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)
    return path


def side_by_side(records: Sequence[dict[str, Any]], n: int, width: int = 100) -> str:
    """A few records as prompt / reference / prediction blocks for the terminal."""
    def clip(s: str | None) -> str:
        s = (s or "-").replace("\n", " ⏎ ")
        return s if len(s) <= width else s[:width - 1] + "…"

    out = []
    for i, r in enumerate(records[:n], 1):
        out.append(f"[{i}] prompt:     {clip(r['prompt'])}\n    reference:  {clip(r['reference'])}\n"
                   f"    prediction: {clip(r['prediction'])}")
    return "\n".join(out)


def metrics_of(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    return bleu_rouge([r["prediction"] for r in records], [r["reference"] for r in records])


def run_infer(cfg: RunCfg, engine: Any, run: RunInfo | None, *, dataset_given: bool, output: str | None,
              show: int = 3, out: TextIO | None = None) -> InferResult:
    """`hone infer`: predictions written as jsonl, a few shown, and metrics where every row has a reference."""
    out = out or sys.stdout
    convs, name = load_conversations_for(cfg, run, dataset_given)
    rows = rows_from(convs)
    if not rows:
        raise DataError(f"{name} has no rows to predict")
    log.info("predicting %d rows of %s", len(rows), name)
    records = predict(engine, rows, cfg)
    path = Path(output) if output else (run.run_dir if run else Path(".")) / "predictions.jsonl"
    write_jsonl(records, path)
    out.write(side_by_side(records, show) + "\n")
    metrics: dict[str, float] = {}
    if all(r["reference"] is not None for r in records):
        metrics = metrics_of(records)
        path.with_name(path.stem + "_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        out.write("  ".join(f"{k}: {v:.2f}" for k, v in metrics.items()) + "\n")
    else:
        n = sum(r["reference"] is None for r in records)
        out.write(f"no metrics: {n} of {len(records)} rows have no reference answer\n")
    out.write(f"predictions: {path}\n")
    return InferResult(records, metrics, path)
