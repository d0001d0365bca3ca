"""The training command end to end on a tiny random model (seconds)."""
from __future__ import annotations

import json

import pytest

import hone


def test_train_writes_adapter_config_metrics_and_checkpoints(tiny_cfg, tmp_path):
    result = hone.train(tiny_cfg)
    run = result.run_dir
    assert result.global_step == 4
    assert (run / "adapter_model.safetensors").is_file()
    assert (run / "hone_config.yaml").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 for r in records if r["kind"] == "train")
    assert (run / "checkpoint-4" / "COMPLETE").is_file()


def test_one_process_trains_runs_of_different_precision_in_turn(tiny_cfg, tmp_path):
    """accelerate keeps a process's first mixed-precision setting; each hone.train starts from a clean state."""
    import hone

    keys = {**tiny_cfg, "max_steps": 1, "save_strategy": "no"}
    a = hone.train({**keys, "dtype": "fp32", "output_dir": str(tmp_path / "a")})
    b = hone.train({**keys, "dtype": "bf16", "output_dir": str(tmp_path / "b")})
    c = hone.train({**keys, "dtype": "fp32", "output_dir": str(tmp_path / "c")})
    assert a.train_losses == c.train_losses and b.train_losses[0] == pytest.approx(a.train_losses[0], rel=0.05)
