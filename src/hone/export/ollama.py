"""An Ollama ``Modelfile`` beside a GGUF file: FROM, TEMPLATE (Go template syntax), SYSTEM and stop words.

The TEMPLATE is built from the declarative template's fields over Ollama's ``.Messages`` the way hone renders a
conversation: a system prefix (or the plain prefix), then each user turn (with chat_sep between rounds) and each
reply with its suffix. Every piece of template text is a quoted Go string, so trim markers never eat template text.
Tool calls, think blocks and whitespace trimming have no form here; such templates still get a Modelfile whose
TEMPLATE covers plain chat, and the GGUF carries the full Jinja template for llama.cpp. Numbered rounds and
today's date cannot be written at all: those templates raise ExportError.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import atomic
from ..templates import get_template
from ..templates.declarative import DeclarativeTemplate, Items
from .jinja import fill_items
from .tokenizer import ExportError

_REFS = {"bos_token_id": "bos_token", "eos_token_id": "eos_token", "pad_token_id": "pad_token"}


def _lit(text: str) -> str:
    # a JSON string is a valid Go interpreted string literal (same escapes, \uXXXX included)
    return "{{- " + json.dumps(text, ensure_ascii=False) + " -}}" if text else ""


def _items(items: Items, values: dict[str, str], tokenizer: Any, name: str) -> str:
    def missing(placeholder: str) -> None:
        if placeholder.startswith("ROUND"):
            raise ExportError(f"template '{name}' numbers its rounds, which Ollama templates cannot")
        if placeholder == "DATE":
            raise ExportError(f"template '{name}' writes today's date, which an Ollama TEMPLATE cannot (a "
                              "template without it, e.g. llama3_1, can)")

    def token(ref: Any) -> str:
        return _lit(tokenizer.convert_ids_to_tokens(ref) if isinstance(ref, int) else
                    getattr(tokenizer, _REFS[ref]) or "" if ref in _REFS else ref)

    return fill_items(items, values, _lit, token, missing)


def _drop_leading_bos(items: Items) -> Items:
    """llama.cpp adds BOS itself when the GGUF says so; the template must not write a second one."""
    if items and not isinstance(items[0], str) and list(items[0])[:1] == ["bos_token_id"]:
        rest = list(items[0])[1:]
        return ((rest,) if rest else ()) + tuple(items[1:])
    return items


def go_template(t: DeclarativeTemplate, tokenizer: Any, add_bos: bool) -> str:
    """Ollama TEMPLATE text equivalent to ``t`` for plain (tool-free) chat."""
    prefix = _drop_leading_bos(t.prefix) if add_bos else t.prefix
    system_prefix = t.system_prefix
    if system_prefix is not None and add_bos:
        system_prefix = _drop_leading_bos(system_prefix)
    n = t.name
    head_sys = _items(system_prefix, {"SYSTEM": "{{- $system -}}"}, tokenizer, n) if system_prefix is not None \
        else _items(prefix, {"SYSTEM": "{{- $system -}}"}, tokenizer, n)
    # an empty system prompt counts as none where the template drops it (Go's `and` treats "" as false)
    has = "{{- if and $has $system }}" if t.drop_empty_system else "{{- if $has }}"
    head = has + head_sys + "{{- else }}" + _items(prefix, {"SYSTEM": ""}, tokenizer, n) + "{{- end }}"
    prompt = _items(t.prompt, {"QUERY": "{{- .Content -}}"}, tokenizer, n)
    if t.system_in_query is not None:  # the system prompt goes into the first or the last user turn instead
        head = _items(prefix, {"SYSTEM": ""}, tokenizer, n)
        where = "$q0" if t.system_query == "first" else "(eq $i $last)"
        query = _items((t.system_in_query,), {"SYSTEM": "{{- $system -}}", "QUERY": "{{- .Content -}}"}, tokenizer, n)
        prompt = ("{{- if and " + has[len("{{- if "):-2] + " " + where + " }}"
                  + _items(t.prompt, {"QUERY": query}, tokenizer, n) + "{{- else }}" + prompt + "{{- end }}")
    lines = [
        '{{- $system := "" }}{{- $has := false }}{{- $first := true }}{{- $q0 := true }}{{- $last := -1 }}',
        '{{- range $i, $m := .Messages }}{{- if eq .Role "system" }}{{- $has = true }}{{- $system = .Content }}'
        '{{- else if eq .Role "user" }}{{- $last = $i }}{{- end }}{{- end }}',
        head,
        "{{- range $i, $m := .Messages }}",
        '{{- if eq .Role "user" }}',
        "{{- if not $first }}" + _items(t.chat_sep or (), {}, tokenizer, n) + "{{- end }}{{- $first = false }}",
        prompt + "{{- $q0 = false }}",
        '{{- else if eq .Role "assistant" }}',
        _items(t.response_prefix, {}, tokenizer, n) + "{{- .Content -}}" + _items(t.suffix, {}, tokenizer, n),
        "{{- end }}",
        "{{- end }}",
    ]
    return "\n".join(line for line in lines if line)


def write_modelfile(model_dir: Path, gguf_file: Path, template_name: str, tokenizer: Any,
                    system: str | None = None, add_bos: bool = False) -> Path:
    """``Modelfile`` in ``model_dir`` pointing at ``gguf_file`` (relative), atomically."""
    lines = [f"FROM ./{gguf_file.name}"]
    stops: list[str] = []
    if template_name.lower() not in ("auto", "hf", "tokenizer"):
        t = get_template(template_name, tokenizer)
        if not isinstance(t, DeclarativeTemplate):
            raise ExportError(f"template '{template_name}' is not declarative; no Ollama TEMPLATE can be written")
        lines.append(f'TEMPLATE """{go_template(t, tokenizer, add_bos)}"""')
        default = system if system is not None else t.default_system
        if default is not None:
            lines.append(f'SYSTEM """{default}"""')
        stops = list(t.stop_words(tokenizer))
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stops]
    path = model_dir / "Modelfile"
    atomic.write_text(path, "\n".join(lines) + "\n")
    path.chmod(0o644)
    return path
