"""Tiny random models of every family hone's loss covers, each set so that its own forward's extras bite.

Logit softcaps are low and weights large (so the cap changes the loss), logit scales are far from 1, and MoE
models return their router logits with a large auxiliary-loss coefficient. Vocab 49152 matches the SmolLM2
tokenizer in tests/fixtures, so a saved directory trains with it.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

TOKENIZER_DIR = Path(__file__).parent / "fixtures" / "smollm2-tokenizer"
VOCAB = 49152
_COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=2,
               tie_word_embeddings=True)
_MOE = dict(output_router_logits=True, router_aux_loss_coef=0.7, num_experts_per_tok=2)
_SOFTCAP = dict(head_dim=16, final_logit_softcapping=1.5, query_pre_attn_scalar=16, initializer_range=0.5)

# model_type -> the config keys that make its tiny model (on top of _COMMON)
TINY: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {},
    "qwen3": {"head_dim": 16},
    "phi3": {"pad_token_id": 2},
    "gemma": {"head_dim": 16},
    "gemma2": {**_SOFTCAP, "attn_logit_softcapping": 50.0, "sliding_window": 8},
    "gemma3_text": {**_SOFTCAP, "sliding_window": 8},
    "cohere": {"logit_scale": 6.0, "initializer_range": 0.2},
    "granite": {"logits_scaling": 0.25, "initializer_range": 0.2},
    "mixtral": {**_MOE, "num_local_experts": 4},
    "qwen2_moe": {**_MOE, "num_experts": 4, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48,
                  "decoder_sparse_step": 1},
    "qwen3_moe": {**_MOE, "num_experts": 4, "moe_intermediate_size": 32, "head_dim": 16, "decoder_sparse_step": 1},
    "granitemoe": {**_MOE, "num_local_experts": 4, "logits_scaling": 0.25, "initializer_range": 0.2},
}


def tiny_model(model_type: str, seed: int = 0, **overrides: Any) -> Any:
    """A random fp32 model of ``model_type`` in eval mode (no dropout), built from a config alone."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(model_type, **{**_COMMON, **TINY.get(model_type, {}), **overrides})
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


def save_tiny(model_type: str, path: Path, **overrides: Any) -> Path:
    """``tiny_model`` saved as a model directory with the SmolLM2 tokenizer and chat template."""
    tiny_model(model_type, **overrides).save_pretrained(path)
    for f in TOKENIZER_DIR.iterdir():
        shutil.copy(f, path / f.name)
    return path
