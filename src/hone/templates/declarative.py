"""Declarative templates: a chat format written as data (prefix, prompt, chat_sep, suffix).

A template field is a sequence of items. An item is either a string (template text, where strings such as
``<|im_end|>`` become the tokenizer's special tokens) or a list of token references (``'bos_token_id'``,
``'eos_token_id'``, an int id, or a token string that must be one token), as in ``[['eos_token_id']]``.
Placeholders ``{{SYSTEM}}``, ``{{QUERY}}``, ``{{ROUND0}}``, ``{{ROUND1}}``, ``{{DATE}}`` (today, as Llama 3.2 writes it)
(and, in tool formats,
``{{TOOLS}}``, ``{{TOOL}}``, ``{{NAME}}``, ``{{ARGUMENTS}}``, ``{{CONTENT}}``) are filled with data, and data is
always tokenized as plain text: a user who types ``<|im_end|>`` gets the characters, never the special token.

Ids are built segment by segment, so which ids are prompt and which are reply comes from this structure:
each assistant turn is (everything since the previous reply, reply + ``suffix``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence, Union

from ..data.conversation import Conversation, Message, ToolCall
from .base import Template, TemplateError, Turns

Item = Union[str, Sequence[Union[int, str]]]
Items = Sequence[Item]
# A rendered piece: ("lit", template text) | ("text", data) | ("tok", token reference)
Piece = tuple[str, Any]

_PLACEHOLDER = re.compile(r"\{\{(SYSTEM|QUERY|ROUND0|ROUND1|DATE|TOOLS|TOOL|NAME|ARGUMENTS|CONTENT)\}\}")
_MARKUP = re.compile(r"<\|[^|<>\s]+\|>")  # chatml-like markup that must be one token in the tokenizer


@dataclass(frozen=True)
class ToolFormat:
    """How a template writes tool specs, assistant tool calls and tool results."""

    system_prefix: Items
    """Conversation start when tools are given and there is a system prompt: ``{{SYSTEM}}``, ``{{TOOLS}}``."""
    prefix: Items | None = None
    """Conversation start when tools are given and there is no system prompt (None: system_prefix, SYSTEM='')."""
    tool: str = "\n{{TOOL}}"
    """One tool spec; ``{{TOOL}}`` is its JSON. The specs joined fill ``{{TOOLS}}``."""
    call: str = '<tool_call>\n{"name": "{{NAME}}", "arguments": {{ARGUMENTS}}}\n</tool_call>'
    call_sep: str = "\n"
    """Between a reply's text and each tool call (no separator before a call that opens an empty reply)."""
    result: str = "\n<tool_response>\n{{CONTENT}}\n</tool_response>"
    results_prompt: Items = ("<|im_start|>user{{QUERY}}<|im_end|>\n<|im_start|>assistant\n",)
    """A run of tool results plus the generation prompt; ``{{QUERY}}`` is the joined results."""
    raw_string_arguments: bool = True
    """String arguments are written as they are (True) or JSON-quoted like any other value (False)."""


