"""Config: flat keys, aliases from other tools, bare flags, validation that names the key and the fix."""
from __future__ import annotations

import pytest

from hone.config import dump_yaml, key_help, load_config, parse_cli_overrides, to_dict
from hone.config.derive import learning_rate, method, save_steps
from hone.errors import ConfigError


def test_defaults_are_valid_and_every_key_has_help():
    cfg = load_config({})
    assert cfg.model.model == "smollm2-135m"
    assert cfg.model.template == "auto"
    for key, _section, _default, help_ in key_help():
        assert help_ and len(help_) > 10, key


def test_yaml_file_with_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("model: smollm2-135m\ndataset: [a.json, b.jsonl#10]\nlora_rank: 8\n")
    cfg = load_config(p, ["--lora_rank", "16", "--learning_rate=3e-4"])
    assert cfg.tune.lora_rank == 16
    assert cfg.train.learning_rate == 3e-4
    assert cfg.data.dataset == ("a.json", "b.jsonl#10")


def test_ms_swift_names():
    cfg = load_config({"sft_type": "lora", "lora_target_modules": "DEFAULT", "batch_size": 1, "max_length": 1500,
                       "model_type": "smollm2-135m", "lora_dropout_p": 0.06, "template_type": "AUTO",
                       "dtype": "AUTO", "dataset_test_ratio": 0.01, "train_dataset_sample": -1,
                       "check_dataset_strategy": "warning", "custom_dataset_info": "ds_info.json",
                       "freeze_parameters": 0, "tuner_backend": "peft", "use_flash_attn": "false"})
    assert cfg.tune.tuning == "lora" and cfg.tune.lora_dropout == 0.06
    assert cfg.data.max_length == 1500 and cfg.model.template == "auto" and cfg.model.dtype == "auto"
    assert cfg.data.dataset_info == "ds_info.json" and cfg.model.attn_impl == "sdpa"


@pytest.mark.parametrize("value, impl", [("flash_attn", "flash_attention_2"), ("sdpa", "sdpa"), ("eager", "eager"),
                                         ("flash_attention_2", "flash_attention_2"), ("FLASH_ATTN", "flash_attention_2")])
def test_ms_swift_attn_impl_spellings(value, impl):
    assert load_config({"attn_impl": value}).model.attn_impl == impl
    assert load_config({}, ["--attn_impl", value]).model.attn_impl == impl


def test_llama_factory_names():
    cfg = load_config({"model_name_or_path": "/m", "finetuning_type": "lora", "lora_target": "all",
                       "cutoff_len": 1024, "per_device_train_batch_size": 4, "max_samples": 1000,
                       "val_size": 0.1, "stage": "sft", "do_train": True, "overwrite_cache": True,
                       "flash_attn": "auto", "bf16": True, "plot_loss": True, "eval_strategy": "steps"})
    assert cfg.model.model == "/m" and cfg.tune.lora_target == ("all",)
    assert cfg.data.max_length == 1024 and cfg.train.batch_size == 4 and cfg.model.dtype == "bf16"


def test_minicpm_bare_flags():
    ov = parse_cli_overrides(["--model_name_or_path", "m", "--bf16", "--use_lora", "--qlora",
                              "--model_max_length", "1024", "--per_device_eval_batch_size", "128"])
    cfg = load_config(None, ov)
    assert cfg.model.dtype == "bf16" and cfg.tune.tuning == "qlora" and cfg.train.eval_batch_size == 128


def test_list_values_after_one_flag_and_commas():
    ov = parse_cli_overrides(["--dataset", "a.jsonl", "a.jsonl", "b.jsonl#50", "--seed", "7"])
    assert load_config(None, ov).data.dataset == ("a.jsonl", "a.jsonl", "b.jsonl#50")
    assert load_config({"dataset": "x.json,y.json"}).data.dataset == ("x.json", "y.json")


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError, match="unknown key 'lora_rnak'.*did you mean 'lora_rank'"):
        load_config({"lora_rnak": 8})


def test_wrong_type_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("batch_size: lots\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: key 'batch_size' must be an integer, got 'lots'"):
        load_config(p)


def test_bad_choice_and_range():
    with pytest.raises(ConfigError, match="tuning.*must be one of"):
        load_config({"tuning": "magic"})
    with pytest.raises(ConfigError, match="gradient_accumulation_steps must be >= 1"):
        load_config({"gradient_accumulation_steps": 0})


def test_conflicting_alias_and_key():
    with pytest.raises(ConfigError, match="both set 'max_length'"):
        load_config({"max_length": 100, "cutoff_len": 200})


def test_invalid_yaml_names_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("a: 1\nb: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: not valid YAML"):
        load_config(p)


def test_derived_values_are_functions_not_written_back():
    lora = load_config({"tuning": "lora"})
    full = load_config({"tuning": "full"})
    assert learning_rate(lora) == 1e-4 and learning_rate(full) == 2e-5
    assert lora.train.learning_rate is None
    assert method(load_config({"sft_type": "lora", "quantization_bit": 4})) == "qlora"
    assert save_steps(load_config({"eval_steps": 30})) == 30


def test_secrets_never_dumped():
    cfg = load_config({"hub_token": "hf_SECRET123"})
    assert "hf_SECRET123" not in dump_yaml(cfg)
    assert to_dict(cfg)["hub_token"] == "***"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config({"lora_rank": 4, "dataset": ["a.json"], "model_name": ["小雀", "Sparrow"]})
    p = tmp_path / "resolved.yaml"
    p.write_text(dump_yaml(cfg), encoding="utf-8")
    assert load_config(p) == cfg


def test_unsupported_stage_is_an_error():
    with pytest.raises(ConfigError, match="stage 'dpo' is not supported"):
        load_config({"stage": "dpo"})
