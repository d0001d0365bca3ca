"""`auto`: the tokenizer's own Jinja chat template, with each reply found by rendering.

Reply k (message i) is trained on exactly what the template renders when that reply is generated: the
text after ``render(messages[:i], add_generation_prompt=True)`` in ``render(messages[:i + 1])``, less
what the template writes only after a conversation's last message (Phi-3's end-of-text, kept as
unlearned prompt at the end of the row). Where the generation prompt opens something a finished reply
does not render (DeepSeek-R1's ``<think>\n``), the reply starts where the two renderings part.

Most templates render history as a plain prefix, so the row's text equals ``render(messages)``. Some
rewrite history once later turns exist (Qwen3 drops earlier replies' reasoning, Mistral v0.3 moves the
system prompt to the last user turn). There each reply still keeps its generated form, and the prompt
text before it is what the template writes between the previous reply and this one (the user or tool
turns and the generation prompt), found with a probe reply (see ``_tail``). The row stays one sequence:
earlier replies appear in it as they were generated, not in the rewritten form the template would show
at inference time.

Prompt and reply texts are tokenized apart, as at generation time; where no token would straddle a
prompt/reply seam the ids equal ``tokenizer.apply_chat_template``'s.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Sequence

from ..data.conversation import Conversation, Message
from .base import Template, TemplateError, Turns

_PROBE = "HoneProbeReply7f3a9c"  # plain letters: survives trim/strip and tokenizes as ordinary text


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
        """The template's text; it runs in transformers' Jinja sandbox, and an escape attempt is refused."""
        try:
            return self.tokenizer.apply_chat_template(
                [message_dict(m) for m in messages], tools=list(tools) or None, tokenize=False,
                add_generation_prompt=add_generation_prompt)
        except Exception as e:  # jinja errors, sandbox violations, template-raised exceptions
            if type(e).__name__ == "SecurityError":
                raise TemplateError(
                    "the tokenizer's chat template tried to reach Python internals and the sandbox refused it "
                    f"({e}); this template is unsafe: do not use this tokenizer's template, pass a built-in "
                    "one with --template") from None
            raise TemplateError(f"the tokenizer's chat template failed to render: {type(e).__name__}: {e}") from None

    def reply_at(self, msgs: Sequence[Message], i: int,
                 tools: Sequence[dict[str, Any]]) -> tuple[str, str, str]:
        """(prompt, reply, after) text when message ``i`` is generated, as the template renders them.

        ``after`` is what the template writes only after a conversation's last message (Phi-3's end-of-text);
        it is not part of the reply.
        """
        before = self.render(msgs[:i], tools, add_generation_prompt=True)
        upto = self.render(msgs[:i + 1], tools)
        ongoing = self.render(msgs[:i + 1], tools, add_generation_prompt=True)
        end = _common_prefix(upto, ongoing)
        opened = upto.rfind("<", 0, end)
        if opened >= 0 and ">" not in upto[opened:end]:  # never cut inside a marker such as <|endoftext|>
            end = opened
        upto, after = upto[:end], upto[end:]
        if upto.startswith(before):
            return before, upto[len(before):], after
        history = self.render(msgs[:i], tools)
        if upto.startswith(history):  # the generation prompt opens text a finished reply lacks (R1's <think>)
            cut = len(history) + _common_prefix(before[len(history):], upto[len(history):])
            return upto[:cut], upto[cut:], after
        # Adding the reply rewrote what came before it (Mistral v0.3 drops the system prompt): the reply
        # starts after the last user turn and generation prompt, found as the longest end of `before`
        # that the finished rendering repeats (it must reach back over that turn's whole content).
        last = msgs[i - 1].content if i else ""
        for k in range(len(before), len(last), -1):
            at = upto.rfind(before[-k:])
            if at >= 0:
                return before, upto[at + k:], after
        raise TemplateError("the tokenizer's chat template renders a finished reply in a way whose start "
                            "cannot be found; pass a built-in template with --template")

    def encode_turns(self, conv: Conversation, tokenizer: Any) -> Turns:
        msgs, tools = conv.messages, conv.tools
        text, pairs, prev, after = "", [], -1, ""
        for i, m in enumerate(msgs):
            if m.role != "assistant":
                continue
            prompt, reply, after = self.reply_at(msgs, i, tools)
            if not reply:
                raise TemplateError(f"{conv.source}: the tokenizer's chat template renders nothing for reply "
                                    f"{len(pairs) + 1}; pass a built-in template with --template")
            gap = prompt[len(text):] if prompt.startswith(text) else self._tail(msgs, prev, i, tools, prompt,
                                                                                 conv.source)
            pairs.append((gap, reply))
            text, prev = text + gap + reply, i
        full = self.render(msgs, tools)
        last = self.render(msgs[:prev + 1], tools) if prev >= 0 else ""
        trailer = after + (full[len(last):] if full.startswith(last) else "")
        if trailer:
            pairs.append((trailer, ""))
        return [(self._ids(p, tokenizer), self._ids(r, tokenizer)) for p, r in pairs]

    @staticmethod
    def _ids(text: str, tokenizer: Any) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _tail(self, msgs: Sequence[Message], prev: int, i: int, tools: Sequence[dict[str, Any]],
              prompt: str, source: str) -> str:
        """Text between the end of reply ``prev`` and the start of reply ``i``, as the template writes it.

        Reply ``prev`` is replaced by a probe; in the rewritten history the probe is followed by the end
        of that reply (as in its generated form) and then by the text wanted here.
        """
        probe = list(msgs[:i])
        probe[prev] = replace(msgs[prev], content=_PROBE)
        history = self.render(probe, tools, add_generation_prompt=True)
        _, generated, _ = self.reply_at(probe, prev, tools)
        if history.count(_PROBE) == 1 and generated.count(_PROBE) == 1:
            rest = history[history.index(_PROBE) + len(_PROBE):]
            end = generated[generated.index(_PROBE) + len(_PROBE):]
            tail = rest[_common_prefix(rest, end):]
            if prompt.endswith(tail) and (rest.startswith(end) or tail):
                return tail
        raise TemplateError(f"{source}: the tokenizer's chat template rewrites earlier turns in a way whose turn "
                            "boundaries cannot be found; pass a built-in template with --template")

    def encode_prompt(self, messages: Sequence[Message], tokenizer: Any,
                      tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        text = self.render(messages, tools, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k