class DeclarativeTemplate(Template):
    """A template given as data, in the shape of ms-swift's Template(prefix, prompt, chat_sep, suffix).

    ``prefix`` starts a conversation (``system_prefix`` instead when there is a system prompt), ``prompt``
    is one user round up to and including the generation prompt, ``chat_sep`` goes between a reply and the
    next round, and ``suffix`` ends every reply; it is learned with the reply (the end-of-turn marker).
    ``response_prefix`` is learned text before each reply, ``trailer`` comes after the last reply and is not
    learned. ``chat_sep=None`` means the format has no multi-turn form.

    ``trim`` names the roles whose content the model's template strips of surrounding whitespace (Llama,
    Gemma, MiniCPM). ``drop_empty_system`` treats an empty system prompt as none (Phi-3.5).
    ``system_in_query`` writes the system prompt inside a user turn: the first one (``system_query="first"``,
    Llama 2, where the template then trims the whole turn) or the one before the reply being generated
    (``"last"``, Mistral v0.3): a generation prompt has it on its last query, and a training row on every
    query, since each reply was generated after such a turn.
    """

    def __init__(self, prefix: Items, prompt: Items, chat_sep: Items | None = (), suffix: Items = (("eos_token_id",),),
                 *, system_prefix: Items | None = None, default_system: str | None = None,
                 stop_words: Sequence[str] = (), tools: ToolFormat | None = None, response_prefix: Items = (),
                 trailer: Items = (), special_tokens: Sequence[str] = (), thinking: bool = False,
                 trim: Sequence[str] = (), drop_empty_system: bool = False, system_in_query: str | None = None,
                 system_query: str = "last", name: str = "custom") -> None:
        self.prefix, self.prompt, self.suffix = _items(prefix), _items(prompt), _items(suffix)
        self.chat_sep = None if chat_sep is None else _items(chat_sep)
        self.system_prefix = None if system_prefix is None else _items(system_prefix)
        self.default_system, self.tools, self.name = default_system, tools, name
        self.response_prefix, self.trailer = _items(response_prefix), _items(trailer)
        self._stop_words, self.special_tokens = tuple(stop_words), tuple(special_tokens)
        self.thinking = thinking
        self.trim, self.drop_empty_system = frozenset(trim), drop_empty_system
        self.system_in_query, self.system_query = system_in_query, system_query
        """With ``{{SYSTEM}}`` and ``{{QUERY}}``: how a query carrying the system prompt is written."""
        """Qwen3's rule: the last reply after the last user query carries a (possibly empty) think block;
        earlier replies lose theirs."""
        self._checked: set[tuple[int, int]] = set()
        if "{{QUERY}}" not in "".join(i for i in self.prompt if isinstance(i, str)):
            raise TemplateError(f"template '{name}': prompt has no {{{{QUERY}}}} placeholder")

    def __repr__(self) -> str:
        return f"DeclarativeTemplate(name={self.name!r}, prompt={self.prompt!r})"

    def stop_words(self, tokenizer: Any) -> list[str]:
        return list(self._stop_words)

    # ---- rendering to pieces -------------------------------------------------------------------------

    def pieces(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] = (), *,
               generation: bool = False) -> list[tuple[list[Piece], list[Piece]]]:
        """(prompt pieces, response pieces) per assistant turn; with ``generation`` one final prompt."""
        msgs = list(messages)
        system = msgs[0].content if msgs and msgs[0].role == "system" else None
        body = msgs[1:] if system is not None else msgs
        system = self._strip("system", system)
        if self.drop_empty_system and not system:
            system = None
        query_system, last_user = None, -1
        if self.system_in_query is not None:
            query_system, system = system if system is not None else self.default_system, None
            last_user = max((k for k, m in enumerate(body) if m.role == "user"), default=-1)
        turns: list[tuple[list[Piece], list[Piece]]] = []
        cur = self._head(system, tools)
        rnd, i, first = 0, 0, True
        last_query = max((k for k, m in enumerate(body) if m.role == "user"), default=-1)
        while i < len(body):
            m = body[i]
            if m.role in ("user", "tool"):
                if not first:
                    if self.chat_sep is None:
                        raise TemplateError(f"template '{self.name}' has no multi-turn form (chat_sep=None)")
                    cur += _fill(self.chat_sep, {})
                if m.role == "user":
                    with_system = query_system is not None and (
                        rnd == 0 if self.system_query == "first" else not generation or i == last_user)
                    text = m.content
                    if "user" in self.trim:  # a trimmed turn that opens with the system block keeps its start
                        text = text.rstrip() if with_system and self.system_query == "first" else text.strip()
                    query: list[Piece] = [("text", text)]
                    if with_system:
                        query = _fill_str(self.system_in_query or "", {"SYSTEM": [("text", query_system)],
                                                                       "QUERY": query})
                    cur += _fill(self.prompt, {"QUERY": query, "ROUND0": [("lit", str(rnd))],
                                               "ROUND1": [("lit", str(rnd + 1))]})
                    rnd, i = rnd + 1, i + 1
                else:
                    fmt = self._tool_format()
                    results: list[Piece] = []
                    while i < len(body) and body[i].role == "tool":
                        results += _fill_str(fmt.result, {"CONTENT": [("text", body[i].content)]})
                        i += 1
                    cur += _fill(fmt.results_prompt, {"QUERY": results})
                first = False
            elif m.role == "assistant":
                reply = self._reply(m, late=i > last_query or not generation, last=i == len(body) - 1 or not generation)
                turns.append((cur, _fill(self.response_prefix, {}) + reply + _fill(self.suffix, {})))
                cur, i = [], i + 1
            else:
                raise TemplateError(f"template '{self.name}': a '{m.role}' message can only come first")
        if generation:
            turns.append((cur, []))
        elif cur or self.trailer:
            turns.append((cur + _fill(self.trailer, {}), []))
        return turns

    def _head(self, system: str | None, tools: Sequence[dict[str, Any]]) -> list[Piece]:
        if system is None:
            system = self.default_system
        if tools:
            fmt = self._tool_format()
            specs: list[Piece] = []
            for t in tools:
                specs += _fill_str(fmt.tool, {"TOOL": [("text", json.dumps(t, ensure_ascii=False))]})
            items = fmt.system_prefix if system is not None or fmt.prefix is None else fmt.prefix
            return _fill(_items(items), {"SYSTEM": [("text", system or "")], "TOOLS": specs, "DATE": _today()})
        if system is not None and self.system_prefix is not None:
            return _fill(self.system_prefix, {"SYSTEM": [("text", system)], "DATE": _today()})
        if system and not any(isinstance(x, str) and "{{SYSTEM}}" in x for x in self.prefix):
            raise TemplateError(f"template '{self.name}' has no place for a system prompt; drop the system "
                                "prompt or pick a template that supports one")
        return _fill(self.prefix, {"SYSTEM": [("text", system or "")], "DATE": _today()})

    def _strip(self, role: str, text: str | None) -> str | None:
        return text.strip() if text is not None and role in self.trim else text

    def _tool_format(self) -> ToolFormat:
        if self.tools is None:
            raise TemplateError(f"template '{self.name}' has no tool-call format; use a template that supports "
                                "tools (e.g. qwen, qwen3, chatml) or `auto` with a tool-aware tokenizer")
        return self.tools

    def _reply(self, m: Message, *, late: bool, last: bool) -> list[Piece]:
        content = self._strip("assistant", m.content) or ""
        out: list[Piece] = []
        if self.thinking:
            reasoning = ""
            if "</think>" in content:  # the template's own split, kept exact
                reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
                content = content.split("</think>")[-1].lstrip("\n")
            if late and (last or reasoning):
                out += [("lit", "<think>\n"), ("text", reasoning.strip("\n")), ("lit", "\n</think>\n\n")]
                content = content.lstrip("\n")
        out.append(("text", content))
        if m.tool_calls:
            fmt = self._tool_format()
            for k, call in enumerate(m.tool_calls):
                if k or content:
                    out.append(("lit", fmt.call_sep))
                out += _fill_str(fmt.call, {"NAME": [("text", call.name)],
                                            "ARGUMENTS": [("text", _arguments(call, fmt))]})
        return out

    # ---- pieces to text and ids ----------------------------------------------------------------------

    def render(self, pieces: Sequence[Piece], tokenizer: Any) -> str:
        """The text a list of pieces stands for (token references written as their token strings)."""
        return "".join(v if kind != "tok" else _token_text(v, tokenizer) for kind, v in pieces)

    def to_ids(self, pieces: Sequence[Piece], tokenizer: Any) -> list[int]:
        """Token ids: special tokens only where the template writes them, data always as plain text.

        Literal special tokens cut the text into runs; each run (template text and data together) is
        tokenized once with special-token matching off, which is what tokenizing the whole rendered string
        does for data that holds no special-token strings.
        """
        self._check(tokenizer)
        specials = _special_pattern(tokenizer)
        ids: list[int] = []
        run: list[str] = []

        def flush() -> None:
            if run:
                ids.extend(tokenizer("".join(run), add_special_tokens=False, split_special_tokens=True)["input_ids"])
                run.clear()

        for kind, value in _merge(pieces):
            if kind == "tok":
                flush()
                ids.append(_token_id(value, tokenizer, self.name))
            elif kind == "text" or specials is None:
                run.append(value)
            else:
                for k, part in enumerate(specials.split(value)):
                    if k % 2:  # a captured special token
                        flush()
                        ids.append(int(tokenizer.convert_tokens_to_ids(part)))
                    elif part:
                        run.append(part)
        flush()
        return ids

    def encode_turns(self, conv: Conversation, tokenizer: Any) -> Turns:
        return [(self.to_ids(p, tokenizer), self.to_ids(r, tokenizer))
                for p, r in self.pieces(conv.messages, conv.tools)]

    def encode_prompt(self, messages: Sequence[Message], tokenizer: Any,
                      tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        return [t for p, r in self.pieces(messages, tools, generation=True) for t in self.to_ids(p + r, tokenizer)]

    def _check(self, tokenizer: Any) -> None:
        """Every special-token string the template writes must be one token of this tokenizer."""
        key = (id(tokenizer), len(tokenizer))
        if key in self._checked:
            return
        fields = [self.prefix, self.prompt, self.suffix, self.response_prefix, self.trailer,
                  self.chat_sep or (), self.system_prefix or ()]
        text = "".join(i for f in fields for i in f if isinstance(i, str))
        needed = set(_MARKUP.findall(text)) | set(self.special_tokens)
        for tok in sorted(needed):
            if len(tokenizer(tok, add_special_tokens=False)["input_ids"]) != 1:
                raise TemplateError(f"template '{self.name}' writes '{tok}', which this tokenizer does not have "
                                    "as a single token; the template does not fit this model (try `auto`)")
        self._checked.add(key)


def _today() -> list[Piece]:
    """Today's date as transformers' ``strftime_now("%d %b %Y")`` gives it to Llama 3.2's template."""
    return [("lit", datetime.now().strftime("%d %b %Y"))]


def _items(value: Items | str) -> tuple[Item, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _fill(items: Items, values: dict[str, list[Piece]]) -> list[Piece]:
    out: list[Piece] = []
    for item in items:
        if isinstance(item, str):
            out += _fill_str(item, values)
        else:
            out += [("tok", ref) for ref in item]
    return out


def _fill_str(text: str, values: dict[str, list[Piece]]) -> list[Piece]:
    out: list[Piece] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.group(1) not in values:
            continue  # a placeholder this field does not use stays literal text
        out.append(("lit", text[pos:m.start()]))
        out += values[m.group(1)]
        pos = m.end()
    out.append(("lit", text[pos:]))
    return [p for p in out if p[0] == "tok" or p[1]]


def _merge(pieces: Sequence[Piece]) -> list[Piece]:
    """Join neighbouring pieces of the same kind so tokenization sees whole strings."""
    out: list[Piece] = []
    for kind, v in pieces:
        if out and kind != "tok" and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + v)
        else:
            out.append((kind, v))
    return out


def _arguments(call: ToolCall, fmt: ToolFormat) -> str:
    if isinstance(call.arguments, str) and fmt.raw_string_arguments:
        return call.arguments
    return json.dumps(call.arguments, ensure_ascii=False)


_SPECIALS: dict[tuple[int, int], "re.Pattern[str] | None"] = {}


def _special_pattern(tokenizer: Any) -> "re.Pattern[str] | None":
    """A regex capturing the tokenizer's special added tokens, longest first (cached per tokenizer)."""
    key = (id(tokenizer), len(tokenizer))
    if key not in _SPECIALS:
        toks = {str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
        toks |= {str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if getattr(t, "special", False)}
        toks.discard("")
        alts = "|".join(re.escape(t) for t in sorted(toks, key=len, reverse=True))
        _SPECIALS[key] = re.compile(f"({alts})") if alts else None
    return _SPECIALS[key]


def _token_id(ref: int | str, tokenizer: Any, name: str) -> int:
    if isinstance(ref, int):
        return ref
    if ref in ("bos_token_id", "eos_token_id", "pad_token_id"):
        tid = getattr(tokenizer, ref, None)
        if tid is None:
            raise TemplateError(f"template '{name}' needs the tokenizer's {ref[:-3]}, which it does not define")
        return int(tid)
    ids = tokenizer(ref, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise TemplateError(f"template '{name}' names the token '{ref}', which is not a single token here")
    return int(ids[0])


def _token_text(ref: int | str, tokenizer: Any) -> str:
    if isinstance(ref, int):
        return tokenizer.convert_ids_to_tokens(ref)
    if ref in ("bos_token_id", "eos_token_id", "pad_token_id"):
        return getattr(tokenizer, ref[:-3]) or ""
    return ref
