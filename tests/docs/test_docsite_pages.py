"""The docs' sources against the code: the same pages in English and Chinese, generated reference pages that
match the code, every YAML block a valid hone config, every `hone` command line one the CLI accepts, and the
quickstart the same as README's. Files are discovered, so new pages are checked without changes here."""
from __future__ import annotations

import pytest

from docs_blocks import (DOCS, LANGS, REPO, SHELL_LANGS, YAML_LANGS, argv_error, blocks, command_lines,
                         config_error, hone_argvs, md_files, yaml_block_error)
from hone.docs_ref import REGENERATE, stale

# README files carry hone commands and configs too; they are checked the same way
CHECKED = md_files() + [REPO / "README.md", REPO / "README_zh.md"]
EXAMPLES = sorted([*REPO.glob("examples/**/*.yaml"), *REPO.glob("examples/**/*.yml")])


def _id(path) -> str:
    return str(path.relative_to(REPO))


def test_every_page_exists_in_both_languages():
    pages = {lang: {p.relative_to(DOCS / lang).as_posix() for p in md_files(DOCS / lang)} for lang in LANGS}
    only = {lang: sorted(pages[lang] - pages[other]) for lang, other in (("en", "zh"), ("zh", "en"))}
    assert not only["en"] and not only["zh"], (
        f"pages only in docs/en: {only['en']}; only in docs/zh: {only['zh']} (every page needs both languages, "
        "under the same relative path)")


def test_generated_reference_is_current():
    differ = stale(DOCS)
    assert not differ, (f"{[_id(p) for p in differ]} differ from what the code generates now; run "
                        f"`PYTHONPATH=src {REGENERATE}` (writes docs/{{en,zh}}/reference/) and commit the result")


@pytest.mark.parametrize("path", CHECKED, ids=_id)
def test_yaml_blocks_are_hone_configs(path):
    bad = [f"{b.where()}: {err}" for b in blocks(path)
           if b.lang in YAML_LANGS and not b.not_hone and (err := yaml_block_error(b))]
    assert not bad, ("YAML blocks that hone does not accept (mark another tool's config with a "
                     "`<!-- not-hone -->` line just before the block):\n" + "\n".join(bad))


@pytest.mark.parametrize("path", EXAMPLES, ids=_id)
def test_example_configs_load(path):
    import yaml

    assert (err := config_error(yaml.safe_load(path.read_text(encoding="utf-8")) or {})) is None, f"{_id(path)}: {err}"


@pytest.mark.parametrize("path", CHECKED, ids=_id)
def test_hone_commands_parse(path):
    bad = []
    for b in blocks(path):
        if b.lang not in SHELL_LANGS:
            continue
        for offset, line in command_lines(b):
            argvs = hone_argvs(line)
            if isinstance(argvs, str):
                bad.append(f"{b.where(offset)}: {argvs}: {line}")
                continue
            bad += [f"{b.where(offset)}: {err}: hone {' '.join(argv)}" for argv in argvs if (err := argv_error(argv))]
    assert not bad, "hone commands the current CLI does not accept:\n" + "\n".join(bad)


def _first_command(path, contains: str = "") -> str:
    """The first command line of the first shell block (with ``contains``) of a page."""
    for b in blocks(path):
        if b.lang in SHELL_LANGS:
            for _, line in command_lines(b):
                if contains in line:
                    return line
    return ""


@pytest.mark.parametrize("readme, home", [("README.md", "en/index.md"), ("README_zh.md", "zh/index.md")])
def test_quickstart_matches_readme(readme, home):
    expected = _first_command(REPO / readme)
    assert "hone train" in expected, f"{readme}: its first shell block should start with the quickstart command"
    assert _first_command(DOCS / home) == expected, (
        f"docs/{home}: the quickstart (first command of the first shell block) must be {readme}'s: {expected}")


def test_docs_site_command_is_the_same_everywhere():
    places = [REPO / "README.md", REPO / "README_zh.md", DOCS / "en/index.md", DOCS / "zh/index.md"]
    found = {_id(p): _first_command(p, "mkdocs") for p in places}
    assert all(found.values()), f"every one of these names the command that builds the docs site: {found}"
    assert len(set(found.values())) == 1, f"the docs site command differs: {found}"
