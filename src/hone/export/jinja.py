"""A declarative template written as the Jinja chat template an exported tokenizer carries.

The Jinja follows ``DeclarativeTemplate.pieces`` step by step, built from the template's own fields (prefix,
system_prefix, prompt, chat_sep, suffix, response_prefix, trailer, tool format, thinking, trim,
drop_empty_system, system_in_query/system_query, ``{{DATE}}`` as ``strftime_now``), so
``tokenizer.apply_chat_template`` on an exported model renders what hone trained on. Where a template rewrites
history (Qwen3's reasoning, a system prompt on the last query), it renders what the model sees at inference, and
each reply hone trained is that generation prompt followed by the reply. Every tag trims the
whitespace around it and every piece of template text is a quoted string, so layout never leaks into the output.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from ..templates.declarative import DeclarativeTemplate, Items, ToolFormat

_PLACEHOLDER = re.compile(r"\{\{(SYSTEM|QUERY|ROUND0|ROUND1|DATE|TOOLS|TOOL|NAME|ARGUMENTS|CONTENT)\}\}")
# transformers (and llama.cpp) give templates strftime_now; Llama 3.2 writes the date this way
_DATE = "{{- strftime_now('%d %b %Y') -}}"
_SPECIAL_NAMES = {"bos_token_id": "bos_token", "eos_token_id": "eos_token", "pad_token_id": "pad_token"}


def lit(text: str) -> str:
    """Template text as a Jinja output of a quoted string."""
    return "{{- " + json.dumps(text, ensure_ascii=False) + " -}}" if text else ""


def out(expr: str) -> str:
    return "{{- " + expr + " -}}"


def fail(message: str) -> str:
    return out(f"raise_exception({json.dumps(message, ensure_ascii=False)})")


def fill_items(items: Items, values: dict[str, str], text: Callable[[str], str], token: Callable[[Any], str],
               missing: Callable[[str], None] | None = None) -> str:
    """A template field in a target template language: literal text through ``text``, placeholders from
    ``values`` (one the field does not fill stays literal text, as in hone's rendering, unless ``missing``
    raises), token references through ``token``."""
    parts: list[str] = []
    for item in items:
        if isinstance(item, str):
            pos = 0
            for m in _PLACEHOLDER.finditer(item):
                if m.group(1) not in values:
                    if missing is not None:
                        missing(m.group(1))
                    continue
                parts += [text(item[pos:m.start()]), values[m.group(1)]]
                pos = m.end()
            parts.append(text(item[pos:]))
        else:
            parts += [token(ref) for ref in item]
    return "".join(parts)


def compile_items(items: Items, values: dict[str, str], tokenizer: Any) -> str:
    """Jinja for a template field; ``values`` maps the placeholders this field fills to Jinja snippets."""
    return fill_items(items, values, lit, lambda ref: token_ref(ref, tokenizer))


def token_ref(ref: int | str, tokenizer: Any) -> str:
    """A token reference (``bos_token_id``, an id, a token string) as the text that tokenizes to that token."""
    if isinstance(ref, int):
        return lit(tokenizer.convert_ids_to_tokens(ref))
    if ref in _SPECIAL_NAMES:
        return out(_SPECIAL_NAMES[ref])
    return lit(ref)


def split_at(items: Items, name: str) -> tuple[Items, Items]:
    """The items before and after the first ``{{name}}`` placeholder."""
    mark = "{{" + name + "}}"
    for k, item in enumerate(items):
        if isinstance(item, str) and mark in item:
            before, after = item.split(mark, 1)
            return tuple(items[:k]) + (before,), (after,) + tuple(items[k + 1:])
    return tuple(items), ()


def to_jinja(t: DeclarativeTemplate, tokenizer: Any, default_system: str | None = None) -> str:
    """The Jinja chat template equivalent to ``t`` (``default_system`` replaces the template's own default)."""
    system_default = default_system if default_system is not None else t.default_system
    default = "none" if system_default is None else json.dumps(system_default, ensure_ascii=False)
    lines = [
        "{#- written by hone export from the declarative template '" + t.name + "' -#}",
        "{%- if messages and messages[0]['role'] == 'system' -%}",
        "{%- set system = messages[0]['content'] -%}{%- set body = messages[1:] -%}",
        "{%- else -%}",
        "{%- set system = " + default + " -%}{%- set body = messages -%}",
        "{%- endif -%}",
        _system_rules(t, default),
        _head(t, tokenizer),
        "{%- set ns = namespace(first=true, rnd=0, last_query=-1) -%}",
        "{%- for m in body -%}{%- if m['role'] == 'user' -%}{%- set ns.last_query = loop.index0 -%}{%- endif -%}"
        "{%- endfor -%}",
        "{%- for m in body -%}",
        "{%- if m['role'] == 'user' or m['role'] == 'tool' -%}",
        "{%- if m['role'] == 'user' or loop.first or loop.previtem['role'] != 'tool' -%}",
        "{%- if not ns.first -%}" + (fail(f"template '{t.name}' has no multi-turn form") if t.chat_sep is None
                                      else compile_items(t.chat_sep, {}, tokenizer)) + "{%- endif -%}",
        "{%- set ns.first = false -%}",
        "{%- endif -%}",
        "{%- if m['role'] == 'user' -%}",
        _query(t, tokenizer),
        "{%- set ns.rnd = ns.rnd + 1 -%}",
        "{%- else -%}",
        _tool_results(t.tools, tokenizer, t.name),
        "{%- endif -%}",
        "{%- elif m['role'] == 'assistant' -%}",
        compile_items(t.response_prefix, {}, tokenizer),
        _reply(t, tokenizer),
        compile_items(t.suffix, {}, tokenizer),
        "{%- else -%}",
        out(f"raise_exception(\"template '{t.name}': a '\" + m['role'] + \"' message can only come first\")"),
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- if not add_generation_prompt -%}" + compile_items(t.trailer, {}, tokenizer) + "{%- endif -%}",
    ]
    return "\n".join(line for line in lines if line) + "\n"


