"""Reading the docs as the checks need them: fenced blocks, the `hone` command lines in shell blocks, and
whether a command or a YAML block is one the current code accepts (parsed and validated, never run)."""
from __future__ import annotations

import io
import re
import shlex
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
LANGS = ("en", "zh")
NOT_HONE = "<!-- not-hone -->"
SHELL_LANGS = ("bash", "sh", "shell", "console")
YAML_LANGS = ("yaml", "yml")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, text, the line its text starts on, and whether the line before the
    fence (blank lines aside) is `<!-- not-hone -->`."""

    path: Path
    lang: str
    text: str
    line: int
    not_hone: bool

    def where(self, offset: int = 0) -> str:
        path = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
        return f"{path}:{self.line + offset}"


def md_files(root: Path = DOCS) -> list[Path]:
    return sorted(root.rglob("*.md"))


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a markdown file (indented ones inside lists, admonitions and tabs too)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        prev = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        out.append(Block(path, m["lang"].lower(), "\n".join(body), i + 2, prev == NOT_HONE))
        i = j + 1
    return out


# ------------------------------------------------------------------------------------------ YAML configs

def config_error(data: Any) -> str | None:
    """Why a parsed YAML document is not a hone config (None when it is one): hone's own loading and
    validation, every section."""
    from hone.config import load_config
    from hone.errors import HoneError

    if not isinstance(data, dict):
        return f"a hone config is a mapping of keys to values, not {type(data).__name__}"
    try:
        load_config(data)
    except HoneError as e:
        return str(e)
    return None


def yaml_block_error(block: Block) -> str | None:
    try:
        data = yaml.safe_load(block.text)
    except yaml.YAMLError as e:
        return f"not valid YAML ({e})"
    return config_error({} if data is None else data)


# ----------------------------------------------------------------------------------------- shell commands

def command_lines(block: Block) -> Iterator[tuple[int, str]]:
    """(line offset, command) for every command of a shell block: in ``console`` blocks only the lines after
    ``$ ``; a trailing backslash continues a command on the next line."""
    console = block.lang == "console"
    lines = block.text.split("\n")
    i = 0
    while i < len(lines):
        start, line = i, lines[i]
        i += 1
        if console:
            if not line.lstrip().startswith("$ "):
                continue
            line = line.lstrip()[2:]
        while line.rstrip().endswith("\\") and i < len(lines):
            line = line.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
        if line.strip() and not line.lstrip().startswith("#"):
            yield start, line.strip()


_OPERATORS = {"&&", "||", "|", ";", "&"}
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_REDIRECT = re.compile(r"^(\d*|&)(>>?|<)(&\d+)?(?P<target>.*)$")
_PLACEHOLDER = re.compile(r"^<[^<>]+>$")


def hone_argvs(command: str) -> list[list[str]] | str:
    """The arguments after ``hone`` of every hone invocation in a shell command line (``a && hone x | tee``,
    ``VAR=1 hone x``, ``python -m hone x``, ``torchrun ... -m hone x``); a message when the line cannot be
    split and is a hone command."""
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError as e:
        return f"cannot split the command line ({e})" if re.search(r"(^|\s)hone\s", command) else []
    segments: list[list[str]] = [[]]
    for tok in tokens:
        if tok in _OPERATORS:
            segments.append([])
        elif tok.endswith(";") and len(tok) > 1:
            segments[-1].append(tok[:-1])
            segments.append([])
        else:
            segments[-1].append(tok)
    out = []
    for seg in segments:
        while seg and _ASSIGN.match(seg[0]):
            seg = seg[1:]
        if seg[:1] == ["hone"]:
            out.append(_without_redirects(seg[1:]))
        elif "-m" in seg and seg.index("-m") + 1 < len(seg) and seg[seg.index("-m") + 1] == "hone":
            out.append(_without_redirects(seg[seg.index("-m") + 2:]))
    return out


def _without_redirects(argv: list[str]) -> list[str]:
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
            continue
        m = _REDIRECT.match(tok)
        if m and not _PLACEHOLDER.match(tok):
            skip = not m["target"] and not m.group(3)  # `> file`: the file is the next token
            continue
        out.append(tok)
    return out


def argv_error(argv: list[str]) -> str | None:
    """Why ``hone ARGV`` would not get past the command line (None when it would): the command's own parser,
    then its ``--key value`` config keys through hone's config loading (an `examples/` YAML it names is
    loaded too). Nothing runs."""
    from hone.cli import _split_config, build_parser
    from hone.config import load_with_given, sections_for
    from hone.docs_ref import takes_config_keys
    from hone.errors import HoneError
    from hone.serve.server import split_foreign

    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            args, rest = build_parser().parse_known_args(argv)
    except SystemExit as e:
        return None if e.code in (0, None) else (err.getvalue().strip().splitlines() or ["argparse error"])[-1]
    name = getattr(args, "command", None)
    if name is None:
        return f"no such command: {' '.join(rest)}" if rest else None
    if name == "serve":  # the run directory is read by the server, before its keys
        rest = rest[1:] if rest and not rest[0].startswith("-") else rest
        rest = split_foreign(rest)[0]
    elif not takes_config_keys(name):
        return f"`hone {name}` takes no option(s) {' '.join(rest)}" if rest else None
    path, tokens = _split_config(rest)
    source = None
    if path is not None and (REPO / path).is_file():
        source = REPO / path
    elif path is not None and path.startswith("examples/"):
        return f"{path} does not exist"
    try:
        load_with_given(source, tokens, sections=sections_for(name))
    except HoneError as e:
        return str(e)
    return None
