"""Row formats → Conversation: alpaca, sharegpt, OpenAI messages, ms-swift query/response, plain text.

Pure functions over dicts; no disk access. A row that cannot be read raises ``RowError`` with a
reason code (counted in reports) and a detail a user can act on.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from .conversation import Conversation, Message, ToolCall

FORMATS = ("alpaca", "sharegpt", "messages", "query_response", "text")


class RowError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FormatSpec:
    """How to read one dataset's rows: its format plus LLaMA-Factory style column and tag maps."""

    format: str = "auto"
    columns: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    def col(self, name: str, default: str | None = None) -> str:
        return self.columns.get(name, default or name)


_DEFAULT_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
               "history": "history"},
    "sharegpt": {"messages": "conversations", "system": "system", "tools": "tools"},
    "messages": {"messages": "messages", "system": "system", "tools": "tools"},
    "query_response": {"query": "query", "response": "response", "system": "system", "history": "history"},
    "text": {"prompt": "text"},
}

_SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
    "function_call": "function_call", "observation": "tool", "tool": "tool", "function": "tool",
    "bot": "assistant", "model": "assistant",
}


def detect_format(row: Mapping[str, Any], spec: FormatSpec) -> str:
    """Pick a format from a row's keys (honouring the spec's column map)."""
    if spec.format != "auto":
        return spec.format
    keys = set(row)
    msgs_col = spec.columns.get("messages")
    for col in ([msgs_col] if msgs_col else []) + ["messages", "conversations", "conversation"]:
        value = row.get(col)
        if isinstance(value, list):
            first = next((m for m in value if isinstance(m, Mapping)), {})
            return "sharegpt" if "from" in first or spec.tags.get("role_tag") == "from" else "messages"
    if spec.columns.get("prompt") and spec.columns.get("response"):
        return "alpaca"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"query", "response"} <= keys:
        return "query_response"
    if {"prompt", "response"} <= keys or {"prompt", "completion"} <= keys:
        return "query_response"
    if "text" in keys or spec.columns.get("prompt") in keys and len(keys) == 1:
        return "text"
    raise RowError("unknown_format", f"cannot tell the format from the columns {sorted(keys)}; expected "
                   "alpaca (instruction/output), sharegpt (conversations), messages, query/response or text")


def to_conversation(row: Mapping[str, Any], spec: FormatSpec, source: str = "") -> Conversation:
    if not isinstance(row, Mapping):
        raise RowError("not_an_object", f"a row must be a JSON object, got {type(row).__name__}")
    fmt = detect_format(row, spec)
    reader = _READERS.get(fmt)
    if reader is None:
        raise RowError("unknown_format", f"format '{fmt}' is not one of {', '.join(FORMATS)}")
    cols = {**_DEFAULT_COLUMNS[fmt], **spec.columns}
    return reader(row, cols, spec.tags, source)


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list):  # content parts
        text, reasoning, calls = _parts(value, what)
        if reasoning or calls:
            raise RowError("bad_content", f"{what}: reasoning and tool_call parts are read in messages-format "
                           "rows (role/content) only")
        return text
    raise RowError("bad_content", f"{what} must be text, got {type(value).__name__}")


def _parts(value: list[Any], what: str) -> tuple[str, str, list[ToolCall]]:
    """Text, reasoning and tool calls of a content-part list.

    Both spellings are read: OpenAI's ``{"type": "text", "text": ...}`` and LLaMA-Factory's
    ``{"type": "text" | "reasoning" | "tool_call", "value": ...}``.
    """
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for k, p in enumerate(value):
        if isinstance(p, str):
            text.append(p)
            continue
        kind = p.get("type", "text") if isinstance(p, Mapping) else None
        body = p.get("text", p.get("value")) if isinstance(p, Mapping) else None
        if kind in ("text", "reasoning", "thinking", "tool_call") and isinstance(body, str):
            if kind == "text":
                text.append(body)
            elif kind == "tool_call":
                calls.append(_part_call(body, f"{what}, part {k}"))
            else:
                reasoning.append(body)
        else:
            raise RowError("bad_content", f"{what}, part {k}: only text, reasoning and tool_call parts with a "
                           f"string 'text' or 'value' are supported (images, audio and video are not), got {p!r:.80}")
    return "".join(text), "".join(reasoning), calls


def _part_call(body: str, what: str) -> ToolCall:
    call = _parse_arguments(body)
    if not isinstance(call, dict) or "name" not in call:
        raise RowError("bad_tool_call", f"{what}: a tool_call part must be JSON with a 'name' and 'arguments'")
    return ToolCall(str(call["name"]), _parse_arguments(call.get("arguments", {})))


