"""Run configuration: keys (``keys``), loading (``load``), aliases from other tools (``aliases``),
validation (``check``) and derived values (``derive``). Users import from ``hone.config``."""
from __future__ import annotations

from .keys import (KEYS, SECTIONS, DataCfg, GenCfg, ModelCfg, RunCfg, TrainCfg, TuneCfg, changed_keys, dump_yaml,
                   key_help, opt, to_dict)
from .load import build, load_config, parse_cli_overrides, read_yaml, replace

__all__ = ["KEYS", "SECTIONS", "DataCfg", "GenCfg", "ModelCfg", "RunCfg", "TrainCfg", "TuneCfg", "build",
           "changed_keys", "dump_yaml", "key_help", "load_config", "opt", "parse_cli_overrides", "read_yaml",
           "replace", "to_dict"]
