"""The key tables of the "coming from another tool" pages say what hone really does with each key.

Every row's first cell holds the other tool's setting as `key: value`; the second cell holds what it becomes
(`hone_key: value`, several when one setting sets several), or says `ignored` (accepted, no effect) or
`not accepted` (an error naming the key). Each row is loaded through hone's config loader and compared.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hone.config import load_with_given
from hone.config.aliases import IGNORED
from hone.config.keys import to_dict
from hone.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ("ms-swift.md", "llama-factory.md", "hf-trainer.md")
IGNORED_WORDS = ("ignored", "忽略")
REFUSED_WORDS = ("not accepted", "不接受")
CODE = re.compile(r"`([^`]+)`")


def table_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every body row of every markdown table in ``path``."""
    rows, lines = [], path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or re.fullmatch(r"\|[\s:|-]+\|", line.strip()):
            continue
        if i + 1 < len(lines) and re.fullmatch(r"\|[\s:|-]+\|", lines[i + 1].strip()):
            continue  # a header row
        rows.append((i + 1, [c.strip() for c in line.strip().strip("|").split("|")]))
    return rows


def snippets(cell: str) -> dict:
    """The `key: value` snippets of a cell as one mapping."""
    out: dict = {}
    for code in CODE.findall(cell):
        parsed = yaml.safe_load(code)
        assert isinstance(parsed, dict), f"`{code}` is not a `key: value` snippet"
        out.update(parsed)
    return out


def _same(got, want) -> bool:
    if isinstance(got, (list, tuple)):
        want = want if isinstance(want, (list, tuple)) else [want]
        return list(got) == list(want)
    if isinstance(got, float) and isinstance(want, (int, float)):
        return got == pytest.approx(float(want))
    return got == want


def all_rows():
    for lang in ("en", "zh"):
        for page in PAGES:
            path = DOCS / lang / "migrate" / page
            for line, cells in table_rows(path):
                yield pytest.param(cells, id=f"{lang}/{page}:{line}")


def test_the_pages_exist_with_tables():
    for lang in ("en", "zh"):
        for page in PAGES:
            assert len(table_rows(DOCS / lang / "migrate" / page)) >= 15, f"{lang}/migrate/{page}"


@pytest.mark.parametrize("cells", list(all_rows()))
def test_each_row_does_what_it_says(cells):
    theirs, ours = snippets(cells[0]), cells[1]
    assert theirs, f"row without a `key: value` in its first cell: {cells}"
    if ours.lower().startswith(IGNORED_WORDS):
        assert set(theirs) <= set(IGNORED), f"{sorted(theirs)} are not in hone's ignored keys"
        load_with_given(theirs)  # accepted without error
        return
    if ours.lower().startswith(REFUSED_WORDS):
        with pytest.raises(ConfigError, match="unknown key"):
            load_with_given(theirs)
        return
    want = snippets(ours)
    assert want, f"row without a hone `key: value` in its second cell: {cells}"
    loaded = load_with_given(theirs)
    assert set(loaded.given) == set(want), f"{theirs} sets {sorted(loaded.given)}, the table says {sorted(want)}"
    values = to_dict(loaded.cfg, redact=False)
    for key, value in want.items():
        assert _same(values[key], value), f"{theirs}: {key} is {values[key]!r}, the table says {value!r}"
