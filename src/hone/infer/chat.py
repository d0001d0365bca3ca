"""Interactive chat in the terminal: streaming replies, multi-line input, history, adapters by name.

Ctrl-C while a reply streams stops that reply (what was shown stays in the history) and the session goes on.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

from ..config import GenCfg
from ..data.conversation import Message

HELP = ("commands: /clear (forget the conversation), /system TEXT (set the system prompt), /save FILE (append the "
        "conversation to FILE as messages jsonl), /adapter [NAME] (list or switch adapters), /exit. End a line with "
        "\\ to continue on the next, or wrap several lines in \"\"\"; Ctrl-C stops an answer")


def read_message(read: Callable[[str], str]) -> str:
    """One user message: a line, lines joined while each ends in a backslash, or a block between \"\"\" lines."""
    line = read("\nyou> ")
    if line.strip() == '"""':
        lines = []
        while (more := read("... ")).strip() != '"""':
            lines.append(more)
        return "\n".join(lines)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = read("... ")
    return "\n".join(lines + [line])


def save_conversation(path: Path, msgs: list[Message]) -> None:
    """Append the conversation as one OpenAI-style ``{"messages": [...]}`` line (hone trains on this format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"messages": [{"role": m.role, "content": m.content} for m in msgs]}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def stream_reply(engine: Any, msgs: list[Message], gen: GenCfg, adapter: str | None, out: TextIO) -> str:
    """Print one reply as it comes; Ctrl-C stops it and keeps what was shown."""
    from .engine import Request

    shown: list[str] = []
    if not gen.stream or not hasattr(engine, "submit"):
        try:
            text = engine.complete(msgs, gen, adapter=adapter).text
        except KeyboardInterrupt:
            out.write("[stopped]\n")
            return ""
        out.write(text + "\n")
        return text.strip()
    handle = engine.submit(Request(msgs, gen, adapter))
    try:
        for d in handle:
            out.write(d.text)
            shown.append(d.text)
            out.flush()
    except KeyboardInterrupt:
        handle.cancel()
        out.write(" [stopped]")
        handle.result()  # let the engine finish the row before the next question
    out.write("\n")
    return "".join(shown).strip()


def chat_loop(engine: Any, gen: GenCfg, *, read: Callable[[str], str] = input, out: TextIO | None = None) -> None:
    """Read user turns until /exit or end of input; each reply is streamed and kept in the history."""
    out = out or sys.stdout
    history: list[Message] = []
    system: str | None = None
    adapter: str | None = getattr(engine, "default_adapter", None)
    out.write(f"hone chat — {HELP}\n")
    if len(getattr(engine, "adapters", [])) > 1:
        out.write(f"adapters: {', '.join(engine.adapters)} (now: {adapter or 'base'})\n")
    while True:
        try:
            text = read_message(read).strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        cmd, _, arg = text.partition(" ")
        arg = arg.strip()
        if cmd == "/clear":
            history.clear()
            out.write("(conversation cleared)\n")
        elif cmd == "/system":
            system = arg or None
            history.clear()
            out.write(f"(system prompt {'set' if system else 'cleared'}; conversation cleared)\n")
        elif cmd == "/save":
            if not arg:
                out.write("usage: /save FILE\n")
                continue
            msgs = ([Message("system", system)] if system else []) + history
            try:
                save_conversation(Path(arg).expanduser(), msgs)
                out.write(f"(saved {len(msgs)} messages to {arg})\n")
            except OSError as e:
                out.write(f"cannot write {arg}: {e.strerror or e}\n")
        elif cmd == "/adapter":
            names = list(getattr(engine, "adapters", ["base"]))
            if not arg:
                out.write(f"adapters: {', '.join(names)} (now: {adapter or 'base'})\n")
            elif arg not in names:
                out.write(f"no adapter named {arg!r}; loaded: {', '.join(names)}\n")
            else:
                adapter = arg
                out.write(f"(now answering with {arg}; the conversation goes on)\n")
        elif text.startswith("/"):
            out.write(f"unknown command {cmd}; {HELP}\n")
        else:
            history.append(Message("user", text))
            msgs = ([Message("system", system)] if system else []) + history
            out.write("assistant> ")
            history.append(Message("assistant", stream_reply(engine, msgs, gen, adapter, out)))


def answer_once(engine: Any, gen: GenCfg, prompt: str, system: str | None = None, out: TextIO | None = None) -> str:
    """`--prompt`: one reply, printed (streamed if asked) and returned."""
    out = out or sys.stdout
    msgs = ([Message("system", system)] if system else []) + [Message("user", prompt)]
    return stream_reply(engine, msgs, gen, None, out)
