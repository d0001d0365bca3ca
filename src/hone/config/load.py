"""Loading a run config: YAML and ``--key value`` tokens → aliases resolved → values coerced → validated."""
from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import yaml

from ..errors import ConfigError
from .aliases import ALIASES, IGNORED, SKIP, VALUE_SPELLINGS, check_ignored
from .check import validate
from .keys import _HINTS, KEYS, SECTIONS, RunCfg, to_dict

# ---------------------------------------------------------------------------------------------- coercion

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
_NONE = {"none", "null", "~", ""}


def _coerce(key: str, value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        return _coerce(key, value, non_none[0], where)
    if origin is tuple:
        if value is None:
            return ()
        items = value if isinstance(value, (list, tuple)) else _split_list(value)
        return tuple(_coerce(key, v, args[0], where) for v in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{where}key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}key '{key}' must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
                if f.is_integer():
                    return int(f)
            except ValueError:
                pass
        raise ConfigError(f"{where}key '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}key '{key}' must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}key '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (dict, list, tuple)):
            raise ConfigError(f"{where}key '{key}' must be a single value, got {value!r}")
        return str(value)
    raise AssertionError(f"unhandled type {tp} for {key}")


def _split_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [value]


# ------------------------------------------------------------------------------------------------ loading

def _resolve_aliases(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Map every alias to its hone key (translating values); unknown keys raise with the closest match."""
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in raw.items():
        k = str(key).strip().lstrip("-").replace("-", "_")
        if k in IGNORED:
            check_ignored(k, value)
            continue
        if k in KEYS:
            target, val = k, VALUE_SPELLINGS[k](value) if k in VALUE_SPELLINGS and value is not None else value
        elif k in ALIASES:
            target, translate = ALIASES[k]
            val = translate(value) if translate else value
            if val is SKIP:
                continue
        else:
            raise ConfigError(f"{where}unknown key '{key}'{_closest(k)}; see `hone config keys` for all keys")
        if target in out and origin[target] != k and out[target] != val:
            if (target, {out[target], val}) == ("tuning", {"lora", "qlora"}):  # MiniCPM: --use_lora --qlora
                out[target] = "qlora"
                continue
            shown = "" if KEYS[target][1].metadata["secret"] else f" ({out[target]!r} vs {val!r})"
            raise ConfigError(f"{where}'{origin[target]}' and '{k}' both set '{target}'{shown}; keep one of them")
        out[target] = val
        origin[target] = k
    return out


def _closest(key: str) -> str:
    names = list(KEYS) + list(ALIASES)
    match = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if not match:
        return ""
    m = match[0]
    return f" (did you mean '{m}'?)" if m in KEYS else f" (did you mean '{m}', an alias of '{ALIASES[m][0]}'?)"


def build(values: Mapping[str, Any], where: str = "", sections: Collection[str] | None = None) -> RunCfg:
    """Build a validated RunCfg from hone keys (aliases already resolved).

    With ``sections``, only those are built and validated: keys of the others are accepted but not checked
    (one YAML serves every command), and those sections keep their defaults.
    """
    wanted = _sections(sections)
    values = {k: v for k, v in values.items() if KEYS[k][0] in wanted}  # the rest: accepted, not checked
    per_section: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in values.items():
        section, f = KEYS[key]
        try:
            v = _coerce(key, value, _HINTS[section][key], where)
        except ConfigError:
            if not f.metadata["secret"]:
                raise
            raise ConfigError(f"{where}key '{key}' must be a single text value (what was given is not shown: "
                              "it is a secret)") from None
        choices = f.metadata["choices"]
        if choices is not None and v is not None:
            if isinstance(v, str):
                v = v.lower() if v.lower() in choices else v
            if v not in choices:
                raise ConfigError(f"{where}key '{key}' must be one of {', '.join(map(str, choices))}; got {v!r}")
        per_section[section][key] = v
    cfg = RunCfg(**{s: SECTIONS[s](**kv) for s, kv in per_section.items()})
    validate(cfg, where, wanted)
    return cfg


def _sections(sections: Collection[str] | None) -> tuple[str, ...]:
    if sections is None:
        return tuple(SECTIONS)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown config sections {unknown}; the sections are {', '.join(SECTIONS)}")
    return tuple(s for s in SECTIONS if s in sections)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a mapping of keys to values, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class LoadedConfig:
    """A loaded config, and the keys the user set: hone names (aliases resolved) → where each was set
    (the YAML path, ``command line`` or ``mapping``; the last source wins). A key set to "off" through an
    alias flag (``bf16: false``) counts as not set."""

    cfg: RunCfg
    given: Mapping[str, str]


def load_with_given(source: str | os.PathLike | Mapping[str, Any] | None = None,
                    overrides: Mapping[str, Any] | Sequence[str] | None = None, *,
                    sections: Collection[str] | None = None) -> LoadedConfig:
    """Load a run config from a YAML path or a dict, then apply ``--key value`` overrides.

    Overrides may be a mapping or a CLI-style token list (``["--lora_rank", "16", "--bf16"]``).
    ``sections`` limits what is built and validated (see ``build``); every key is still checked to exist.
    Relative data paths in a YAML file are kept as written (resolved against the working directory,
    as every tool in the field does).
    """
    if source is None:
        raw, where, origin = {}, "", ""
    elif isinstance(source, Mapping):
        raw, where, origin = dict(source), "", "mapping"
    else:
        raw, where, origin = read_yaml(source), f"{source}: ", str(source)
    values = _resolve_aliases(raw, where)
    given = dict.fromkeys(values, origin)
    if overrides:
        ov = parse_cli_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
        ov_values = _resolve_aliases(ov, "command line: ")
        values.update(ov_values)
        given.update(dict.fromkeys(ov_values, "command line"))
    return LoadedConfig(build(values, where, sections), types.MappingProxyType(given))


def load_config(source: str | os.PathLike | Mapping[str, Any] | None = None,
                overrides: Mapping[str, Any] | Sequence[str] | None = None, *,
                sections: Collection[str] | None = None) -> RunCfg:
    """The config alone of ``load_with_given`` (same arguments)."""
    return load_with_given(source, overrides, sections=sections).cfg


def parse_cli_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """``--key v``, ``--key=v``, ``--key v1 v2`` (a list) and bare ``--flag`` (true)."""
    out: dict[str, Any] = {}
    i, toks = 0, list(tokens)
    while i < len(toks):
        tok = toks[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise ConfigError(f"command line: expected --key, got {tok!r}")
        key = tok[2:]
        if "=" in key:
            key, val = key.split("=", 1)
            out[key] = val
            i += 1
            continue
        vals = []
        i += 1
        while i < len(toks) and not (toks[i].startswith("--") and len(toks[i]) > 2):
            vals.append(toks[i])
            i += 1
        out[key] = True if not vals else vals[0] if len(vals) == 1 else vals
    return out


def replace(cfg: RunCfg, **changes: Any) -> RunCfg:
    """A copy of ``cfg`` with flat keys changed (validated again)."""
    values = to_dict(cfg, redact=False)
    values.update(_resolve_aliases(changes, ""))
    return build(values)
