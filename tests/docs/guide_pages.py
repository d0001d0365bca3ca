"""Reading the guide pages for their tests: fenced blocks, headings, and hone's own message texts."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SRC = REPO / "src" / "hone"
LANGS = ("en", "zh")
PAGES = ("guide/index.md", "guide/data.md", "guide/models.md", "guide/train.md", "guide/monitor.md",
         "guide/evaluate.md", "glossary.md", "choosing-a-tool.md", "faq.md")

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def page(lang: str, rel: str) -> str:
    return (DOCS / lang / rel).read_text(encoding="utf-8")


def blocks(text: str, kind: str) -> list[str]:
    """The bodies of the fenced blocks of one kind (``text``, ``json``, ``console`` ...), in order."""
    return [body for k, body in _FENCE.findall(text) if k == kind]


def console_output(text: str, command: str) -> str:
    """The output lines that follow ``$ command`` in a console block (up to the next command or the end)."""
    for body in blocks(text, "console"):
        lines = body.splitlines()
        if f"$ {command}" in lines:
            out = []
            for line in lines[lines.index(f"$ {command}") + 1:]:
                if line.startswith("$ "):
                    break
                out.append(line.rstrip())
            return "\n".join(out).strip("\n")
    raise AssertionError(f"no console block runs `{command}`")


def headings(text: str, level: int = 2) -> list[str]:
    mark = "#" * level + " "
    return [line[len(mark):].strip() for line in text.splitlines() if line.startswith(mark)]


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s)


def source_strings() -> str:
    """Every string literal under src/hone, split where a value is formatted in, joined by NUL.

    f-strings contribute their literal parts; ``%s``-style placeholders split a literal too.
    """
    pieces: list[str] = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                parts = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                parts = [node.value]
            else:
                continue
            for part in parts:
                pieces += re.split(r"%[-+ #0]*\d*(?:\.\d+)?[sdfr]", part)
    return "\0".join(_norm(p) for p in pieces if p.strip())


def uncovered(fragment: str, corpus: str, min_len: int = 6) -> str | None:
    """None when ``fragment`` is made of runs of source text (each >= min_len characters, except a short
    first run such as the quote after a value); else the part that is not."""
    frag = _norm(fragment)
    i = 0
    while i < len(frag):
        j = i
        while j < len(frag) and frag[i:j + 1] in corpus:
            j += 1
        if j == i or (j - i < min_len and i > 0 and j < len(frag)):
            return frag[i:]
        i = j
    return None
