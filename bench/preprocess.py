"""Preprocessing benchmark: rows/s reading and tokenizing alpaca rows, first run against cached run.

    python3 bench/preprocess.py                 # 100k rows, 1 worker and all cores
    python3 bench/preprocess.py --rows 5000     # a quick run

See bench/README.md for how to read the output.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_rows(n: int, out: Path) -> Path:
    """n alpaca rows built from the shipped demo set, each made distinct so no two rows are the same."""
    base = json.loads((REPO / "src/hone/resources/datasets/alpaca_en_demo.json").read_text(encoding="utf-8"))
    path = out / "alpaca_bench.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            r = base[i % len(base)]
            fh.write(json.dumps({**r, "instruction": f"{r['instruction']} (#{i})"}, ensure_ascii=False) + "\n")
    return path


def run(cfg_values: dict, tokenizer, template) -> tuple[float, object]:
    from hone.config import load_config
    from hone.data.pipeline import prepare

    cfg = load_config(cfg_values)
    t = time.perf_counter()
    data = prepare(cfg, tokenizer, template)
    return time.perf_counter() - t, data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--workers", type=int, nargs="*", default=None,
                   help="worker counts to time (default: 1 and the number of cores)")
    p.add_argument("--tokenizer", default=str(REPO / "tests/fixtures/smollm2-tokenizer"))
    p.add_argument("--max-length", type=int, default=1024)
    args = p.parse_args()
    workers = args.workers or sorted({1, os.cpu_count() or 1})

    from transformers import AutoTokenizer

    from hone.templates.base import get_template

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    template = get_template("auto", tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HONE_HOME"] = str(Path(tmp) / "home")  # a fresh cache for this run only
        data_file = make_rows(args.rows, Path(tmp))
        print(f"{args.rows} alpaca rows, tokenizer {Path(args.tokenizer).name}, template auto, "
              f"max_length {args.max_length}, {os.cpu_count()} cores")
        print(f"{'run':<28}{'seconds':>10}{'rows/s':>12}  fingerprint")
        for w in workers:
            values = {"dataset": [str(data_file)], "max_length": args.max_length, "preprocessing_num_workers": w,
                      "data_cache": False}
            secs, data = run(values, tokenizer, template)
            print(f"{f'first run, {w} worker(s)':<28}{secs:>10.2f}{args.rows / secs:>12.0f}  {data.fingerprint}")
        values = {"dataset": [str(data_file)], "max_length": args.max_length, "preprocessing_num_workers": workers[-1]}
        secs, data = run(values, tokenizer, template)  # fills the cache
        print(f"{'first run, cache written':<28}{secs:>10.2f}{args.rows / secs:>12.0f}  {data.fingerprint}")
        secs, data = run(values, tokenizer, template)
        assert data.cached, "the second run did not come from the cache"
        print(f"{'cached run':<28}{secs:>10.2f}{args.rows / secs:>12.0f}  {data.fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
