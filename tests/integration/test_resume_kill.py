"""Training killed with SIGKILL in the middle of an epoch and resumed (`auto`) gives the same per-step losses, the
same rows fed to the model and the same final weights as an uninterrupted run: weights, optimizer, schedule, RNG
(dropout is on) and data position all come back. The rows are compared as the model received them (the `fed`
trace of metrics.jsonl), not as the batch plan chose them."""
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
from hone.training import checkpoint as ckpt, trace


def _train_records(run_dir):
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == "train"]


def _kill_at_first_checkpoint(cfg, run_dir, tmp_path) -> int:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**cfg, "output_dir": str(run_dir)}))
    proc = subprocess.Popen([sys.executable, "-m", "hone", "train", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 180
        while not ckpt.list_checkpoints(run_dir):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return ckpt.list_checkpoints(run_dir)[-1].step


SCENARIOS = {
    # 10 rows, 4 per step: 3 steps per epoch with a short last one (an empty micro-batch), dropout on
    "accumulation": {"max_steps": 12, "dataset_rows": 10, "gradient_accumulation_steps": 2, "lora_dropout": 0.1},
    # packed rows, and a validation split evaluated every 2 steps (eval must not disturb the data or RNG stream)
    "packing_and_validation": {"max_steps": 12, "dataset_rows": 13, "gradient_accumulation_steps": 2,
                               "packing": True, "val_size": 0.25, "eval_steps": 2, "lora_dropout": 0.1},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", SCENARIOS)
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(name, tiny_cfg, identity_file, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv(trace.ENV, "1")
    s = dict(SCENARIOS[name])
    rows = s.pop("dataset_rows")
    cfg = {**tiny_cfg, **s, "dataset": [f"{identity_file}#{rows}"], "save_steps": 2, "warmup_steps": 2,
           "save_total_limit": 2, "eval_steps": s.get("eval_steps", 1000)}
    killed_dir = tmp_path / "killed"
    at = _kill_at_first_checkpoint(cfg, killed_dir, tmp_path)
    assert at < cfg["max_steps"], "the run finished before it could be killed"
    assert at % 3 != 0, f"checkpoint {at} is on an epoch boundary; this test is about the middle of one"

    resumed = hone.train({**cfg, "output_dir": str(killed_dir), "resume_from_checkpoint": "auto"})
    straight = hone.train({**cfg, "output_dir": str(tmp_path / "straight")})

    a, b = _train_records(resumed.run_dir), _train_records(straight.run_dir)
    assert [r["step"] for r in a] == list(range(1, 13))  # records the killed run wrote past its checkpoint are gone
    assert all(r["fed"] for r in b)
    assert [r["fed"] for r in a] == [r["fed"] for r in b]  # the same rows reached the model, in the same order
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-6)
    assert [r["lr"] for r in a] == pytest.approx([r["lr"] for r in b], rel=1e-9)
    assert resumed.eval_loss == straight.eval_loss or resumed.eval_loss == pytest.approx(straight.eval_loss, abs=1e-6)
    wa = load_file(resumed.run_dir / "adapter_model.safetensors")
    wb = load_file(straight.run_dir / "adapter_model.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-6
