"""Serving benchmark: N concurrent streaming clients against `hone serve` on loopback, beside the same load one
request at a time.

    python3 bench/serve/bench_serve.py                       # default model, 1, 8 and 32 clients
    python3 bench/serve/bench_serve.py --clients 1 8 --requests 2 --max-tokens 32 --baseline 4
    python3 bench/serve/bench_serve.py --url http://127.0.0.1:8000 --model NAME   # a server already running

See bench/serve/README.md for how to read the output.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = Path.home() / ".cache" / "hone" / "models" / "smollm2-135m"
PROMPTS = ["Give three tips for staying healthy.", "What is the capital of France?", "Describe a sunset in two "
           "sentences.", "Explain what a binary search does.", "Name a few uses of vinegar at home.",
           "Write a haiku about autumn.", "Why is the sky blue?", "How do I boil an egg?"]


@dataclass
class Result:
    ok: int = 0
    failed: int = 0
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def one(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int, res: Result) -> None:
    """One streaming chat request; time to the first text, whole latency, generated tokens from the usage chunk."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, tokens, done = None, None, False
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                ev = json.loads(line[6:])
                if "error" in ev:
                    raise RuntimeError(ev["error"]["message"])
                if ev.get("usage"):
                    tokens = ev["usage"]["completion_tokens"]
                if first is None and any(c["delta"].get("content") for c in ev["choices"]):
                    first = time.perf_counter() - t0
        if not done or tokens is None:
            raise RuntimeError("stream ended without usage and [DONE]")
    except (httpx.HTTPError, RuntimeError, ValueError) as e:
        res.failed += 1
        res.errors.append(str(e)[:200])
        return
    res.ok += 1
    res.tokens += tokens
    res.latency.append(time.perf_counter() - t0)
    res.ttft.append(first if first is not None else time.perf_counter() - t0)


async def load(url: str, model: str, clients: int, requests: int, max_tokens: int, sequential: bool,
               timeout: float) -> tuple[Result, float]:
    """``clients`` x ``requests`` requests: all clients at once, or every request one after another."""
    res = Result()
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter()
        if sequential:
            for i in range(clients * requests):
                await one(client, url, model, PROMPTS[i % len(PROMPTS)], max_tokens, res)
        else:
            async def worker(c: int) -> None:
                for k in range(requests):
                    await one(client, url, model, PROMPTS[(c * requests + k) % len(PROMPTS)], max_tokens, res)

            await asyncio.gather(*(worker(c) for c in range(clients)))
        return res, time.perf_counter() - t0


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs) + 0.5) - 1))]


def row(label: str, res: Result, wall: float) -> str:
    return (f"{label:<22} {res.ok:>4} {res.failed:>6} {res.ok / wall:>7.2f} {res.tokens / wall:>9.1f} "
            f"{statistics.median(res.ttft) if res.ttft else float('nan'):>8.2f} "
            f"{pct(res.latency, 50):>8.2f} {pct(res.latency, 99):>8.2f} {wall:>8.1f}")


def start_server(model: str, port: int) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "hone", "serve", "--model", model, "--port", str(port),
                             "--max-queue", "256"], stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", default=str(DEFAULT_MODEL), help="model to serve (when --url is not given)")
    ap.add_argument("--url", help="a running server instead of starting one")
    ap.add_argument("--model", help="model name to request (default: the server's first)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=2, help="requests per client (bounded)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=600, help="seconds one request may take")
    ap.add_argument("--baseline", type=int, default=8,
                    help="requests served one at a time for the baseline (0: skip it); its tok/s does not depend on "
                    "how many there are, so one baseline serves every client count")
    args = ap.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args.model_path, 0)
    try:
        model = args.model or httpx.get(url + "/v1/models", timeout=30).json()["data"][0]["id"]
        asyncio.run(load(url, model, 1, 1, 8, True, args.timeout))  # warm-up, not counted
        print(f"model {Path(model).name}, {args.requests} request(s) per client, max_tokens {args.max_tokens}, "
              f"temperature 0, {os.cpu_count()} cores")
        print(f"{'load':<22} {'ok':>4} {'failed':>6} {'req/s':>7} {'tok/s':>9} {'ttft p50':>8} {'lat p50':>8} "
              f"{'lat p99':>8} {'wall s':>8}  tok/s vs one at a time")
        base_tps = None
        if args.baseline:
            seq, swall = asyncio.run(load(url, model, args.baseline, 1, args.max_tokens, True, args.timeout))
            print(row(f"{args.baseline} one at a time", seq, swall), flush=True)
            base_tps = seq.tokens / swall
        for n in args.clients:
            res, wall = asyncio.run(load(url, model, n, args.requests, args.max_tokens, False, args.timeout))
            print(row(f"{n} concurrent", res, wall)
                  + (f"  {res.tokens / wall / base_tps:.2f}x" if base_tps else ""), flush=True)
            for e in sorted(set(res.errors))[:3]:
                print(f"  error: {e}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=120)


if __name__ == "__main__":
    main()
