"""Packed rows attending one row at a time on a CPU: the same attention as transformers' masked sdpa, taken
only where it is the same, and transformers' own function everywhere else."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
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


def _qkv(lengths, heads=6, kv=2, dim=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, h, sum(lengths), dim, generator=g).to(dtype).requires_grad_() for h in (heads, kv, kv)]


def _per_row_reference(q, k, v, lengths, scale=None):
    """torch's causal sdpa one row at a time, in fp32: (1, T, H, D)."""
    outs = [F.scaled_dot_product_attention(a, b, c, is_causal=True, enable_gqa=True, scale=scale)
            for a, b, c in zip(*(t.float().split(lengths, dim=2) for t in (q, k, v)))]
    return torch.cat(outs, dim=2).transpose(1, 2)


@pytest.mark.parametrize("lengths", [[9, 23, 14], [1, 30], [17]])
def test_padded_eager_is_causal_attention_per_row(lengths):
    """Right padding under a causal mask: every real position attends as torch's sdpa has it, row by row, and
    the gradients reach only real positions (padding is never seen)."""
    q, k, v = _qkv(lengths)
    got = attention.padded_eager(q, k, v, lengths, scale=0.3)
    want = _per_row_reference(q, k, v, lengths, scale=0.3)
    assert torch.allclose(got, want, atol=1e-6)
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, (q, k, v), g)
    want_grads = torch.autograd.grad(want, (q, k, v), g)
    for a, b in zip(grads, want_grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_padded_eager_in_bf16_is_within_bf16_rounding():
    lengths = [40, 64, 33]
    q, k, v = _qkv(lengths, dtype=torch.bfloat16)
    got = attention.padded_eager(q, k, v, lengths).float()
    want = _per_row_reference(q, k, v, lengths)
    assert float((got - want).detach().norm() / want.detach().norm()) < 1e-2


@pytest.mark.parametrize("path", ["rows", "eager"])
def test_under_bf16_autocast_both_paths_match_the_masked_sdpa(path, monkeypatch):
    """The model's own masked sdpa under autocast is the oracle; which path runs is forced here, as the timing
    before training would choose it."""
    monkeypatch.setattr(attention, "_DTYPE", {})
    monkeypatch.setattr(attention, "_EAGER", set())
    monkeypatch.setattr(attention, "eager_is_faster", lambda *a: path == "eager")
    rows = _rows()
    want_model, got_model = tiny_model("qwen2"), tiny_model("qwen2")
    attention.use_row_attention(got_model, torch.bfloat16)
    assert bool(attention._EAGER) == (path == "eager")
    results = []
    for model in (want_model, got_model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, n = CausalLMLoss(model)(**pack_batch(rows))
        (loss / n).backward()
        results.append((float(loss.detach() / n), torch.cat([p.grad.flatten() for p in model.parameters()
                                                     if p.grad is not None])))
    (want, want_grad), (got, got_grad) = results
    assert got == pytest.approx(want, rel=2e-2)
    assert float((got_grad - want_grad).norm() / want_grad.norm()) < 0.05


def test_rows_longer_than_the_eager_limit_go_one_at_a_time(monkeypatch):
    calls = []
    real = attention.padded_eager
    monkeypatch.setattr(attention, "padded_eager", lambda *a, **kw: calls.append(a[3]) or real(*a, **kw))
    monkeypatch.setattr(attention, "_EAGER", {(6, 2, 16, torch.bfloat16)})
    module = torch.nn.Module()
    for lengths in ([30, 40], [30, attention.EAGER_MAX_ROW + 1]):
        q, k, v = _qkv(lengths, dtype=torch.bfloat16)
        pos = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
        out, _ = attention.rows_attention(module, q, k, v, None, position_ids=pos)
        assert out.shape == (1, sum(lengths), 6, 16) and out.dtype == torch.bfloat16
    assert calls == [[30, 40]]
    assert attention.eager_is_faster(6, 2, 16, torch.bfloat16, torch.float32) in (True, False)
    assert not attention.eager_is_faster(6, 2, 16, torch.float32, torch.float32)


def test_memory_estimate_counts_the_eager_scores(monkeypatch):
    from hone.training import memory

    model = tiny_model("llama")
    cfg = model.config
    key = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads,
           torch.bfloat16)
    monkeypatch.setattr(attention, "_EAGER", {key})
    width = attention.eager_width(cfg, torch.bfloat16, [100, 300, 120])
    assert width == 120 and attention.eager_width(cfg, torch.float32, [100]) == 0
    lengths = [120] * 4
    q, k, v = _qkv(lengths, heads=key[0], kv=key[1], dim=key[2], dtype=torch.bfloat16)
    sizes = []
    for fn in (lambda: attention.padded_eager(q, k, v, lengths),
               lambda: _per_row_reference(q.detach().requires_grad_(), k, v, lengths)):
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        sizes.append(sum(seen.values()))
    extra = (memory.activation_bytes_per_token(cfg, torch.bfloat16, False, width)
             - memory.activation_bytes_per_token(cfg, torch.bfloat16, False)) / cfg.num_hidden_layers
    measured = (sizes[0] - sizes[1]) / sum(lengths)
    assert 0.5 < extra / measured < 2, (extra, measured)
