"""Option names of ms-swift, LLaMA-Factory, MiniCPM's script and HF TrainingArguments, mapped to hone keys.

An alias maps to ``(hone_key, translate)``; ``translate`` turns the other tool's value into hone's
(returning ``SKIP`` when the value says "off", so e.g. ``bf16: false`` leaves ``dtype`` alone).
Keys in ``IGNORED`` are accepted so recipes carry over, and have no effect for the reason given.
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import ConfigError

SKIP = object()

_TRUE = {"true", "1", "yes", "y", "on"}


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in _TRUE
    return bool(v)


def _flag(value: Any) -> Callable[[Any], Any]:
    """A bare boolean flag that sets a key to ``value`` when true."""
    return lambda v: value if _truthy(v) else SKIP


def _lower(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


def _dtype(v: Any) -> Any:
    """torch's dtype names (``bfloat16``, ``float16``, ``float32``), as HF scripts write them, or hone's."""
    m = _lower(v)
    return _TORCH_DTYPES.get(m, m) if isinstance(m, str) else m


def _method(v: Any) -> Any:
    m = str(v).strip().lower()
    if m in ("lora", "qlora", "full", "freeze"):
        return m
    if m in ("adalora", "longlora", "lora+", "loraplus"):
        raise ConfigError(f"tuning method '{v}' is not supported; use lora, qlora, full or freeze")
    return m  # validation lists the valid ones


def _flash(v: Any) -> Any:
    m = str(v).strip().lower()
    if m in ("fa2", "flash_attn", "flash_attention_2", "true", "1", "yes"):
        return "flash_attention_2"
    if m in ("fa3", "flash_attention_3"):
        return "flash_attention_3"
    if m in ("disabled", "eager"):
        return "eager"
    if m == "auto":
        return "auto"
    if m in ("sdpa", "false", "0", "no", "none"):
        return "sdpa"
    return m


def _use_flash(v: Any) -> Any:
    if v is None or (isinstance(v, str) and v.strip().lower() in ("none", "null", "auto")):
        return SKIP
    return "flash_attention_2" if _truthy(v) else "sdpa"


def _template(v: Any) -> Any:
    return "auto" if str(v).strip().lower() in ("auto", "none", "null", "") else v


def _strategy(v: Any) -> Any:
    m = str(v).strip().lower()
    return {"intervalstrategy.steps": "steps", "intervalstrategy.epoch": "epoch", "intervalstrategy.no": "no"}.get(m, m)


def _freeze_params(v: Any) -> Any:
    f = float(v)
    return SKIP if f == 0 else f


# Other tools' names for a hone key, with the same meaning and values.
_SAME_AS: dict[str, tuple[str, ...]] = {
    "model": ("model_name_or_path", "model_id_or_path", "model_type", "model_id"),
    "model_revision": ("revision",),
    "system": ("default_system",),
    "quant_type": ("bnb_4bit_quant_type", "quantization_type"),
    "double_quant": ("bnb_4bit_use_double_quant", "double_quantization"),
    "hub_token": ("hf_hub_token", "token"),
    "dataset": ("datasets", "train_data_path", "train_file"),
    "val_dataset": ("eval_dataset", "eval_data_path", "validation_file"),
    "dataset_info": ("custom_dataset_info",),
    "val_size": ("dataset_test_ratio", "split_dataset_ratio"),
    "train_sample": ("train_dataset_sample",),
    "dataset_seed": ("data_seed",),
    "max_length": ("cutoff_len", "model_max_length", "max_seq_length", "max_seq_len"),
    "preprocessing_num_workers": ("num_proc", "dataset_num_proc"),
    "lora_rank": ("lora_r",),
    "lora_dropout": ("lora_dropout_p",),
    "lora_target": ("lora_target_modules", "target_modules"),
    "modules_to_save": ("additional_target",),
    "adapter": ("adapter_name_or_path", "resume_lora_training", "ckpt_dir"),
    "freeze_trainable_modules": ("freeze_extra_modules",),
    "neftune_alpha": ("neftune_noise_alpha",),
    "num_train_epochs": ("num_epochs", "epochs"),
    "batch_size": ("per_device_train_batch_size", "train_batch_size", "micro_batch_size"),
    "eval_batch_size": ("per_device_eval_batch_size",),
    "learning_rate": ("lr",),
    "only_save_model": ("save_only_model",),
    "resume_from_checkpoint": ("resume",),
    "deepspeed": ("deepspeed_config_path", "ds_config"),
    "max_new_tokens": ("max_tokens",),
    "stop_words": ("stop",),
}

# Names whose values need converting (or that set a key only for some values): (hone key, converter, names).
_CONVERTED: tuple[tuple[str, Callable[[Any], Any], tuple[str, ...]], ...] = (
    ("template", _template, ("template_type",)),
    ("dtype", _dtype, ("torch_dtype",)),
    ("dtype", _flag("bf16"), ("bf16",)),
    ("dtype", _flag("fp16"), ("fp16",)),
    ("dtype", _flag("fp32"), ("fp32",)),
    ("attn_impl", _use_flash, ("use_flash_attn",)),
    ("attn_impl", _flash, ("flash_attn", "attn_implementation")),
    ("quant_compute_dtype", _lower, ("bnb_4bit_comp_dtype", "bnb_4bit_compute_dtype")),
    ("quantization_bit", lambda v: 4 if _truthy(v) else SKIP, ("load_in_4bit",)),
    ("quantization_bit", lambda v: 8 if _truthy(v) else SKIP, ("load_in_8bit",)),
    ("loss_scope", _flag("all"), ("train_on_prompt",)),
    ("loss_scope", _flag("last_turn"), ("mask_history",)),
    ("format", _lower, ("dataset_format",)),
    ("tuning", _method, ("sft_type", "finetuning_type", "train_type")),
    ("tuning", _flag("lora"), ("use_lora",)),
    ("tuning", _flag("qlora"), ("qlora",)),
    ("freeze_ratio", _freeze_params, ("freeze_parameters", "freeze_parameters_ratio")),
    ("lr_scheduler_type", _lower, ("scheduler",)),
    ("optim", _lower, ("optimizer",)),
    ("eval_strategy", _strategy, ("evaluation_strategy",)),
)

# alias -> (hone key, converter or None)
ALIASES: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    **{alias: (key, fn) for key, fn, names in _CONVERTED for alias in names},
    **{alias: (key, None) for key, names in _SAME_AS.items() for alias in names},
}

# hone keys that other tools spell the same but whose values they spell their own way (ms-swift's
# `attn_impl: flash_attn`): the value is translated as the alias's would be.
VALUE_SPELLINGS: dict[str, Callable[[Any], Any]] = {
    "attn_impl": _flash,
    "infer_backend": lambda v: "transformers" if str(v).strip().lower() in ("pt", "hf") else v,  # ms-swift: pt
}

# Keys other tools need that hone does not (each says why), accepted so their recipes run unchanged.
IGNORED: dict[str, str] = {
    "stage": "hone trains supervised fine-tuning (`sft`); other stages are not available yet",
    "do_train": "`hone train` always trains",
    "do_eval": "evaluation runs whenever validation data exists",
    "do_predict": "use `hone infer` for predictions and their metrics",
    "overwrite_cache": "the tokenization cache is keyed by content, so it is never stale",
    "logging_strategy": "hone logs every `logging_steps` steps",
    "log_level": "hone logs at info on the main process",
    "tuner_backend": "hone's LoRA backend is peft",
    "ignore_args_error": "hone always reports argument errors",
    "predict_with_generate": "generation metrics come with `hone infer`",
    "eval_human": "`hone chat` talks to the model; `hone infer` and `hone eval` use the validation split",
    "dataloader_pin_memory": "pinned automatically on CUDA",
    "remove_unused_columns": "hone keeps only what the model needs",
    "local_rank": "set by the launcher",
    "ddp_find_unused_parameters": "detected from the tuning method",
    "save_safetensors": "hone always saves safetensors",
    "push_to_hub": "pushing to a hub is not available",
    "test_oom_error": "not needed: `hone data check` reports the longest rows",
    "disable_tqdm": "the progress display turns itself off when output is not a terminal",
}


def check_ignored(key: str, value: Any) -> None:
    """Some ignored keys are harmless only with their default value."""
    if key == "stage" and str(value).lower() not in ("sft", "pt"):
        raise ConfigError(f"stage '{value}' is not supported: hone trains `sft` (and continued pre-training "
                          "with plain-text data)")
    if key == "tuner_backend" and str(value).lower() not in ("peft", "swift"):
        raise ConfigError(f"tuner_backend '{value}' is not supported; hone uses peft")
    if key == "push_to_hub" and _truthy(value):
        raise ConfigError("push_to_hub is not available in hone; copy the run directory where you need it")


def aliases_of(key: str) -> list[str]:
    """The other tools' names that set the hone key ``key`` (sorted), for help texts and for finding a key's
    every spelling on a command line."""
    return sorted(alias for alias, (target, _) in ALIASES.items() if target == key)
