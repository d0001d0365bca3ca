"""Eval loss of the base model, or base + a saved LoRA adapter, on B1's held-out rows: one script for every tool.

    python bench/b1/eval_loss.py --model DIR --data eval_alpaca.json [--adapter DIR]

Prints one JSON line: {"eval_loss": mean cross-entropy over the supervised (response) tokens of all rows,
"tokens": how many}. fp32, the model's chat template, rows cut at 512 tokens on the right.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402


def eval_loss(model_dir: Path, adapter: Path | None, rows: list[dict], threads: int,
              batch_size: int = 10) -> tuple[float, int]:
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    encoded = sorted((data.encode(tokenizer, row) for row in rows), key=lambda e: len(e[0]))
    total, n = 0.0, 0
    with torch.no_grad():
        # rows of similar length batched, padded on the right: a causal model's earlier positions never see
        # the padding, and padded positions carry no label
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i:i + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.tensor([x + [0] * (width - len(x)) for x, _ in chunk])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in chunk])
            labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in chunk])
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
            target = labels[:, 1:]
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                           ignore_index=-100, reduction="sum"))
            n += int((target != -100).sum())
    return total / max(1, n), n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--adapter", type=Path, default=None)
    p.add_argument("--data", required=True, type=Path, help="JSON list of alpaca rows to evaluate on")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    rows = json.loads(args.data.read_text(encoding="utf-8"))
    loss, n = eval_loss(args.model, args.adapter, rows, args.threads)
    print(json.dumps({"eval_loss": loss, "tokens": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
