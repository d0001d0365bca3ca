"""Each tuning method builds the model it says: which weights train, how LoRA is configured, and the guards."""
from __future__ import annotations

import pytest
import torch

from hone.config import load_config
from hone.errors import ConfigError, ModelError
from hone.models.adapters import add_neftune, lora_targets, make_trainable
from hone.models.load import choose_precision, load_model
from hone.models.registry import DEFAULT_LORA_TARGETS


@pytest.fixture
def build(tiny_model_dir):
    def make(**keys):
        cfg = load_config({"model": str(tiny_model_dir), **keys})
        base = load_model(tiny_model_dir, cfg.model, choose_precision("fp32"))
        return make_trainable(base, cfg), cfg
    return make


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _lora_leaves(model):
    return {n.split(".lora_A")[0].split(".")[-1] for n in _trainable(model) if "lora_A" in n}


def test_lora_targets_default_all_list_regex(build, tiny_model_dir):
    model, _ = build(lora_target=["DEFAULT"])
    assert _lora_leaves(model) == set(DEFAULT_LORA_TARGETS["llama"])  # the family's usual set
    model, _ = build(lora_target=["ALL"])
    assert _lora_leaves(model) == \
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    model, _ = build(lora_target=["q_proj", "v_proj"])
    assert _lora_leaves(model) == {"q_proj", "v_proj"}
    model, _ = build(lora_target=[r".*\.1\.mlp\.down_proj"])
    assert {n.split(".lora_A")[0] for n in _trainable(model) if "lora_A" in n} == \
        {"base_model.model.model.layers.1.mlp.down_proj"}
    with pytest.raises(ConfigError, match="no module named qq_proj.*linear layers are"):
        build(lora_target=["qq_proj"])
    assert all("lora_" in n for n in _trainable(build()[0]))  # base weights stay frozen


def test_lora_rank_alpha_dropout_rslora_dora(build):
    model, _ = build(lora_rank=4, lora_alpha=16, lora_dropout=0.2, lora_target=["q_proj"])
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.r["default"] == 4 and layer.scaling["default"] == 16 / 4
    assert layer.lora_dropout["default"].p == 0.2
    rs, _ = build(lora_rank=4, lora_alpha=16, use_rslora=True, lora_target=["q_proj"])
    assert rs.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"] == pytest.approx(16 / 2)
    dora, _ = build(use_dora=True, lora_target=["q_proj"])
    assert any("lora_magnitude_vector" in n for n in _trainable(dora))


def test_modules_to_save_train_in_full(build):
    model, _ = build(modules_to_save=["lm_head"], lora_target=["q_proj"])
    assert any(n.startswith("base_model.model.lm_head.modules_to_save") for n in _trainable(model))


def test_start_from_an_existing_adapter(build, tmp_path):
    first, _ = build(lora_target=["q_proj"])
    with torch.no_grad():
        for n, p in first.named_parameters():
            if "lora_B" in n:
                p.fill_(0.5)
    first.save_pretrained(tmp_path / "adapter")
    second, _ = build(adapter=str(tmp_path / "adapter"))
    b = [p for n, p in second.named_parameters() if "lora_B" in n]
    assert b and all(torch.all(p == 0.5) and p.requires_grad for p in b)
    with pytest.raises(ModelError, match="not a LoRA adapter directory"):
        build(adapter=str(tmp_path))


def test_full_and_freeze(build):
    full, _ = build(tuning="full")
    assert all(p.requires_grad for p in full.parameters())
    last, _ = build(tuning="freeze", freeze_trainable_layers=1)
    assert _trainable(last) and all(".layers.1." in n for n in _trainable(last))
    first, _ = build(tuning="freeze", freeze_trainable_layers=-1)
    assert all(".layers.0." in n for n in _trainable(first))
    ratio, _ = build(tuning="full", freeze_parameters=0.5)  # ms-swift: the bottom half frozen
    assert _trainable(ratio) and all(".layers.1." in n for n in _trainable(ratio))
    extra, _ = build(tuning="freeze", freeze_trainable_layers=1, freeze_trainable_modules=["model.norm"])
    assert "model.norm.weight" in _trainable(extra)
    with pytest.raises(ConfigError, match="nothing to train"):
        build(tuning="freeze", freeze_trainable_layers=0)


