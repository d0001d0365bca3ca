"""Batched generation on the default model: hone's left-padded batches vs transformers' continuous batching.

python3 bench/infer_batching.py [--prompts 8] [--tokens 32] [--model PATH]

Prints seconds for each way and how many greedy replies agree with hone's (which equal one-by-one greedy).
"""
from __future__ import annotations

import argparse
import json
import time
from importlib import resources

import torch
from transformers import GenerationConfig

from hone.config import GenCfg, ModelCfg
from hone.data.conversation import Message
from hone.infer.engine import Request, TransformersEngine
from hone.paths import models_dir


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--model", default=str(models_dir() / "smollm2-135m"))
    a = p.parse_args()
    engine = TransformersEngine.load(ModelCfg(model=a.model))
    rows = json.loads((resources.files("hone") / "resources/datasets/alpaca_en_demo.json").read_text())[:a.prompts]
    gen = GenCfg(max_new_tokens=a.tokens)
    reqs = [Request([Message("user", (r["instruction"] + "\n" + r["input"]).strip())], gen) for r in rows]
    t = time.perf_counter()
    padded = engine.generate_many(reqs, batch_size=a.prompts)
    print(f"hone padded batch of {a.prompts}: {time.perf_counter() - t:.1f}s")
    ids = [engine.prompt_ids(r.messages) for r in reqs]
    gc = GenerationConfig(max_new_tokens=a.tokens, do_sample=False, eos_token_id=engine.eos_ids,
                          pad_token_id=engine.tokenizer.pad_token_id)
    t = time.perf_counter()
    with torch.no_grad():
        out = engine.model.generate_batch(ids, generation_config=gc, progress_bar=False)
    secs = time.perf_counter() - t
    texts = [engine.tokenizer.decode(out[k].generated_tokens, skip_special_tokens=True)
             for k in sorted(out, key=lambda k: int(k.split("_")[-1]))]
    same = sum(x == g.text for x, g in zip(texts, padded))
    print(f"continuous batching (generate_batch): {secs:.1f}s; {same} of {len(texts)} replies equal")


if __name__ == "__main__":
    main()
