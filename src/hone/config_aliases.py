"""Option names of ms-swift, LLaMA-Factory, MiniCPM's script and HF TrainingArguments, mapped to hone keys.

An alias maps to ``(hone_key, translate)``; ``translate`` turns the other tool's value into hone's
(returning ``SKIP`` when the value says "off", so e.g. ``bf16: false`` leaves ``dtype`` alone).
Keys in ``IGNORED`` are accepted so recipes carry over, and have no effect for the reason given.
"""
from __future__ import annotations

from typing import Any, Callable

from .errors import ConfigError

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


def _method(v: Any) -> Any:
    m = str(v).strip().lower()
    if m in ("lora", "qlora", "full", "freeze"):
        return m
    if m in ("adalora", "longlora", "lora+", "loraplus"):
        raise ConfigError(f"tuning method '{v}' is not supported; use lora, qlora, full or freeze")
    return m  # validation lists the valid ones


def _flash(v: Any) -> Any:
    m = str(v).strip().lower()
    if m in ("fa2", "flash_attention_2", "true", "1", "yes"):
        return "flash_attention_2"
    if m in ("fa3", "flash_attention_3"):
        return "flash_attention_3"
    if m in ("disabled", "eager"):
        return "eager"
    if m in ("sdpa", "auto", "false", "0", "no", "none"):
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


ALIASES: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    # model
    "model_name_or_path": ("model", None),
    "model_id_or_path": ("model", None),
    "model_type": ("model", None),
    "model_id": ("model", None),
    "revision": ("model_revision", None),
    "template_type": ("template", _template),
    "torch_dtype": ("dtype", _lower),
    "bf16": ("dtype", _flag("bf16")),
    "fp16": ("dtype", _flag("fp16")),
    "fp32": ("dtype", _flag("fp32")),
    "use_flash_attn": ("attn_impl", _use_flash),
    "flash_attn": ("attn_impl", _flash),
    "attn_implementation": ("attn_impl", _flash),
    "default_system": ("system", None),
    "bnb_4bit_quant_type": ("quant_type", None),
    "quantization_type": ("quant_type", None),
    "bnb_4bit_use_double_quant": ("double_quant", None),
    "double_quantization": ("double_quant", None),
    "bnb_4bit_comp_dtype": ("quant_compute_dtype", _lower),
    "bnb_4bit_compute_dtype": ("quant_compute_dtype", _lower),
    "hf_hub_token": ("hub_token", None),
    "token": ("hub_token", None),
    "load_in_4bit": ("quantization_bit", lambda v: 4 if _truthy(v) else SKIP),
    "load_in_8bit": ("quantization_bit", lambda v: 8 if _truthy(v) else SKIP),
    # data
    "datasets": ("dataset", None),
    "train_data_path": ("dataset", None),
    "train_file": ("dataset", None),
    "eval_dataset": ("val_dataset", None),
    "eval_data_path": ("val_dataset", None),
    "validation_file": ("val_dataset", None),
    "custom_dataset_info": ("dataset_info", None),
    "dataset_test_ratio": ("val_size", None),
    "split_dataset_ratio": ("val_size", None),
    "train_dataset_sample": ("train_sample", None),
    "data_seed": ("dataset_seed", None),
    "cutoff_len": ("max_length", None),
    "model_max_length": ("max_length", None),
    "max_seq_length": ("max_length", None),
    "max_seq_len": ("max_length", None),
    "train_on_prompt": ("loss_scope", _flag("all")),
    "mask_history": ("loss_scope", _flag("last_turn")),
    "num_proc": ("preprocessing_num_workers", None),
    "dataset_num_proc": ("preprocessing_num_workers", None),
    "dataset_format": ("format", _lower),
    # tuning
    "sft_type": ("tuning", _method),
    "finetuning_type": ("tuning", _method),
    "train_type": ("tuning", _method),
    "use_lora": ("tuning", _flag("lora")),
    "qlora": ("tuning", _flag("qlora")),
    "lora_r": ("lora_rank", None),
    "lora_dropout_p": ("lora_dropout", None),
    "lora_target_modules": ("lora_target", None),
    "target_modules": ("lora_target", None),
    "additional_target": ("modules_to_save", None),
    "adapter_name_or_path": ("adapter", None),
    "resume_lora_training": ("adapter", None),
    "ckpt_dir": ("adapter", None),
    "freeze_parameters": ("freeze_ratio", _freeze_params),
    "freeze_parameters_ratio": ("freeze_ratio", _freeze_params),
    "freeze_extra_modules": ("freeze_trainable_modules", None),
    "neftune_noise_alpha": ("neftune_alpha", None),
    # training
    "num_epochs": ("num_train_epochs", None),
    "epochs": ("num_train_epochs", None),
    "per_device_train_batch_size": ("batch_size", None),
    "train_batch_size": ("batch_size", None),
    "micro_batch_size": ("batch_size", None),
    "per_device_eval_batch_size": ("eval_batch_size", None),
    "lr": ("learning_rate", None),
    "scheduler": ("lr_scheduler_type", _lower),
    "optimizer": ("optim", _lower),
    "evaluation_strategy": ("eval_strategy", _strategy),
    "save_only_model": ("only_save_model", None),
    "resume": ("resume_from_checkpoint", None),
    "deepspeed_config_path": ("deepspeed", None),
    "ds_config": ("deepspeed", None),
    # generation
    "max_tokens": ("max_new_tokens", None),
    "stop": ("stop_words", None),
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
