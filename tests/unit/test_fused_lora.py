"""LoRA layers fused into one function on a CPU compute what peft's own forward computes, and every call the
function does not cover runs peft's forward."""
from __future__ import annotations

import pytest
import torch
from families import tiny_model
from peft import LoraConfig, get_peft_model

from hone.data.collate import pack_batch
from hone.data.encode import IGNORE_INDEX, Encoded
from hone.models import fused_lora
from hone.models.adapters import _enable_checkpointing
from hone.training.loss import CausalLMLoss

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _batch(lengths=(11, 19, 7)) -> dict:
    g = torch.Generator().manual_seed(3)
    rows = []
    for n in lengths:
        ids = torch.randint(3, 4000, (n,), generator=g).tolist()
        rows.append(Encoded(ids, [IGNORE_INDEX] * 2 + ids[2:]))
    return pack_batch(rows)


def _lora(model_type="llama", seed=0, **lora) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = {"r": 4, "lora_alpha": 12, "target_modules": TARGETS, "init_lora_weights": False, **lora}
    return get_peft_model(tiny_model(model_type, seed=seed), LoraConfig(**config))


def _loss_and_grads(model, batch, autocast=False):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss, n = CausalLMLoss(model)(**batch)
    (loss / n).backward()
    grads = {k: p.grad.detach().float().clone() for k, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach() / n), grads


@pytest.fixture
def counted(monkeypatch):
    """How many layer calls the fused function computed."""
    calls = {"fused": 0}
    real = fused_lora._LoraLinear

    class Spy:
        @staticmethod
        def apply(*args):
            calls["fused"] += 1
            return real.apply(*args)

    monkeypatch.setattr(fused_lora, "_LoraLinear", Spy)
    return calls


@pytest.mark.parametrize("model_type,bias", [("llama", "none"), ("qwen2", "none"), ("qwen2", "all")])
def test_fused_layers_match_peft_in_fp32(model_type, bias, counted):
    """qwen2's q/k/v carry biases; with bias "all" they train, so the fused backward returns their gradient."""
    batch = _batch()
    want_loss, want = _loss_and_grads(_lora(model_type, bias=bias), batch)
    model = _lora(model_type, bias=bias)
    assert fused_lora.fuse_lora(model) == 7 * model.config.num_hidden_layers
    got_loss, got = _loss_and_grads(model, batch)
    assert counted["fused"] == 7 * model.config.num_hidden_layers
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    assert got.keys() == want.keys() and any("bias" in k for k in got) == (bias == "all")
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)


def test_under_bf16_autocast_fused_layers_are_as_close_to_fp32_as_peft():
    """Under autocast peft rounds the adapter term to bf16 three times and the fused function once: measured
    against the fp32 result, the fused error is no larger than peft's own."""
    batch = _batch()
    ref_loss, ref = _loss_and_grads(_lora(), batch)
    peft_loss, peft = _loss_and_grads(_lora(), batch, autocast=True)
    model = _lora()
    fused_lora.fuse_lora(model)
    got_loss, got = _loss_and_grads(model, batch, autocast=True)

    def err(grads):
        return sum(float((grads[k] - ref[k]).norm()) for k in ref) / sum(float(ref[k].norm()) for k in ref)

    assert abs(got_loss - ref_loss) <= abs(peft_loss - ref_loss) * 1.5 + 1e-3
    assert err(got) <= err(peft) * 1.5
    assert err(got) < 0.05  # and both are bf16-close at all


def test_dropout_draws_peft_mask_and_matches_peft(counted):
    """With dropout in training the fused layers call peft's own dropout module: from the same seed, the same
    masks, so the same loss and gradients."""
    batch = _batch()
    want_model, model = _lora(lora_dropout=0.3), _lora(lora_dropout=0.3)
    fused_lora.fuse_lora(model)
    results = []
    for m in (want_model, model):
        m.train()
        torch.manual_seed(7)
        results.append(_loss_and_grads(m, batch))
    assert counted["fused"] == 7 * model.config.num_hidden_layers
    (want_loss, want), (got_loss, got) = results
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    torch.manual_seed(8)
    other, _ = _loss_and_grads(model, batch)
    assert other != got_loss  # the masks are drawn, not skipped


def test_calls_it_does_not_cover_run_peft_unchanged(counted):
    batch = _batch()
    model = _lora()
    fused_lora.fuse_lora(model)
    counted["fused"] = 0
    base = tiny_model("llama")
    with torch.no_grad(), model.disable_adapter():
        off, _ = CausalLMLoss(model)(**batch)
        plain, _ = CausalLMLoss(base)(**batch)
    assert counted["fused"] == 0 and float(off) == pytest.approx(float(plain), rel=1e-6)

    dora = _lora(use_dora=True)
    fused_lora.fuse_lora(dora)
    CausalLMLoss(dora)(**batch)
    assert counted["fused"] == 0

    hooked = _lora()
    fused_lora.fuse_lora(hooked)
    layer = hooked.base_model.model.model.layers[0].self_attn.q_proj
    layer.base_layer.register_forward_pre_hook(lambda *a: None)  # as DeepSpeed ZeRO-3 gathers weights
    CausalLMLoss(hooked)(**batch)
    assert counted["fused"] == 7 * hooked.config.num_hidden_layers - 1


def test_merged_and_unfused_layers_give_peft_results(counted):
    batch = _batch()
    model = _lora()
    with torch.no_grad():
        want, _ = CausalLMLoss(model)(**batch)
    fused_lora.fuse_lora(model)
    model.merge_adapter()
    with torch.no_grad():
        merged, _ = CausalLMLoss(model)(**batch)
    assert counted["fused"] == 0 and float(merged) == pytest.approx(float(want), rel=1e-5)
    model.unmerge_adapter()
    assert fused_lora.unfuse_lora(model) == 7 * model.config.num_hidden_layers
    with torch.no_grad():
        again, _ = CausalLMLoss(model)(**batch)
    assert counted["fused"] == 0 and float(again) == pytest.approx(float(want), rel=1e-6)  # unmerge rounds
    assert "forward" not in vars(model.base_model.model.model.layers[0].self_attn.q_proj)


def test_fused_layers_under_activation_checkpointing_match_peft():
    batch = _batch()
    want_loss, want = _loss_and_grads(_lora(), batch)
    model = _lora()
    fused_lora.fuse_lora(model)
    _enable_checkpointing(model)
    model.train()
    got_loss, got = _loss_and_grads(model, batch)
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)


def test_saved_adapter_is_the_same_with_fused_layers(tmp_path):
    model = _lora()
    keys = set(model.state_dict())
    fused_lora.fuse_lora(model)
    assert set(model.state_dict()) == keys
    model.save_pretrained(tmp_path / "a")
    from safetensors.torch import load_file
    saved = load_file(tmp_path / "a" / "adapter_model.safetensors")
    assert saved and all("lora_" in k for k in saved)
