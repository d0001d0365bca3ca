"""Training killed with SIGKILL and resumed (`auto`) gives the same per-step losses, rows and final weights as an
uninterrupted run: weights, optimizer, schedule, RNG (dropout is on) and data position all come back."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from safetensors.torch import load_file

import hone
from hone.training import checkpoint as ckpt


def _train_records(run_dir):
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == "train"]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_cfg, identity_file, tmp_path):
    # 10 rows, 4 per step: 3 steps per epoch with a short last one, so the run crosses epoch boundaries
    cfg = {**tiny_cfg, "dataset": [f"{identity_file}#10"], "max_steps": 30, "save_steps": 3, "eval_steps": 1000,
           "lora_dropout": 0.1, "gradient_accumulation_steps": 2, "warmup_steps": 2, "save_total_limit": 2}
    killed_dir = tmp_path / "killed"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**cfg, "output_dir": str(killed_dir)}))
    proc = subprocess.Popen([sys.executable, "-m", "hone", "train", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while not ckpt.list_checkpoints(killed_dir):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    at = ckpt.list_checkpoints(killed_dir)[-1].step
    assert at < 30, "the run finished before it could be killed"

    resumed = hone.train({**cfg, "output_dir": str(killed_dir), "resume_from_checkpoint": "auto"})
    straight = hone.train({**cfg, "output_dir": str(tmp_path / "straight")})

    a, b = _train_records(resumed.run_dir), _train_records(straight.run_dir)
    assert [r["step"] for r in a] == list(range(1, 31))  # records the killed run wrote past its checkpoint are gone
    assert [r["rows"] for r in a] == [r["rows"] for r in b]  # nothing seen twice, nothing skipped
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-4)
    assert [r["lr"] for r in a] == pytest.approx([r["lr"] for r in b], rel=1e-9)
    assert resumed.train_losses == pytest.approx(straight.train_losses, abs=1e-4)
    wa = load_file(resumed.run_dir / "adapter_model.safetensors")
    wb = load_file(straight.run_dir / "adapter_model.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
