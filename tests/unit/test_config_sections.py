"""The loader's report of the keys a user gave, and commands that build and check only their own sections."""
from __future__ import annotations

import pytest

import hone
from hone.config import SECTIONS, load_config, load_with_given, sections_for
from hone.config.keys import TrainCfg, TuneCfg
from hone.errors import ConfigError

TRAINING_YAML = """\
model_name_or_path: /models/base
dataset: [data.jsonl]
lora_r: 4
bf16: false
batch_size: 0
num_train_epochs: 0
"""


def test_given_keys_are_hone_names_with_their_source(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("model_name_or_path: /m\nlora_r: 4\nbf16: false\n")
    loaded = load_with_given(p, ["--model_id", "/n", "--lr", "3e-4", "--lora_rank", "4"])
    assert dict(loaded.given) == {"model": "command line", "lora_rank": "command line",
                                  "learning_rate": "command line"}
    assert loaded.cfg.model.model == "/n" and loaded.cfg.train.learning_rate == 3e-4
    only_yaml = load_with_given(p)
    assert dict(only_yaml.given) == {"model": str(p), "lora_rank": str(p)}  # bf16: false sets nothing


def test_given_is_empty_for_defaults_and_says_mapping_for_a_dict():
    assert dict(load_with_given().given) == {}
    assert dict(load_with_given({"use_lora": True, "max_tokens": 5}).given) == {"tuning": "mapping",
                                                                               "max_new_tokens": "mapping"}


def test_chat_accepts_a_training_yaml_without_checking_training_keys(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(TRAINING_YAML)
    with pytest.raises(ConfigError, match=f"{p}: batch_size must be >= 1"):
        load_config(p)
    cfg = load_config(p, ["--max_tokens", "7"], sections=sections_for("chat"))
    assert cfg.model.model == "/models/base" and cfg.tune.lora_rank == 4 and cfg.gen.max_new_tokens == 7
    assert cfg.train == TrainCfg()  # not built: the defaults, not the YAML's invalid values


def test_unused_sections_are_not_coerced_but_unknown_keys_still_fail():
    chat = sections_for("chat")
    cfg = load_config({"batch_size": "many", "dataset_seed": "x"}, sections=chat)
    assert cfg.train.batch_size == 1
    with pytest.raises(ConfigError, match="unknown key 'batch_sise'.*did you mean 'batch_size'"):
        load_config({"batch_sise": 2}, sections=chat)
    with pytest.raises(ConfigError, match="key 'batch_size' must be an integer"):
        load_config({"batch_size": "many"})


def test_data_command_checks_data_and_batch_keys_but_not_tuning_keys():
    data = sections_for("data")
    cfg = load_config({"lora_rank": 0, "tuning": "full", "quantization_bit": 4, "batch_size": 3}, sections=data)
    assert cfg.tune == TuneCfg() and cfg.train.batch_size == 3 and cfg.model.quantization_bit == 4
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        load_config({"batch_size": 0}, sections=data)
    with pytest.raises(ConfigError, match="max_length must be -1 or >= 8"):
        load_config({"max_length": 4}, sections=data)
    with pytest.raises(ConfigError, match="quantization_bit 4 works only with lora/qlora"):
        load_config({"tuning": "full", "quantization_bit": 4}, sections=sections_for("chat"))


def test_train_and_unlisted_commands_read_every_section():
    assert sections_for("train") == tuple(SECTIONS)
    assert sections_for("some-new-command") == tuple(SECTIONS)
    with pytest.raises(ValueError, match="unknown config sections"):
        load_config({}, sections=("model", "nope"))


def test_python_api_data_check_takes_a_training_config(tiny_cfg):
    keys = {**tiny_cfg, "lora_rank": 0}  # invalid for training, unused by the data check
    with pytest.raises(ConfigError, match="lora_rank must be >= 1"):
        hone.load_config(keys)
    report = hone.check_data(keys)
    assert "rows" in report


def test_aliases_of_a_key_each_set_that_key():
    from hone.config.aliases import aliases_of

    names = aliases_of("model")
    assert "model_id" in names and "model_name_or_path" in names and "model" not in names
    for name in names:
        loaded = load_with_given({name: "/m"}, sections=sections_for("chat"))
        assert dict(loaded.given) == {"model": "mapping"} and loaded.cfg.model.model == "/m", name
    assert aliases_of("packing") == []
