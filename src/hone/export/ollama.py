"""An Ollama ``Modelfile`` beside a GGUF file: FROM, TEMPLATE (Go template syntax), SYSTEM and stop words.

A run on the tokenizer's own template (``template: auto``) gets the TEMPLATE of the built-in template that renders
every probe conversation exactly as the tokenizer's Jinja does (SmolLM2's is ``smollm2``); when none does, the
Modelfile says so and Ollama picks a template from the chat template in the GGUF.

The TEMPLATE is built from the declarative template's fields over Ollama's ``.Messages`` the way hone renders a
conversation: a system prefix (or the plain prefix), then each user turn (with chat_sep between rounds) and each
reply with its suffix. Every piece of template text is a quoted Go string, so trim markers never eat template text.
Tool calls, think blocks and whitespace trimming have no form here; such templates still get a Modelfile whose
TEMPLATE covers plain chat, and the GGUF carries the full Jinja template for llama.cpp. Numbered rounds and
today's date cannot be written at all: those templates raise ExportError.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .. import atomic
from ..data.conversation import Message
from ..templates import AUTO_NAMES, get_template
from ..templates.declarative import DeclarativeTemplate, Items
from .jinja import fill_items
from .tokenizer import ExportError

log = logging.getLogger("hone")
_REFS = {"bos_token_id": "bos_token", "eos_token_id": "eos_token", "pad_token_id": "pad_token"}
# what an Ollama TEMPLATE renders: the history and the next reply's prompt, with and without a system prompt
_PROBES = [
    [Message("user", "Hello, who are you?")],
    [Message("system", "You are terse."), Message("user", "Hello, who are you?")],
    [Message("system", ""), Message("user", "2+2?")],
    [Message("user", "Hello, who are you?"), Message("assistant", "I am a bot."), Message("user", "2+2? 答：")],
    [Message("system", "You are terse."), Message("user", "Hi  there "), Message("assistant", " Hello. "),
     Message("user", "Again?\n")],
]


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


def _render(t: DeclarativeTemplate, tokenizer: Any, messages: list[Message]) -> str:
    return "".join(t.render(p, tokenizer) + t.render(r, tokenizer) for p, r in t.pieces(messages, generation=True))


def builtin_like(tokenizer: Any) -> str | None:
    """The built-in template that renders every probe conversation as ``tokenizer``'s chat template does and has
    an Ollama form; None when there is none."""
    from ..templates.base import TEMPLATES, _load_builtins

    if not getattr(tokenizer, "chat_template", None):
        return None
    wanted: list[tuple[list[Message], str | None]] = []
    for msgs in _PROBES:
        try:
            text = tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in msgs],
                                                 tokenize=False, add_generation_prompt=True)
        except Exception:  # the template refuses this shape (no system role): the built-in must refuse it too
            text = None
        wanted.append((msgs, text))
    _load_builtins()
    for name in sorted(TEMPLATES.names()):
        try:
            t = get_template(name, tokenizer)
        except Exception:  # a built-in this tokenizer cannot carry (its special tokens are missing)
            continue
        if not isinstance(t, DeclarativeTemplate):
            continue
        ok = True
        for msgs, text in wanted:
            try:
                ok = text is not None and _render(t, tokenizer, msgs) == text
            except Exception:
                ok = text is None
            if not ok:
                break
        if ok:
            try:
                go_template(t, tokenizer, add_bos=False)
            except ExportError:  # renders alike but has no Ollama form (numbered rounds, today's date)
                continue
            return name
    return None


def write_modelfile(model_dir: Path, gguf_file: Path, template_name: str, tokenizer: Any,
                    system: str | None = None, add_bos: bool = False) -> Path:
    """``Modelfile`` in ``model_dir`` pointing at ``gguf_file`` (relative), atomically."""
    lines = [f"FROM ./{gguf_file.name}"]
    stops: list[str] = []
    if template_name.lower() in AUTO_NAMES:
        like = builtin_like(tokenizer)
        if like is None:
            log.warning("the tokenizer's chat template renders like no built-in template, so the Modelfile has no "
                        "TEMPLATE: Ollama picks one from the chat template in the GGUF (check it with `ollama show "
                        "--template`), or export a run trained with a built-in template")
            lines.append("# no TEMPLATE: Ollama derives one from the GGUF's tokenizer.chat_template")
        else:
            log.info("the tokenizer's chat template renders as the built-in '%s': its TEMPLATE is written", like)
            template_name = like
    if template_name.lower() not in AUTO_NAMES:
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
