"""RELIABILITY 30: skipped steps are flagged and counted, and a run of them stops training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hone.training.guard import NonFiniteGuard


def test_nan_steps_stop_after_the_limit_and_a_good_step_resets():
    g = NonFiniteGuard(limit=2)
    assert g.observe(loss=float("nan"), grad_norm=1.0, fp16=False, scaler_skipped=False, loss_scale=None)
    assert not g.stop
    assert not g.observe(loss=1.0, grad_norm=1.0, fp16=False, scaler_skipped=False, loss_scale=None)
    for _ in range(2):
        g.observe(loss=1.0, grad_norm=float("inf"), fp16=False, scaler_skipped=False, loss_scale=None)
    assert g.stop and g.in_a_row == 2


def test_fp16_overflow_skips_count_once_the_scale_is_spent():
    g = NonFiniteGuard(limit=1)
    # the scaler backing off from 2**16: skipped and flagged, not a reason to stop
    for k in range(1, 17):
        assert g.observe(loss=1.0, grad_norm=float("inf"), fp16=True, scaler_skipped=True, loss_scale=2.0 ** (16 - k))
    assert not g.stop
    assert g.observe(loss=1.0, grad_norm=float("inf"), fp16=True, scaler_skipped=True, loss_scale=0.5)
    assert g.stop and "overflows" in g.last_reason
    # a skip with no scale to judge by (DeepSpeed's own scaler) counts at once
    h = NonFiniteGuard(limit=1)
    h.observe(loss=1.0, grad_norm=None, fp16=True, scaler_skipped=True, loss_scale=None)
    assert h.stop


def test_a_storm_of_skipped_steps_stops_the_run_and_each_is_flagged(tiny_cfg, monkeypatch):
    """Overflow injected where the loop reads it: accelerate reports every optimizer step as skipped."""
    import accelerate

    import hone
    from hone.errors import TrainingError

    monkeypatch.setattr(accelerate.Accelerator, "optimizer_step_was_skipped", property(lambda self: True))
    with pytest.raises(TrainingError, match=r"overflows at step 3 .* for 3 step\(s\) in a row"):
        hone.train({**tiny_cfg, "max_steps": 10, "max_nonfinite_steps": 3, "warmup_steps": 0,
                    "lr_scheduler_type": "linear"})
    recs = [json.loads(x) for x in (Path(tiny_cfg["output_dir"]) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3] and all(r.get("skipped") for r in train)
    assert len({r["lr"] for r in train}) == 1  # the schedule did not advance on a skipped step


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_the_real_loss_scaler_on_overflowing_gradients_stops_after_the_scale_is_spent(device):
    """torch's GradScaler on forced infinite gradients: 16 back-offs to scale 1, then the limit applies, and the
    weights never move (on CUDA with fp16 autocast; on CPU the same scaler with bf16 autocast)."""
    model = torch.nn.Linear(8, 1).to(device)
    model.weight.register_hook(lambda grad: grad * float("inf"))  # a finite loss whose gradient overflows
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(device)
    before = model.weight.detach().clone()
    g, calls = NonFiniteGuard(limit=2), 0
    while not g.stop and calls < 40:
        with torch.autocast(device, dtype=torch.float16 if device == "cuda" else torch.bfloat16):
            loss = model(torch.ones(4, 8, device=device)).float().mean()
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        calls += 1
        g.observe(loss=float(loss.detach()), grad_norm=float("inf"), fp16=True,
                  scaler_skipped=scaler.get_scale() < scale, loss_scale=scaler.get_scale())
    assert g.stop and calls == 18  # scale 2**16 halved 17 times is 0.5 (< 1): the first counted skip, then one more
    assert torch.equal(model.weight.detach(), before)
