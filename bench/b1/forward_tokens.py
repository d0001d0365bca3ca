"""How many tokens one forward pass should take on this CPU: training speed at each `max_forward_tokens`.

Runs the forward and backward passes of real training steps (hone's default model, LoRA rank 16 on every
block linear, the precision `dtype: auto` picks here, packed rows) with the micro-batch split into forwards of
at most N tokens, for each N in turn, step by step interleaved so that a change in the machine's speed hits
every N alike. Two kinds of step: the quickstart's (8 short identity rows) and B1's (4 alpaca rows, cut at 512).

    python bench/b1/forward_tokens.py [--steps 10] [--limits 256,512,1024,2048,0]

Prints real tokens per second of forward + backward time for each limit (0: the whole micro-batch at once).
The optimizer step is left out: it costs the same whatever the layout.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hone.config import load_config, read_yaml
from hone.data.pipeline import prepare
from hone.models.load import choose_precision, load_tokenizer, resolve_model
from hone.templates import get_template
from hone.training.loop import training_model
from hone.training.objective import SFT

ROOT = Path(__file__).resolve().parents[2]


def steps_of(cfg_keys: dict, batch: int, n_steps: int) -> tuple[list[list], object, object]:
    cfg = load_config(cfg_keys)
    model_dir = resolve_model(cfg.model.model)
    tok = load_tokenizer(model_dir, cfg.model)
    data = prepare(cfg, tok, get_template(cfg.model.template, tok))
    rows = data.train
    return [rows[i * batch:(i + 1) * batch] for i in range(n_steps)], cfg, tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="steps of each kind per limit")
    ap.add_argument("--limits", default="256,512,1024,2048,0", help="tokens per forward to compare (0: whole)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "alpaca_en_demo.json"))
    args = ap.parse_args()
    limits = [int(x) for x in args.limits.split(",")]
    torch.set_num_threads(2)

    quick = str(ROOT / "examples" / "quickstart.yaml")
    qs_steps, cfg, tok = steps_of({**read_yaml(quick), "data_cache": False}, 8, args.steps)
    b1_steps, _, _ = steps_of({"model": "smollm2-135m", "template": "auto", "dataset": [args.data],
                               "max_length": 512, "truncation_strategy": "right", "data_cache": False,
                               "val_size": 0}, 4, args.steps)
    precision = choose_precision("auto", train=True)
    model = training_model(resolve_model(cfg.model.model), cfg, precision, packing=True)  # as `hone train` builds it
    model.train()
    print(f"# {precision.reason}; LoRA rank {cfg.tune.lora_rank}; {torch.get_num_threads()} threads")

    for name, steps in (("quickstart: 8 identity rows a step", qs_steps), ("B1: 4 alpaca rows a step", b1_steps)):
        layouts = {n: SFT(tok.pad_token_id, True, steps[0][0], max_tokens=n) for n in limits}
        module = layouts[limits[0]].loss_module(model)
        tokens = {n: 0 for n in limits}
        seconds = {n: 0.0 for n in limits}
        forwards = {n: 0 for n in limits}
        for i, rows in enumerate([steps[0]] + steps):  # the first step of each limit warms up, uncounted
            for n, sft in layouts.items():
                pieces = sft.batches(rows)
                start = time.perf_counter()
                for p in pieces:
                    with torch.autocast("cpu", dtype=precision.compute, enabled=precision.mixed != "no"):
                        loss, count = module(**p)
                    (loss / max(1, count)).backward()
                took = time.perf_counter() - start
                model.zero_grad(set_to_none=True)
                if i:
                    tokens[n] += sum(len(r.input_ids) for r in rows)
                    seconds[n] += took
                    forwards[n] += len(pieces)
        print(f"\n{name} ({tokens[limits[0]] // args.steps} tokens a step on average)")
        print("| max_forward_tokens | forwards a step | tokens/s |")
        print("|---|---:|---:|")
        for n in limits:
            print(f"| {n or 'whole micro-batch'} | {forwards[n] / args.steps:.1f} | {tokens[n] / seconds[n]:.0f} |")


if __name__ == "__main__":
    main()
