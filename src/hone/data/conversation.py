"""The one canonical shape every data format is read into."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] | str


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    train: bool | None = None
    """Per-turn loss switch carried by the data (assistant turns only); None follows ``loss_scope``."""
    loss_weight: float = 1.0


@dataclass(frozen=True)
class Conversation:
    """A system prompt, alternating turns and tool specs; or, for pre-training, plain ``text``."""

    messages: tuple[Message, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    text: str | None = None
    source: str = ""
    """Where the row came from (``file:line`` or ``file#row``), for error messages."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def system(self) -> str | None:
        if self.messages and self.messages[0].role == "system":
            return self.messages[0].content
        return None

    @property
    def is_text(self) -> bool:
        return self.text is not None


def check_conversation(conv: Conversation) -> str | None:
    """Why a conversation cannot be trained on (a reason code and detail), or None when it can."""
    if conv.is_text:
        return None if conv.text and conv.text.strip() else "empty_text: the text is empty"
    msgs = conv.messages
    if not msgs:
        return "no_messages: the row has no messages"
    for i, m in enumerate(msgs):
        if m.role not in ROLES:
            return f"unknown_role: message {i} has role '{m.role}' (use system, user, assistant or tool)"
        if m.role == "system" and i != 0:
            return f"system_not_first: message {i} is a system message; only the first may be"
    body = [m for m in msgs if m.role != "system"]
    if not body:
        return "no_turns: the row has a system prompt but no turns"
    if body[0].role not in ("user",):
        return f"order: the first turn is '{body[0].role}'; conversations start with a user turn"
    prev = None
    for i, m in enumerate(body):
        if m.role == "user" and prev == "user":
            return f"order: two user turns in a row (turn {i})"
        if m.role == "assistant" and prev == "assistant":
            return f"order: two assistant turns in a row (turn {i})"
        if m.role == "tool" and prev not in ("assistant", "tool"):
            return f"order: a tool result (turn {i}) must follow an assistant tool call"
        if m.role == "assistant" and not m.content.strip() and not m.tool_calls:
            return f"empty_reply: assistant turn {i} is empty"
        prev = m.role
    if not any(m.role == "assistant" for m in body):
        return "no_reply: the row has no assistant reply to learn from"
    if body[-1].role != "assistant":
        return f"no_reply: the last turn is '{body[-1].role}'; a row must end with an assistant reply"
    return None
