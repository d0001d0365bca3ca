"""lora / qlora / dora / full / freeze → a trainable model. The only place the methods differ."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..config import RunCfg
from ..config.derive import method
from ..errors import ConfigError, ModelError
from .registry import DEFAULT_LORA_TARGETS

log = logging.getLogger("hone")

_LAYER = re.compile(r"\.layers\.(\d+)\.")
_REGEX_CHARS = set(r"^$*+?[]()|\\")


def linear_module_names(model: Any) -> list[str]:
    """Leaf names of every linear layer except the output head."""
    head = model.get_output_embeddings()
    names = set()
    for full, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) or type(mod).__name__ in ("Linear4bit", "Linear8bitLt"):
            if mod is head:
                continue
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def lora_targets(model: Any, targets: tuple[str, ...]) -> list[str] | str:
    """Resolve DEFAULT/AUTO, ALL, names or one regex to what peft's ``target_modules`` takes."""
    upper = [t.upper() for t in targets]
    if upper in (["DEFAULT"], ["AUTO"]):
        family = getattr(model.config, "model_type", "")
        found = DEFAULT_LORA_TARGETS.get(family)
        if found is None:
            log.info("no default LoRA targets for model type '%s'; using every linear layer", family)
            return linear_module_names(model)
        return list(found)
    if upper == ["ALL"]:
        return linear_module_names(model)
    if len(targets) == 1 and _REGEX_CHARS & set(targets[0]):
        return targets[0]
    present = set(linear_module_names(model)) | {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing:
        raise ConfigError(f"lora_target: no module named {', '.join(missing)} in this model; its linear layers "
                          f"are {', '.join(linear_module_names(model))} (or use DEFAULT / ALL)")
    return list(targets)


def _layer_ids(model: Any) -> list[int]:
    return sorted({int(m.group(1)) for n, _ in model.named_parameters() if (m := _LAYER.search(n))})


def apply_lora(model: Any, cfg: RunCfg) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    t = cfg.tune
    if method(cfg) == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing)
    if t.adapter:
        if not (Path(t.adapter) / "adapter_config.json").is_file():
            raise ModelError(f"adapter {t.adapter} is not a LoRA adapter directory (no adapter_config.json)")
        return PeftModel.from_pretrained(model, t.adapter, is_trainable=True)
    lcfg = LoraConfig(r=t.lora_rank, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                      target_modules=lora_targets(model, t.lora_target), modules_to_save=list(t.modules_to_save) or None,
                      use_rslora=t.use_rslora, use_dora=t.use_dora, task_type="CAUSAL_LM")
    return get_peft_model(model, lcfg)


def apply_freeze(model: Any, cfg: RunCfg) -> None:
    """Train only some layers: the last N (``freeze_trainable_layers``) or all above ``freeze_ratio``."""
    t = cfg.tune
    layers = _layer_ids(model)
    if not layers:
        raise ConfigError("freeze tuning needs a model with numbered decoder layers (*.layers.N.*)")
    if t.freeze_ratio is not None:
        n_frozen = int(round(len(layers) * t.freeze_ratio))
        trainable = set(layers[n_frozen:])
    elif t.freeze_trainable_layers >= 0:
        trainable = set(layers[-t.freeze_trainable_layers:]) if t.freeze_trainable_layers else set()
    else:
        trainable = set(layers[:-t.freeze_trainable_layers])
    extra = [f".{e.strip('.')}." for e in t.freeze_trainable_modules]  # `lm_head`, `norm`, `model.norm`, ...
    for name, p in model.named_parameters():
        m = _LAYER.search(name)
        p.requires_grad = bool(m and int(m.group(1)) in trainable) or any(e in f".{name}" for e in extra)
    missing = [e.strip(".") for e in extra if not any(e in f".{n}" for n, _ in model.named_parameters())]
    if missing:
        raise ConfigError(f"freeze_trainable_modules: no module named {', '.join(missing)} in this model")


def _enable_checkpointing(model: Any) -> None:
    """Activation checkpointing under its transformers 5 name, or the older one (transformers 4)."""
    new = getattr(model, "activation_checkpointing_enable", None)
    if new is not None:
        new(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def make_trainable(model: Any, cfg: RunCfg) -> Any:
    """Wrap or unfreeze ``model`` for the configured method; trainable weights are kept in fp32."""
    m = method(cfg)
    if m in ("lora", "qlora"):
        model = apply_lora(model, cfg)
    elif m == "freeze" or (m == "full" and cfg.tune.freeze_ratio):
        apply_freeze(model, cfg)
    else:  # full
        for p in model.parameters():
            p.requires_grad = True
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if cfg.train.gradient_checkpointing:
        _enable_checkpointing(model)
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
        model.config.use_cache = False
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_train == 0:
        raise ConfigError("nothing to train: the tuning settings leave no trainable parameter")
    n_all = sum(p.numel() for p in model.parameters())
    log.info("method %s: %s trainable of %s parameters (%.2f%%)", m, f"{n_train:,}", f"{n_all:,}",
             100 * n_train / n_all)
    return model


def add_neftune(model: Any, alpha: float) -> Any:
    """NEFTune: uniform noise on the input embeddings while training (a hook, removed by the handle)."""
    emb = model.get_input_embeddings()

    def hook(module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        dims = output.size(1) * output.size(2)
        scale = alpha / dims ** 0.5
        return output + torch.zeros_like(output).uniform_(-scale, scale)

    return emb.register_forward_hook(hook)


def keep_input_dtype(model: Any) -> int:
    """Under autocast, let LoRA layers pass their input on as it is; returns how many layers were changed.

    peft casts a layer's input to the adapter's dtype (fp32) before the adapter's matmuls, and autocast casts
    it straight back to bf16/fp16 for them: two full copies of every adapted activation in each direction,
    a fifth of a CPU bf16 step. Skipping the round trip computes exactly the same thing (a bf16 value is
    exact in fp32), since autocast still runs the adapter matmuls in the compute dtype.
    """
    n = 0
    for m in model.modules():
        if hasattr(m, "cast_input_dtype_enabled"):
            m.cast_input_dtype_enabled = False
            n += 1
    return n