def _no_tools(name: str) -> str:
    return fail(f"template '{name}' has no tool-call format")


def _head(t: DeclarativeTemplate, tokenizer: Any) -> str:
    """The conversation start: tools block, system prefix or plain prefix (``DeclarativeTemplate._head``)."""
    out_: list[str] = []
    fmt = t.tools
    if fmt is None:
        out_.append("{%- if tools -%}" + _no_tools(t.name))
    else:
        specs = "{%- for tool in tools -%}" + compile_items((fmt.tool,), {"TOOL": out("tool|tojson")}, tokenizer) \
                + "{%- endfor -%}"
        values = {"SYSTEM": out("system or ''"), "TOOLS": specs, "DATE": _DATE}
        with_system = compile_items(fmt.system_prefix, values, tokenizer)
        if fmt.prefix is None:
            out_.append("{%- if tools -%}" + with_system)
        else:
            out_.append("{%- if tools and system is not none -%}" + with_system + "{%- elif tools -%}"
                        + compile_items(fmt.prefix, values, tokenizer))
    if t.system_prefix is not None:
        out_.append("{%- elif system is not none -%}"
                    + compile_items(t.system_prefix, {"SYSTEM": out("system"), "DATE": _DATE}, tokenizer))
    out_.append("{%- else -%}")
    if not any(isinstance(x, str) and "{{SYSTEM}}" in x for x in t.prefix):
        out_.append("{%- if system -%}" + fail(f"template '{t.name}' has no place for a system prompt")
                    + "{%- endif -%}")
    out_.append(compile_items(t.prefix, {"SYSTEM": out("system or ''"), "DATE": _DATE}, tokenizer))
    out_.append("{%- endif -%}")
    return "\n".join(out_)


def _system_rules(t: DeclarativeTemplate, default: str) -> str:
    """``trim``, ``drop_empty_system`` and ``system_in_query`` applied to the system prompt, in hone's order."""
    parts: list[str] = []
    if "system" in t.trim:  # only a given system prompt is trimmed, never the default
        parts.append("{%- if messages and messages[0]['role'] == 'system' -%}{%- set system = system|trim -%}"
                     "{%- endif -%}")
    if t.drop_empty_system:
        parts.append("{%- if not system -%}{%- set system = " + default + " -%}{%- endif -%}")
    if t.system_in_query is not None:  # the system prompt moves into a user turn; the head sees the default
        parts.append("{%- set query_system = system -%}{%- set system = " + default + " -%}")
    return "\n".join(parts)


