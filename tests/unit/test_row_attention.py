"""Packed rows attending one row at a time on a CPU: the same attention as transformers' masked sdpa, taken
only where it is the same, and transformers' own function everywhere else."""
from __future__ import annotations

import json

import pytest
import torch
from families import tiny_model

from hone.data.collate import pack_batch, pad_batch
from hone.data.encode import IGNORE_INDEX, Encoded
from hone.models import attention
from hone.models.adapters import _enable_checkpointing
from hone.training.loss import CausalLMLoss


def _rows(lengths=(9, 23, 14)) -> list[Encoded]:
    g = torch.Generator().manual_seed(1)
    out = []
    for n in lengths:
        ids = torch.randint(3, 4000, (n,), generator=g).tolist()
        out.append(Encoded(ids, [IGNORE_INDEX] * 3 + ids[3:]))
    return out


@pytest.fixture
def counted(monkeypatch):
    """How many attention calls went which way."""
    calls = {"rows": 0, "sdpa": 0}
    real = attention._rows

    def spy(*args):
        lengths = real(*args)
        calls["rows" if lengths else "sdpa"] += 1
        return lengths

    monkeypatch.setattr(attention, "_rows", spy)
    return calls


def test_row_lengths_follow_position_id_resets():
    assert attention.row_lengths(torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])) == [3, 2, 4]
    assert attention.row_lengths(torch.tensor([[0, 1, 2, 3]])) == [4]
    assert attention.row_lengths(torch.tensor([[5, 6, 7]])) == [3]  # a row need not start at 0 to be one row
    assert attention.row_lengths(torch.tensor([[0, 1], [0, 1]])) is None  # a padded batch, not one sequence


def test_packed_rows_take_the_row_path_and_padded_batches_keep_sdpa(counted):
    model = tiny_model("llama")
    layers = model.config.num_hidden_layers
    assert attention.use_row_attention(model)
    module = CausalLMLoss(model)
    module(**pack_batch(_rows()))
    assert counted == {"rows": layers, "sdpa": 0}
    module(**pad_batch(_rows(), pad_id=2))  # several rows with padding: sdpa and transformers' mask
    assert counted == {"rows": layers, "sdpa": layers}


def test_a_sliding_window_shorter_than_a_row_keeps_the_mask(counted):
    model = tiny_model("mistral", sliding_window=10)
    attention.use_row_attention(model)
    with torch.no_grad():
        own = model(**pad_batch(_rows(), pad_id=2), use_cache=False).loss  # rows of 14 and 23 see 10 back
        packed, n = CausalLMLoss(model)(**pack_batch(_rows()))
    assert counted["rows"] == 0 and counted["sdpa"] > 0
    assert float(packed / n) == pytest.approx(float(own), rel=1e-5)


def test_models_not_on_sdpa_are_left_alone():
    model = tiny_model("llama", attn_implementation="eager")
    assert not attention.use_row_attention(model)
    assert model.config._attn_implementation == "eager"


def test_under_bf16_autocast_rows_match_the_masked_sdpa():
    rows = _rows()
    want_model, got_model = tiny_model("qwen2"), tiny_model("qwen2")
    attention.use_row_attention(got_model, torch.bfloat16)
    results = []
    for model in (want_model, got_model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, n = CausalLMLoss(model)(**pack_batch(rows))
        (loss / n).backward()
        results.append((float(loss.detach() / n), torch.cat([p.grad.flatten() for p in model.parameters()
                                                     if p.grad is not None])))
    (want, want_grad), (got, got_grad) = results
    assert got == pytest.approx(want, rel=2e-2)  # bf16 rounding, in different places
    assert float((got_grad - want_grad).norm() / want_grad.norm()) < 0.05
    assert attention.fastest_dtype(4, 2, 16, torch.bfloat16) in (torch.bfloat16, torch.float32)


@pytest.mark.parametrize("rows_dtype", [None, torch.bfloat16, torch.float32], ids=["timed", "bf16", "fp32"])
def test_activation_checkpointing_gives_the_same_gradients(rows_dtype, monkeypatch):
    """A checkpointed layer recomputes the row path's forward exactly: the same gradients as without."""
    monkeypatch.setattr(attention, "_DTYPE", {})
    if rows_dtype is not None:
        monkeypatch.setattr(attention, "fastest_dtype", lambda *a: rows_dtype)
    rows = _rows()
    grads = []
    for checkpointed in (True, False):  # the checkpointed model first: the first forward of the process
        model = tiny_model("llama")
        model.train()
        assert attention.use_row_attention(model, torch.bfloat16)
        if checkpointed:
            _enable_checkpointing(model)  # as training with gradient_checkpointing: true does
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, n = CausalLMLoss(model)(**pack_batch(rows))
        (loss / n).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1])


def test_a_full_fine_tune_saves_a_config_other_programs_load(tiny_cfg, tmp_path):
    import hone

    res = hone.train({**tiny_cfg, "tuning": "full", "max_steps": 1, "save_strategy": "no"})
    config = json.loads((res.run_dir / "config.json").read_text())
    assert attention.NAME not in json.dumps(config)


def test_checkpointed_bf16_training_runs(tiny_cfg, monkeypatch):
    """Anything the row path did only on its first call (timing the dtypes) would be saved by the checkpoint
    in the forward and missing in the recomputation; the timing happens before training instead."""
    import hone

    monkeypatch.setenv("HONE_BF16_SPEEDUP", "3")  # bf16 autocast, as on a CPU with fast bf16
    monkeypatch.setattr(attention, "_DTYPE", {})
    res = hone.train({**tiny_cfg, "gradient_checkpointing": True, "lora_dropout": 0.06, "max_steps": 2,
                      "save_strategy": "no"})
    assert len(res.train_losses) == 2
