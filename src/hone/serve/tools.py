"""Tool calls in a reply: which templates write them, and reading them back out of generated text.

Qwen / Hermes-style templates put each call in ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; a
reply in that form is returned as OpenAI ``tool_calls``. Other families keep the text as it is.
"""
from __future__ import annotations

import json
import re
import uuid
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*(?:" + re.escape(CLOSE) + r"|$)", re.S)


def supports_tools(template: Any, tokenizer: Any) -> bool:
    """The template renders tool specs (a declarative tool format, or a tokenizer template that reads ``tools``)."""
    if hasattr(template, "tools"):
        return template.tools is not None
    chat = getattr(tokenizer, "chat_template", None) or ""
    return isinstance(chat, str) and "tools" in chat


def writes_tool_call_tags(template: Any, tokenizer: Any) -> bool:
    """Replies of this template carry calls as ``<tool_call>`` blocks."""
    fmt = getattr(template, "tools", None)
    if fmt is not None:
        return OPEN in getattr(fmt, "call", "")
    chat = getattr(tokenizer, "chat_template", None) or ""
    return isinstance(chat, str) and OPEN in chat


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Split a reply into its text and OpenAI tool calls; a block that is not a call object stays text."""
    start = text.find(OPEN)
    if start < 0:
        return text, []
    calls = []
    for m in _CALL.finditer(text, start):
        try:
            obj = json.loads(m.group(1))
        except ValueError:
            return text, []
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return text, []
        args = obj.get("arguments", obj.get("parameters", {}))
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": obj["name"],
                                   "arguments": args if isinstance(args, str) else json.dumps(args,
                                                                                            ensure_ascii=False)}})
    content = text[:start].strip()
    return (content or None), calls