def _weight(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RowError("bad_weight", f"{what}: loss_weight must be a number >= 0, got {value!r:.40}")
    try:
        w = float(value)
    except ValueError:
        raise RowError("bad_weight", f"{what}: loss_weight must be a number >= 0, got {value!r:.40}") from None
    if not w >= 0 or w == float("inf"):
        raise RowError("bad_weight", f"{what}: loss_weight must be a finite number >= 0, got {value!r:.40}")
    return w


def _history(value: Any) -> list[Message]:
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError("bad_history", "history is a string that is not JSON") from None
    out: list[Message] = []
    if not isinstance(value, list):
        raise RowError("bad_history", "history must be a list of [query, response] pairs")
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RowError("bad_history", f"history item {i} must be a [query, response] pair")
        out += [Message("user", _text(pair[0], f"history[{i}][0]")),
                Message("assistant", _text(pair[1], f"history[{i}][1]"))]
    return out


def _system(row: Mapping[str, Any], cols: Mapping[str, str]) -> list[Message]:
    s = row.get(cols.get("system", "system"))
    if s is None or s == "":
        return []
    return [Message("system", _text(s, "system"))]


def _tools(value: Any) -> tuple[dict[str, Any], ...]:
    if value in (None, "", []):
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError("bad_tools", "the tools column is a string that is not JSON") from None
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise RowError("bad_tools", "tools must be a list of JSON objects")
    return tuple(dict(t) for t in value)


def _require(row: Mapping[str, Any], col: str) -> Any:
    if col not in row:
        raise RowError("missing_field", f"the row has no '{col}' field")
    if row[col] is None:
        raise RowError("missing_field", f"the row's '{col}' field is null")
    return row[col]


def _read_alpaca(row, cols, tags, source) -> Conversation:
    prompt = _text(_require(row, cols["prompt"]), cols["prompt"])
    query = _text(row.get(cols.get("query", "input")), cols.get("query", "input"))
    response = _require(row, cols["response"])
    if isinstance(response, list):
        raise RowError("bad_content", f"'{cols['response']}' is a list (a ranking row?); SFT needs one reply")
    user = "\n".join(p for p in (prompt, query) if p)
    msgs = _system(row, cols) + _history(row.get(cols.get("history", "history")))
    msgs += [Message("user", user), Message("assistant", _text(response, cols["response"]))]
    return Conversation(tuple(msgs), _tools(row.get(cols.get("tools", "tools"))), source=source)


def _read_query_response(row, cols, tags, source) -> Conversation:
    qcol = cols["query"] if cols["query"] in row else "prompt"
    rcol = cols["response"] if cols["response"] in row else "completion" if "completion" in row else cols["response"]
    msgs = _system(row, cols) + _history(row.get(cols.get("history", "history")))
    msgs += [Message("user", _text(_require(row, qcol), qcol)),
             Message("assistant", _text(_require(row, rcol), rcol))]
    return Conversation(tuple(msgs), _tools(row.get(cols.get("tools", "tools"))), source=source)


def _read_text(row, cols, tags, source) -> Conversation:
    col = cols.get("prompt", "text")
    return Conversation(text=_text(_require(row, col), col), source=source)


def _messages_list(row, cols) -> list:
    col = cols["messages"]
    if col not in row:
        for alt in ("messages", "conversations", "conversation"):
            if alt in row:
                col = alt
                break
    value = _require(row, col)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError("bad_messages", f"'{col}' is a string that is not JSON") from None
    if not isinstance(value, list):
        raise RowError("bad_messages", f"'{col}' must be a list of messages, got {type(value).__name__}")
    return value


def _parse_arguments(args: Any) -> dict[str, Any] | str:
    if isinstance(args, str):
        try:
            parsed = json.loads(args)
            return parsed if isinstance(parsed, dict) else args
        except json.JSONDecodeError:
            return args
    return args if isinstance(args, dict) else str(args)


def _turns(row, cols, role_tag: str, what: str) -> Iterator[tuple[int, Mapping]]:
    """The row's turns, each checked to be an object with a role."""
    for i, m in enumerate(_messages_list(row, cols)):
        if not isinstance(m, Mapping):
            raise RowError("bad_messages", f"{what} {i} must be an object, got {type(m).__name__}")
        if role_tag not in m:
            raise RowError("missing_field", f"{what} {i} has no '{role_tag}'")
        yield i, m


def _read_messages(row, cols, tags, source) -> Conversation:
    role_tag, content_tag = tags.get("role_tag", "role"), tags.get("content_tag", "content")
    role_map = {tags.get("user_tag", "user"): "user", tags.get("assistant_tag", "assistant"): "assistant",
                tags.get("system_tag", "system"): "system", tags.get("observation_tag", "tool"): "tool",
                "tool": "tool", "function": "tool", "user": "user", "assistant": "assistant", "system": "system"}
    msgs = _system(row, cols)
    for i, m in _turns(row, cols, role_tag, "message"):
        role = role_map.get(m[role_tag], m[role_tag])
        calls = []
        for c in m.get("tool_calls") or []:
            fn = c.get("function", c) if isinstance(c, Mapping) else None
            if not isinstance(fn, Mapping) or "name" not in fn:
                raise RowError("bad_tool_call", f"message {i} has a tool call without a function name")
            calls.append(ToolCall(str(fn["name"]), _parse_arguments(fn.get("arguments", {}))))
        content = m.get(content_tag)
        if content is None and not calls:
            what = "is null" if content_tag in m else "is missing"
            raise RowError("missing_field", f"message {i} ({role}): '{content_tag}' {what}")
        if isinstance(content, list):
            text, reasoning, part_calls = _parts(content, f"message {i} content")
            calls += part_calls
            if reasoning:  # the templates' own spelling of a reasoning block
                text = f"<think>\n{reasoning.strip(chr(10))}\n</think>\n\n{text}"
        else:
            text = _text(content, f"message {i} content")
        train = m.get("train", m.get("loss"))
        weight = _weight(m.get("loss_weight", m.get("weight", 1.0)), f"message {i}")
        msgs.append(Message(str(role), text, tuple(calls), None if train is None else bool(train), weight))
    return Conversation(tuple(msgs), _tools(row.get(cols.get("tools", "tools"))), source=source)


def _read_sharegpt(row, cols, tags, source) -> Conversation:
    role_tag, content_tag = tags.get("role_tag", "from"), tags.get("content_tag", "value")
    custom = {tags[k]: v for k, v in (("user_tag", "user"), ("assistant_tag", "assistant"),
                                        ("observation_tag", "tool"), ("function_tag", "function_call"),
                                        ("system_tag", "system")) if k in tags}
    msgs = _system(row, cols)
    for i, m in _turns(row, cols, role_tag, "turn"):
        if m.get(content_tag) is None:
            raise RowError("missing_field", f"turn {i} has no '{content_tag}'")
        raw_role = m[role_tag]
        role = custom.get(raw_role) or _SHAREGPT_ROLES.get(str(raw_role).lower())
        if role is None:
            raise RowError("unknown_role", f"turn {i} has role '{raw_role}'; expected human, gpt, system, "
                           "function_call or observation")
        value = _text(m[content_tag], f"turn {i}")
        if role == "function_call":
            call = _parse_arguments(value)
            if not isinstance(call, dict) or "name" not in call:
                raise RowError("bad_tool_call", f"turn {i}: a function_call must be JSON with a 'name'")
            msgs.append(Message("assistant", "", (ToolCall(str(call["name"]), _parse_arguments(
                call.get("arguments", {}))),)))
        else:
            msgs.append(Message(role, value))
    return Conversation(tuple(msgs), _tools(row.get(cols.get("tools", "tools"))), source=source)


_READERS = {"alpaca": _read_alpaca, "sharegpt": _read_sharegpt, "messages": _read_messages,
            "query_response": _read_query_response, "text": _read_text}

_CJK = re.compile(r"[\u4e00-\u9fff]")


def fill_placeholders(conv: Conversation, name: tuple[str, ...], author: tuple[str, ...]) -> Conversation:
    """Replace ``{{name}}`` / ``{{author}}`` (the identity data's placeholders).

    With two values (Chinese, English) the Chinese one fills rows written in Chinese.
    """
    if not name and not author:
        return conv

    def pick(values: tuple[str, ...], text: str) -> str | None:
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        return values[0] if _CJK.search(text) else values[1]

    def sub(text: str, whole: str) -> str:
        for key, values in (("name", name), ("author", author)):
            v = pick(values, whole)
            if v is not None:
                text = text.replace("{{" + key + "}}", v)
        return text

    if conv.is_text:
        return Conversation(text=sub(conv.text or "", conv.text or ""), source=conv.source, meta=conv.meta)
    whole = "".join(m.content for m in conv.messages)
    msgs = tuple(Message(m.role, sub(m.content, whole), m.tool_calls, m.train, m.loss_weight) for m in conv.messages)
    return Conversation(msgs, conv.tools, source=conv.source, meta=conv.meta)
