"""Run configuration: keys (``keys``), loading (``load``), aliases from other tools (``aliases``),
validation (``check``), derived values (``derive``) and the sections each command reads (``commands``).
Users import from ``hone.config``."""
from __future__ import annotations

from .commands import COMMAND_SECTIONS, sections_for
from .keys import (KEYS, SECTIONS, DataCfg, GenCfg, ModelCfg, RunCfg, TrainCfg, TuneCfg, changed_keys, dump_yaml,
                   key_help, opt, to_dict)
from .load import LoadedConfig, build, load_config, load_with_given, parse_cli_overrides, read_yaml, replace

__all__ = ["COMMAND_SECTIONS", "KEYS", "SECTIONS", "DataCfg", "GenCfg", "LoadedConfig", "ModelCfg", "RunCfg",
           "TrainCfg", "TuneCfg", "build", "changed_keys", "dump_yaml", "key_help", "load_config", "load_with_given",
           "opt", "parse_cli_overrides", "read_yaml", "replace", "sections_for", "to_dict"]
