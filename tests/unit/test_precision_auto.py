"""`dtype: auto` on a CPU: bf16 autocast for training only where this CPU's bf16 matmuls measure clearly faster."""
from __future__ import annotations

import pytest
import torch

from hone.errors import ModelError
from hone.models import load


@pytest.mark.parametrize("speedup, want", [("3.2", torch.bfloat16), ("1.1", torch.float32)])
def test_auto_trains_in_bf16_only_where_measured_faster(monkeypatch, speedup, want):
    monkeypatch.setenv("HONE_BF16_SPEEDUP", speedup)
    p = load.choose_precision("auto", "cpu", train=True)
    assert p.compute == p.weights == want
    assert p.mixed == ("bf16" if want == torch.bfloat16 else "no")
    assert f"set by HONE_BF16_SPEEDUP {float(speedup):.2f}x fp32" in p.reason  # the run's first lines say why
    assert load.choose_precision("auto", "cpu").compute == torch.float32  # inference stays fp32


def test_several_cpu_processes_agree_on_fp32(monkeypatch):
    monkeypatch.setenv("HONE_BF16_SPEEDUP", "9")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert load.choose_precision("auto", "cpu", train=True).compute == torch.float32


def test_the_measurement_is_a_real_timing(monkeypatch):
    monkeypatch.delenv("HONE_BF16_SPEEDUP", raising=False)
    ratio = load.bf16_matmul_speedup()
    assert 0.01 < ratio < 100
    assert "measured" in load.choose_precision("auto", "cpu", train=True).reason


def test_a_bad_override_is_named(monkeypatch):
    monkeypatch.setenv("HONE_BF16_SPEEDUP", "fast")
    with pytest.raises(ModelError, match="HONE_BF16_SPEEDUP must be a number"):
        load.bf16_matmul_speedup()
