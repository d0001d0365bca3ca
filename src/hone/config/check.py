"""Validation of a RunCfg, section by section: only raises, never changes the config."""
from __future__ import annotations

from typing import Callable, Collection

from ..errors import ConfigError
from .keys import SECTIONS, DataCfg, ModelCfg, RunCfg, TrainCfg, TuneCfg

Need = Callable[[bool, str], None]


def validate(cfg: RunCfg, where: str = "", sections: Collection[str] = tuple(SECTIONS)) -> None:
    """Check the given sections of ``cfg`` (and the rules that join two of them, when both are given)."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(where + msg)

    if "train" in sections:
        _train(cfg.train, need)
    if "data" in sections:
        _data(cfg.data, need)
    if "tune" in sections:
        _tune(cfg.tune, need)
    if "tune" in sections and "model" in sections:
        _tune_and_model(cfg.tune, cfg.model, need)


def _train(t: TrainCfg, need: Need) -> None:
    need(t.batch_size >= 1, f"batch_size must be >= 1, got {t.batch_size}")
    need(t.eval_batch_size is None or t.eval_batch_size >= 1, "eval_batch_size must be >= 1")
    need(t.gradient_accumulation_steps >= 1,
         f"gradient_accumulation_steps must be >= 1, got {t.gradient_accumulation_steps}")
    need(t.max_steps == -1 or t.max_steps > 0, f"max_steps must be -1 (use epochs) or > 0, got {t.max_steps}")
    need(t.max_steps > 0 or t.num_train_epochs > 0, "num_train_epochs must be > 0 (or set max_steps)")
    need(t.learning_rate is None or t.learning_rate > 0, f"learning_rate must be > 0, got {t.learning_rate}")
    need(0 <= t.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    need(t.warmup_steps >= 0, "warmup_steps must be >= 0")
    need(0 <= t.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]")
    need(t.weight_decay >= 0, "weight_decay must be >= 0")
    need(t.max_grad_norm >= 0, "max_grad_norm must be >= 0 (0 turns clipping off)")
    need(t.eval_steps >= 1, "eval_steps must be >= 1")
    need(t.save_steps is None or t.save_steps >= 1, "save_steps must be >= 1")
    need(t.logging_steps >= 1, "logging_steps must be >= 1")
    need(t.save_total_limit == -1 or t.save_total_limit >= 1,
         "save_total_limit must be -1 (keep all) or >= 1")
    need(t.max_nonfinite_steps >= 1, "max_nonfinite_steps must be >= 1")
    need(t.nproc_per_node >= 1, "nproc_per_node must be >= 1")
    need(t.early_stopping_patience is None or t.early_stopping_patience >= 1, "early_stopping_patience must be >= 1")
    for r in t.report_to:
        need(r in ("tensorboard", "wandb", "none", "all"), f"report_to: unknown destination '{r}'; use "
             "tensorboard, wandb or none")


def _data(d: DataCfg, need: Need) -> None:
    need(d.max_length == -1 or d.max_length >= 8, f"max_length must be -1 or >= 8, got {d.max_length}")
    need(d.max_forward_tokens >= 0, f"max_forward_tokens must be 0 (auto) or a number of tokens, got "
         f"{d.max_forward_tokens}")
    need(d.val_size >= 0, "val_size must be >= 0")
    need(d.max_samples is None or d.max_samples >= 1, "max_samples must be >= 1")
    need(d.train_sample == -1 or d.train_sample >= 1, "train_sample must be -1 (all) or >= 1")
    need(d.preprocessing_num_workers >= 1, "preprocessing_num_workers must be >= 1")
    need(len(d.model_name) <= 2 and len(d.model_author) <= 2,
         "model_name and model_author take one value, or two (Chinese, then English)")


def _tune(tu: TuneCfg, need: Need) -> None:
    need(tu.lora_rank >= 1, f"lora_rank must be >= 1, got {tu.lora_rank}")
    need(tu.lora_alpha >= 1, "lora_alpha must be >= 1")
    need(0 <= tu.lora_dropout < 1, "lora_dropout must be in [0, 1)")
    need(len(tu.lora_target) >= 1, "lora_target needs at least one entry (or DEFAULT / ALL)")
    need(tu.freeze_ratio is None or 0 <= tu.freeze_ratio <= 1, "freeze_ratio must be in [0, 1]")
    need(tu.neftune_alpha >= 0, "neftune_alpha must be >= 0")


def _tune_and_model(tu: TuneCfg, m: ModelCfg, need: Need) -> None:
    if tu.tuning in ("full", "freeze"):
        need(m.quantization_bit == 0, f"quantization_bit {m.quantization_bit} works only with lora/qlora: a "
             "quantized base model cannot be trained in full")
    need(not (tu.use_dora and tu.tuning == "qlora" and m.quantization_bit == 8),
         "DoRA does not support 8-bit bases; use quantization_bit 4")