def test_gradient_checkpointing_is_switched_on(build):
    model, _ = build(gradient_checkpointing=True)
    assert model.base_model.model.model.gradient_checkpointing
    assert not build()[0].base_model.model.model.gradient_checkpointing


def test_neftune_noise_only_while_training(build):
    model, _ = build()
    ids = torch.tensor([[1, 2, 3, 4]])
    emb = model.get_input_embeddings()
    clean = emb(ids)
    handle = add_neftune(model, 5.0)
    model.train()
    assert not torch.equal(emb(ids), clean)
    model.eval()
    assert torch.equal(emb(ids), clean)
    handle.remove()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU guard")
def test_qlora_and_flash_attention_need_cuda_and_say_what_to_use(tiny_model_dir):
    cfg = load_config({"model": str(tiny_model_dir), "tuning": "qlora"})
    with pytest.raises(ModelError, match=r"QLoRA .* needs a CUDA GPU.*use tuning: lora"):
        load_model(tiny_model_dir, cfg.model, choose_precision("auto"), quant_bits=4)
    cfg = load_config({"model": str(tiny_model_dir), "use_flash_attn": True})
    assert cfg.model.attn_impl == "flash_attention_2"
    with pytest.raises(ModelError, match="flash_attention_2 needs a CUDA GPU.*attn_impl: sdpa"):
        load_model(tiny_model_dir, cfg.model, choose_precision("auto"))
    assert choose_precision("auto").compute == torch.float32  # dtype auto on CPU


@pytest.mark.gpu
@pytest.mark.parametrize("bits, quant_type", [(4, "nf4"), (4, "fp4"), (8, "nf4")])
def test_qlora_builds_a_quantized_trainable_model(tiny_model_dir, bits, quant_type):
    cfg = load_config({"model": str(tiny_model_dir), "tuning": "qlora", "quantization_bit": bits,
                       "quant_type": quant_type, "double_quant": True, "quant_compute_dtype": "bf16"})
    base = load_model(tiny_model_dir, cfg.model, choose_precision("auto"), quant_bits=bits)
    model = make_trainable(base, cfg)
    kinds = {type(m).__name__ for m in model.modules()}
    assert ("Linear4bit" if bits == 4 else "Linear8bitLt") in kinds
    assert all("lora_" in n for n in _trainable(model))


def test_lora_targets_resolution_without_peft(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert "lm_head" not in lora_targets(model, ("ALL",))
    assert lora_targets(model, ("AUTO",)) == lora_targets(model, ("DEFAULT",))


def test_bf16_on_cpu_holds_frozen_weights_in_bf16_and_trains_fp32(tiny_model_dir):
    """What the `dtype` help says: bf16 frozen weights, fp32 trainable ones, a loss close to the fp32 model's."""
    cfg = load_config({"model": str(tiny_model_dir), "dtype": "bf16", "lora_target": "ALL"})
    precision = choose_precision(cfg.model.dtype, "cpu")
    assert (precision.weights, precision.compute, precision.mixed) == (torch.bfloat16, torch.bfloat16, "bf16")
    model = make_trainable(load_model(tiny_model_dir, cfg.model, precision), cfg)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trained == {torch.float32}
    reference = load_model(tiny_model_dir, cfg.model, choose_precision("fp32", "cpu"))
    ids = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = reference(input_ids=ids, labels=ids).loss  # LoRA starts as the identity: same loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(input_ids=ids, labels=ids).loss
    assert abs(got.item() - want.item()) < 0.02 * want.item()


def test_lora_under_autocast_without_the_input_round_trip_computes_the_same(tiny_model_dir):
    """peft's fp32 cast of a bf16 input, undone by autocast at once, changes nothing when skipped."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hone.models.adapters import keep_input_dtype

    def run(skip: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0,
                                                 init_lora_weights=False))
        if skip:
            assert keep_input_dtype(model) > 0
        ids = torch.arange(5, 37).view(2, 16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}

    plain, plain_grads = run(False)
    fast, fast_grads = run(True)
    assert torch.equal(plain, fast)
    for k in plain_grads:
        assert torch.equal(plain_grads[k], fast_grads[k]), k
