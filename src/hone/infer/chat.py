"""Interactive chat in the terminal: streaming replies, history, /clear, /system, /exit."""
from __future__ import annotations

import sys
from typing import Any, Callable, TextIO

from ..config import GenCfg
from ..data.conversation import Message

HELP = "commands: /clear (forget the conversation), /system TEXT (set the system prompt), /exit"


def chat_loop(engine: Any, gen: GenCfg, *, read: Callable[[str], str] = input, out: TextIO | None = None) -> None:
    """Read user turns until /exit or end of input; each reply is streamed and kept in the history."""
    out = out or sys.stdout
    history: list[Message] = []
    system: str | None = None
    out.write(f"hone chat — {HELP}\n")
    while True:
        try:
            line = read("\nyou> ")
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/clear":
            history.clear()
            out.write("(conversation cleared)\n")
            continue
        if text.startswith("/system"):
            system = text[len("/system"):].strip() or None
            history.clear()
            out.write(f"(system prompt {'set' if system else 'cleared'}; conversation cleared)\n")
            continue
        if text.startswith("/"):
            out.write(f"unknown command {text.split()[0]}; {HELP}\n")
            continue
        history.append(Message("user", text))
        msgs = ([Message("system", system)] if system else []) + history
        out.write("assistant> ")
        reply = []
        try:
            pieces = engine.stream(msgs, gen) if gen.stream else iter([engine.generate(msgs, gen)])
            for piece in pieces:
                reply.append(piece)
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            out.write(" [interrupted]")
        out.write("\n")
        history.append(Message("assistant", "".join(reply).strip()))


def answer_once(engine: Any, gen: GenCfg, prompt: str, system: str | None = None, out: TextIO | None = None) -> str:
    """`--prompt`: one reply, printed (streamed if asked) and returned."""
    out = out or sys.stdout
    msgs = ([Message("system", system)] if system else []) + [Message("user", prompt)]
    if gen.stream:
        parts = []
        for piece in engine.stream(msgs, gen):
            parts.append(piece)
            out.write(piece)
            out.flush()
        out.write("\n")
        return "".join(parts).strip()
    text = engine.generate(msgs, gen).strip()
    out.write(text + "\n")
    return text
