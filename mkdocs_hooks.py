"""MkDocs hooks of the hone docs site (listed under `hooks:` in mkdocs.yml).

Chinese pages may wrap their source lines anywhere (short lines make readable diffs), but a browser shows every
line break inside a paragraph as a space, and Chinese has no spaces between words. So before a page is
rendered, a line break between two Chinese characters (or Chinese punctuation) is removed; a break next to a
Latin word stays, where a space belongs anyway. Code blocks and headings are left as they are.
"""
from __future__ import annotations

import re
from typing import Any

_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef\u201c\u201d\u2018\u2019\u2014\u2026"
_ENDS_CJK = re.compile(rf"[{_CJK}]$")
_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)*")  # indentation and blockquote markers before a line's text
_STARTS_CJK = re.compile(rf"^[{_CJK}]")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")


def join_cjk_lines(markdown: str) -> str:
    """``markdown`` with each line break between two CJK characters removed (outside fenced code blocks;
    a heading keeps its own line)."""
    out: list[str] = []
    fence: str | None = None
    for line in markdown.split("\n"):
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip(" \t`~"):
                fence = None
        elif m:
            fence = m.group(1)
        elif out and _ENDS_CJK.search(out[-1]) and not out[-1].lstrip().startswith("#"):
            prefix = _QUOTE.match(line).group(0)
            same_quote = prefix.count(">") == _QUOTE.match(out[-1]).group(0).count(">")
            if same_quote and _STARTS_CJK.match(line[len(prefix):]):
                out[-1] += line[len(prefix):]
                continue
        out.append(line)
    return "\n".join(out)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return join_cjk_lines(markdown)
