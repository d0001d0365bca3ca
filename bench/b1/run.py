"""Benchmark B1: LoRA fine-tuning of SmolLM2-135M-Instruct on 400 alpaca rows on 2 CPU threads, with hone and
(with --peers) LLaMA-Factory, transformers Trainer + peft, TRL and ms-swift, one after another.

    python bench/b1/run.py                      # hone only
    python bench/b1/run.py --peers              # all five tools (installs the peers' venvs on first use)
    python bench/b1/run.py --tools hone,trl --rows 100

See bench/b1/README.md for what each column means and how it is measured.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import data  # noqa: E402
import flops  # noqa: E402
import monitor  # noqa: E402
import table  # noqa: E402
import tools  # noqa: E402
import venvs  # noqa: E402

ALL_TOOLS = ("hone", "llamafactory", "hf", "trl", "swift")
DEFAULT_DATA = REPO.parent / "shared" / "data" / "alpaca_en_demo.json"


def hone_model_dir() -> Path:
    """hone's default model, as hone itself resolves it (from this checkout's src)."""
    code = ("from hone.config.keys import ModelCfg; from hone.models.load import resolve_model; "
            "print(resolve_model(ModelCfg().model))")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"could not resolve hone's default model:\n{out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def peer_model_dir(model: Path, work: Path) -> Path:
    """A copy of the model folder for the peers: files linked, config.json without `quantization_config`
    (LLaMA-Factory and ms-swift take a null one for a quantized model)."""
    dst = work / "model-peers"
    dst.mkdir(parents=True, exist_ok=True)
    for f in model.iterdir():
        link = dst / f.name
        if f.name == "config.json" or link.exists() or link.is_symlink():
            continue
        link.symlink_to(f.resolve())
    cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
    cfg.pop("quantization_config", None)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return dst


def eval_loss(model: Path, adapter: Path | None, eval_file: Path, threads: int) -> float | None:
    cmd = [sys.executable, str(HERE / "eval_loss.py"), "--model", str(model), "--data", str(eval_file),
           "--threads", str(threads)]
    if adapter is not None:
        cmd += ["--adapter", str(adapter)]
    out = subprocess.run(cmd, env=monitor.base_env(threads), capture_output=True, text=True)
    if out.returncode != 0:
        print(f"[b1] eval loss failed for {adapter or 'the base model'}:\n{out.stderr[-1500:]}", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["eval_loss"]


def hone_versions() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    code = ("import json, hone, importlib.metadata as m; "
            "print(json.dumps({'hone': hone.__version__, **{n: m.version(n) for n in "
            "('torch', 'transformers', 'peft', 'accelerate')}}))")
    out = json.loads(subprocess.check_output([sys.executable, "-c", code], env=env, text=True))
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    out["commit"] = commit.stdout.strip() or "-"
    return out


def run_tool(name: str, job: tools.Job, work: Path, inputs: dict[str, Path], models: dict[str, Path],
             venv_root: Path, threads: int, eval_file: Path) -> dict[str, Any]:
    out = work / "runs" / name
    out.mkdir(parents=True, exist_ok=True)
    env = monitor.base_env(threads)
    if name == "hone":
        python = sys.executable
        env["PYTHONPATH"] = str(REPO / "src")
        versions = hone_versions()
        cmd = tools.prepare_hone(job, out, inputs, python)
        reader = tools.read_hone
    else:
        try:
            py = venvs.ensure_venv(venv_root, name)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            print(f"[b1] {name}: could not install it: {e}", flush=True)
            return {"tool": f"{name} (install failed)", "versions": {}, "returncode": -1, "error": str(e)}
        python = str(py)
        versions = venvs.installed_versions(py, venvs.REPORTED[name])
        prepare = {"hf": tools.prepare_hf, "trl": tools.prepare_trl, "llamafactory": tools.prepare_llamafactory,
                   "swift": tools.prepare_swift}[name]
        cmd = prepare(job, out, inputs, python, models["peers"])
        reader = tools.read_llamafactory if name == "llamafactory" else \
            tools.read_swift if name == "swift" else tools.read_script
    print(f"[b1] {name}: {' '.join(cmd)}", flush=True)
    fin = monitor.run(cmd, env, out, out / "log.txt")
    row: dict[str, Any] = {"tool": name if fin.returncode == 0 else f"{name} (failed)", "versions": versions,
                           "returncode": fin.returncode, "wall_s": fin.wall_s,
                           "peak_rss_gib": fin.peak_rss_bytes / table.GIB,
                           "log": str(out / "log.txt")}
    if fin.returncode != 0:
        print(f"[b1] {name} failed (exit {fin.returncode}); its log: {out / 'log.txt'}", flush=True)
        for _, line in fin.lines[-15:]:
            print(f"    {line}", flush=True)
        return row
    o = reader(job, out, fin)
    row.update({"train_s": o.train_s, "train_s_source": o.train_s_source, "final_loss": o.final_loss,
                "adapter": str(o.adapter) if o.adapter else None, "estimate": o.estimate, "precision": o.precision})
    model = models["hone"] if name == "hone" else models["peers"]
    row["eval_loss"] = eval_loss(model, o.adapter, eval_file, threads) if o.adapter else None
    print(f"[b1] {name}: wall {fin.wall_s:.1f} s, train {o.train_s} s, peak RSS {row['peak_rss_gib']:.2f} GiB, "
          f"eval loss {row['eval_loss']}", flush=True)
    return row


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peers", action="store_true", help="run all five tools (default: hone only)")
    p.add_argument("--tools", default=None, help=f"comma-separated subset of {','.join(ALL_TOOLS)}")
    p.add_argument("--rows", type=int, default=400, help="train on the first N rows (default 400)")
    p.add_argument("--eval-rows", type=int, default=data.EVAL_ROWS,
                   help="held-out rows for the eval loss (default 50; fewer only for a quick check)")
    p.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "hone-bench",
                   help="runs, logs and results go here; the peers' venvs under WORKDIR/venvs")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="alpaca JSON (at least 450 rows)")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    names = args.tools.split(",") if args.tools else list(ALL_TOOLS if args.peers else ("hone",))
    bad = [n for n in names if n not in ALL_TOOLS]
    if bad:
        raise SystemExit(f"unknown tool(s) {bad}; choose from {','.join(ALL_TOOLS)}")
    job = tools.Job(rows=args.rows)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = args.workdir / "b1" / stamp
    work.mkdir(parents=True, exist_ok=True)
    venv_root = args.workdir / "venvs"

    from transformers import AutoTokenizer

    model = hone_model_dir()
    models = {"hone": model, "peers": peer_model_dir(model, work)}
    train_rows, eval_rows = data.split(data.load_rows(args.data), args.rows, args.eval_rows)
    inputs = data.write_inputs(work / "data", train_rows, eval_rows)
    counts = data.count(AutoTokenizer.from_pretrained(model), train_rows)
    shape = flops.shape(model, job.rank)
    total_flops = flops.epoch_flops(shape, counts.real_tokens, counts.supervised_tokens, counts.attn_sq)
    peaks = {d: flops.matmul_peak(d, args.threads) for d in ("fp32", "bf16")}
    print(f"[b1] {counts.rows} rows, {counts.real_tokens} real tokens ({counts.supervised_tokens} supervised, "
          f"{counts.cut_rows} rows cut at {data.MAX_LENGTH}), {job.steps} steps; model FLOPs {total_flops:.3e}; "
          f"matmul peak fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s", flush=True)
    base_eval = eval_loss(model, None, inputs["eval_alpaca"], args.threads)

    rows = []
    for name in names:  # one at a time: never two tools on the machine together
        row = run_tool(name, job, work, inputs, models, venv_root, args.threads, inputs["eval_alpaca"])
        row["real_tokens"] = counts.real_tokens
        for d in ("fp32", "bf16"):
            row[f"mfu_{d}"] = flops.mfu(total_flops, row.get("train_s"), peaks[d])
        rows.append(row)
    table.add_ratios(rows)

    result = {"job": {**job.__dict__, "steps": job.steps, "max_length": data.MAX_LENGTH, "threads": args.threads,
                      "eval_rows": len(eval_rows), "data": str(args.data), "model": str(model)},
              "tokens": counts.__dict__, "shape": shape.__dict__, "model_flops": total_flops,
              "matmul_peak_flops": peaks, "base_eval_loss": base_eval, "cpu": _cpu_name(), "tools": rows}
    (work / "results.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    print()
    print(f"B1: {counts.rows} rows ({counts.real_tokens} real tokens), {job.steps} steps, {args.threads} threads, "
          f"{_cpu_name()}; eval on {len(eval_rows)} held-out rows, base model eval loss "
          f"{table.cell(base_eval, '{:.4f}')}")
    print(table.render(rows))
    print()
    for r in rows:
        v = ", ".join(f"{k} {val}" for k, val in r.get("versions", {}).items())
        extra = f"; precision {r['precision']}" if r.get("precision") else ""
        print(f"  {r['tool']}: {v}; train time from {r.get('train_s_source', '-')}{extra}")
    print(f"\nresults: {work / 'results.json'}")
    return 0 if all(r.get("returncode") == 0 for r in rows) else 1


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
