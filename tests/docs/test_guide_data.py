"""guide/data.md: its example rows are real and readable, and the `hone data check` / `preview` output it shows is
what those commands print for the quickstart (with the real SmolLM2 tokenizer and its own chat template)."""
from __future__ import annotations

import json

import pytest

from guide_pages import LANGS, REPO, blocks, console_output, page
from hone.config import load_config
from hone.data.formats import FormatSpec, to_conversation

DEMO = REPO / "src" / "hone" / "resources" / "datasets"


def demo_rows() -> list[dict]:
    rows = []
    for path in DEMO.iterdir():
        if path.suffix == ".json" and path.name != "dataset_info.json":
            rows += json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def example_rows(lang: str) -> list[dict]:
    """The one-row ```json examples of the formats section (the dataset_info.json example is not a row)."""
    rows = [json.loads(b) for b in blocks(page(lang, "guide/data.md"), "json")]
    return [r for r in rows if not any(isinstance(v, dict) and "file_name" in v for v in r.values())]


@pytest.mark.parametrize("lang", LANGS)
def test_every_example_row_is_read_as_its_format(lang):
    rows = example_rows(lang)
    assert len(rows) == 6
    kinds = set()
    for row in rows:
        conv = to_conversation(row, FormatSpec())
        kinds.add("text" if conv.is_text else next(iter(row)))
    assert kinds == {"instruction", "conversations", "messages", "query", "text"}


@pytest.mark.parametrize("lang", LANGS)
def test_example_rows_come_from_the_demo_sets(lang):
    demo = demo_rows()
    by_key = {json.dumps(r, sort_keys=True, ensure_ascii=False) for r in demo}
    rows = example_rows(lang)
    verbatim = [r for r in rows if "instruction" in r or "conversations" in r or "text" in r]
    for row in verbatim:
        assert json.dumps(row, sort_keys=True, ensure_ascii=False) in by_key, row
    # the messages and query/response examples are demo rows rewritten: the same conversation
    alpaca = {r["instruction"]: r for r in demo if "instruction" in r}
    for row in rows:
        if "messages" in row:
            twin = alpaca[row["messages"][0]["content"]]
        elif "query" in row:
            twin = alpaca[row["query"].split("\n")[0]]
        else:
            continue
        assert to_conversation(row, FormatSpec()).messages == to_conversation(twin, FormatSpec()).messages


@pytest.fixture(scope="module")
def quickstart(tokenizer):
    import os

    from hone.templates.hf import HFTemplate

    old = os.getcwd()
    os.chdir(REPO)  # the quickstart names its data relative to the repository
    try:
        cfg = load_config(str(REPO / "examples" / "quickstart.yaml"), sections=("model", "data", "train"))
        yield cfg, tokenizer, HFTemplate.from_tokenizer(tokenizer)
    finally:
        os.chdir(old)


@pytest.mark.parametrize("lang", LANGS)
def test_data_check_output_is_what_the_command_prints(quickstart, lang):
    from hone.data.report import check_report

    cfg, tokenizer, template = quickstart
    real = "\n".join(line.rstrip() for line in check_report(cfg, tokenizer, template).splitlines())
    assert console_output(page(lang, "guide/data.md"), "hone data check examples/quickstart.yaml") == real


@pytest.mark.parametrize("lang", LANGS)
def test_data_preview_output_is_what_the_command_prints(quickstart, lang):
    from hone.data.report import preview

    cfg, tokenizer, template = quickstart
    real = preview(cfg, n=1, tokenizer=tokenizer, template=template).rstrip()
    shown = console_output(page(lang, "guide/data.md"), "hone data preview examples/quickstart.yaml -n 1 --no-color")
    assert shown == real


@pytest.mark.parametrize("lang", LANGS)
def test_yaml_snippets_load(lang):
    import yaml

    for rel in ("guide/data.md", "guide/models.md", "guide/train.md"):
        for body in blocks(page(lang, rel), "yaml"):
            load_config(yaml.safe_load(body))
