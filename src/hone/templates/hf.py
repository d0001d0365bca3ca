"""`auto`: the tokenizer's own Jinja chat template, with assistant spans found exactly.

The conversation is rendered once in full and tokenized once, so the ids equal what
``tokenizer.apply_chat_template`` produces. Each assistant reply's character span is the difference
between rendering the turns before it with the generation prompt and rendering them with the reply;
tokens inside a span are the response, all others prompt.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from ..data.conversation import Conversation, Message
from .base import Template, TemplateError, Turns


def message_dict(m: Message) -> dict[str, Any]:
    """A Message as the OpenAI-style dict chat templates expect."""
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        d["tool_calls"] = [{"type": "function", "function": {
            "name": c.name, "arguments": c.arguments if isinstance(c.arguments, dict) else _loads(c.arguments)}}
            for c in m.tool_calls]
    return d


def _loads(s: str) -> Any:
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        return s


class HFTemplate(Template):
    name = "auto"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "HFTemplate":
        if not getattr(tokenizer, "chat_template", None):
            from . import base

            base._load_builtins()
            raise TemplateError(
                "this model's tokenizer has no chat template, so `template: auto` cannot work. Pass one "
                f"explicitly, e.g. `--template chatml` (built-ins: {', '.join(base.TEMPLATES.names())})")
        if not getattr(tokenizer, "is_fast", False):
            raise TemplateError("`template: auto` needs a fast tokenizer (tokenizer.json) to map tokens to text; "
                                "pass an explicit built-in template instead")
        return cls(tokenizer)

    def render(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] = (),
               add_generation_prompt: bool = False) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                [message_dict(m) for m in messages], tools=list(tools) or None, tokenize=False,
                add_generation_prompt=add_generation_prompt)
        except Exception as e:  # jinja errors, sandbox violations, template-raised exceptions
            raise TemplateError(f"the tokenizer's chat template failed to render: {type(e).__name__}: {e}") from None

    def encode_turns(self, conv: Conversation, tokenizer: Any) -> Turns:
        msgs = conv.messages
        full = self.render(msgs, conv.tools)
        spans: list[tuple[int, int]] = []
        for i, m in enumerate(msgs):
            if m.role != "assistant":
                continue
            before = self.render(msgs[:i], conv.tools, add_generation_prompt=True)
            upto = self.render(msgs[:i + 1], conv.tools)
            if not (upto.startswith(before) and full.startswith(upto)):
                raise TemplateError(
                    f"{conv.source}: the tokenizer's chat template renders earlier turns differently once later "
                    "turns exist (some templates drop or rewrite history), so reply spans cannot be found "
                    "exactly; pass a built-in template with --template")
            spans.append((len(before), len(upto)))
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        return split_by_spans(enc["input_ids"], enc["offset_mapping"], spans)

    def encode_prompt(self, messages: Sequence[Message], tokenizer: Any,
                      tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        text = self.render(messages, tools, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def split_by_spans(ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]) -> Turns:
    """Group token ids into (prompt, response) pairs: a token is response when it starts inside a span."""
    turns: Turns = []
    prompt: list[int] = []
    resp: list[int] = []
    k = 0  # current span
    for tid, (start, end) in zip(ids, offsets):
        while k < len(spans) and start >= spans[k][1]:
            if resp:
                turns.append((prompt, resp))
                prompt, resp = [], []
            k += 1
        if k < len(spans) and spans[k][0] <= start < spans[k][1]:
            resp.append(tid)
        else:
            if resp:  # a prompt token after a response closes that turn
                turns.append((prompt, resp))
                prompt, resp = [], []
            prompt.append(tid)
    if resp or prompt:
        turns.append((prompt, resp))
    return turns
