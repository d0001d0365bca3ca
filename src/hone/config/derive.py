"""Values derived from a config (never written back into it)."""
from __future__ import annotations

from .keys import RunCfg


def method(cfg: RunCfg) -> str:
    """The tuning method, counting `lora` + `quantization_bit` (ms-swift's way of asking for QLoRA)."""
    if cfg.tune.tuning == "lora" and cfg.model.quantization_bit in (4, 8):
        return "qlora"
    return cfg.tune.tuning


def quant_bits(cfg: RunCfg) -> int:
    """Bits of the quantized base: qlora without an explicit quantization_bit means 4."""
    if method(cfg) == "qlora":
        return cfg.model.quantization_bit or 4
    return 0


def learning_rate(cfg: RunCfg) -> float:
    if cfg.train.learning_rate is not None:
        return cfg.train.learning_rate
    return 1e-4 if method(cfg) in ("lora", "qlora") else 2e-5


def save_steps(cfg: RunCfg) -> int:
    return cfg.train.save_steps if cfg.train.save_steps is not None else cfg.train.eval_steps


def eval_batch_size(cfg: RunCfg) -> int:
    return cfg.train.eval_batch_size or cfg.train.batch_size


def report_to(cfg: RunCfg) -> tuple[str, ...]:
    r = cfg.train.report_to
    if "none" in r:
        return ()
    if "all" in r:
        return ("tensorboard", "wandb")
    return tuple(dict.fromkeys(r))
