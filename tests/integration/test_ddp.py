"""Two processes (DDP over gloo on CPU) give the same per-step losses and weights as one process with the same
global batch, including a short final step where one process only has padding and an uneven validation split."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file

import hone


def _losses(run_dir):
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return ([r["loss"] for r in recs if r["kind"] == "train"], [r["rows"] for r in recs if r["kind"] == "train"],
            [r["eval_loss"] for r in recs if r["kind"] == "eval"])


@pytest.mark.slow
@pytest.mark.parametrize("split", [False, True], ids=["one-forward-per-micro-batch", "rows-split-into-forwards"])
def test_two_processes_match_one_process_with_the_same_global_batch(tiny_cfg, identity_file, tmp_path, split):
    base = {**tiny_cfg, "dataset": [f"{identity_file}#17"], "val_dataset": [f"{identity_file}#5"], "max_steps": -1,
            "num_train_epochs": 1, "batch_size": 1, "lora_dropout": 0.0, "eval_steps": 3, "save_steps": 100}
    # split: two rows per micro-batch, each its own forward; the short last step leaves one process fewer
    # forwards than the other, so it runs empty ones and the gradient synchronisation still pairs up
    ddp_accum, one_accum = (1, 2) if split else (2, 4)
    if split:
        base = {**base, "batch_size": 2, "max_forward_tokens": 16}
    ddp_cfg = {**base, "gradient_accumulation_steps": ddp_accum, "output_dir": str(tmp_path / "ddp")}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(ddp_cfg))
    proc = subprocess.run([sys.executable, "-m", "hone", "train", str(path), "--nproc_per_node", "2"],
                          capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = hone.train({**base, "gradient_accumulation_steps": one_accum, "output_dir": str(tmp_path / "one")})

    ddp_losses, ddp_rows, ddp_eval = _losses(tmp_path / "ddp")
    one_losses, one_rows, one_eval = _losses(one.run_dir)
    assert len(one_losses) == 5  # 17 rows, 4 per step: the last step holds one row
    assert ddp_rows == one_rows
    assert ddp_losses == pytest.approx(one_losses, abs=1e-5)
    assert ddp_eval == pytest.approx(one_eval, abs=1e-5)
    a = load_file(tmp_path / "ddp" / "adapter_model.safetensors")
    b = load_file(one.run_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k
