"""The training command end to end on a tiny random model (seconds)."""
from __future__ import annotations

import json

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