def _query(t: DeclarativeTemplate, tokenizer: Any) -> str:
    """One user turn: its (trimmed) text, carrying the system prompt where ``system_in_query`` puts it."""
    rounds = {"ROUND0": out("ns.rnd"), "ROUND1": out("ns.rnd + 1")}
    trim = "user" in t.trim
    if t.system_in_query is None:
        text = "m['content']|trim" if trim else "m['content']"
        return compile_items(t.prompt, {"QUERY": out(text), **rounds}, tokenizer)
    if t.system_query not in ("first", "last"):
        from .tokenizer import ExportError  # tokenizer.py imports this module

        raise ExportError(f"template '{t.name}': system_query={t.system_query!r} has no Jinja form "
                          "(use 'first' or 'last')")
    # "last": the query before the reply being generated, i.e. the conversation's last query, as the
    # published templates (Mistral v0.3) write it; a training row's earlier replies saw it on their own query
    where = "ns.rnd == 0" if t.system_query == "first" else "loop.index0 == ns.last_query"
    with_system = "query_system is not none and " + where
    # a trimmed turn that opens with the system block keeps its start (Llama 2 trims the whole turn)
    keep_start = trim and t.system_query == "first"
    parts = ["{%- if " + with_system + " -%}",
             "{%- set q = m['content']" + (".rstrip()" if keep_start else "|trim" if trim else "") + " -%}",
             compile_items(t.prompt, {"QUERY": compile_items((t.system_in_query,), {
                 "SYSTEM": out("query_system"), "QUERY": out("q")}, tokenizer), **rounds}, tokenizer),
             "{%- else -%}",
             compile_items(t.prompt, {"QUERY": out("m['content']|trim" if trim else "m['content']"), **rounds},
                           tokenizer),
             "{%- endif -%}"]
    return "\n".join(parts)


def _tool_results(fmt: ToolFormat | None, tokenizer: Any, name: str) -> str:
    """A run of tool messages: the results prompt opens on the first and closes after the last."""
    if fmt is None:
        return _no_tools(name)
    before, after = split_at(fmt.results_prompt, "QUERY")
    return ("{%- if loop.first or loop.previtem['role'] != 'tool' -%}" + compile_items(before, {}, tokenizer)
            + "{%- endif -%}"
            + compile_items((fmt.result,), {"CONTENT": out("m['content']")}, tokenizer)
            + "{%- if loop.last or loop.nextitem['role'] != 'tool' -%}" + compile_items(after, {}, tokenizer)
            + "{%- endif -%}")


def _reply(t: DeclarativeTemplate, tokenizer: Any) -> str:
    """An assistant reply: optional think block (Qwen3's history rule), text, tool calls."""
    parts = ["{%- set content = (m['content'] or '')" + ("|trim" if "assistant" in t.trim else "") + " -%}"]
    if t.thinking:
        parts += [
            "{%- set reasoning = '' -%}",
            "{%- if '</think>' in content -%}",
            "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}",
            "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}",
            "{%- endif -%}",
            "{%- if loop.index0 > ns.last_query and (loop.last or reasoning) -%}",
            out("'<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n'"),
            "{%- set content = content.lstrip('\\n') -%}",
            "{%- endif -%}",
        ]
    parts.append(out("content"))
    fmt = t.tools
    parts.append("{%- if m['tool_calls'] -%}")
    if fmt is None:
        parts.append(_no_tools(t.name))
    else:
        args = ("{%- if fn['arguments'] is string -%}" + out("fn['arguments']") + "{%- else -%}"
                + out("fn['arguments']|tojson") + "{%- endif -%}") if fmt.raw_string_arguments \
            else out("fn['arguments']|tojson")
        parts += [
            "{%- for call in m['tool_calls'] -%}",
            "{%- set fn = call['function'] if call['function'] is defined else call -%}",
            "{%- if not loop.first or content -%}" + lit(fmt.call_sep) + "{%- endif -%}",
            compile_items((fmt.call,), {"NAME": out("fn['name']"), "ARGUMENTS": args}, tokenizer),
            "{%- endfor -%}",
        ]
    parts.append("{%- endif -%}")
    return "\n".join(p for p in parts if p)
