"""The guide pages exist in both languages, the flowchart renders offline, the glossary has the same terms in
English and Chinese, and the step list and the flowchart tell the same steps."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from guide_pages import DOCS, LANGS, PAGES, headings, page

SVG = "assets/guide-flow.svg"
NS = "{http://www.w3.org/2000/svg}"
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.mark.parametrize("rel", PAGES)
def test_page_exists_in_both_languages(rel):
    en, zh = page("en", rel), page("zh", rel)
    assert en.startswith("# ") and zh.startswith("# ")
    assert CJK.search(zh) and not CJK.search(en.split("\n", 1)[0])


def flowchart(lang: str) -> ET.Element:
    return ET.parse(DOCS / lang / SVG).getroot()


@pytest.mark.parametrize("lang", LANGS)
def test_flowchart_is_self_contained_svg(lang):
    root = flowchart(lang)
    assert root.tag == NS + "svg" and root.get("viewBox")
    raw = (DOCS / lang / SVG).read_text(encoding="utf-8")
    # nothing fetched at view time: no links, images, scripts or web fonts
    assert not re.search(r"(?:href|src)\s*=\s*\"(?!#)", raw) and "@import" not in raw and "url(http" not in raw
    assert root.find(f".//{NS}script") is None and root.find(f".//{NS}image") is None
    assert root.find(f"{NS}title") is not None


def _box_titles(lang: str) -> list[str]:
    texts = ["".join(t.itertext()) for t in flowchart(lang).iter(NS + "text")]
    return [t for t in texts if re.match(r"\d+\. ", t)]


def test_flowchart_languages_match():
    en, zh = _box_titles("en"), _box_titles("zh")
    assert [t.split(".")[0] for t in en] == [t.split(".")[0] for t in zh] == [str(i) for i in range(1, len(en) + 1)]
    assert all(CJK.search(t) for t in zh)


@pytest.mark.parametrize("lang", LANGS)
def test_guide_index_shows_the_flowchart_and_a_step_list(lang):
    text = page(lang, "guide/index.md")
    assert f"](../{SVG})" in text  # relative, so the built site needs nothing from outside
    steps = re.findall(r"^(\d+)\. ", text, re.M)
    assert steps == [str(i) for i in range(1, len(steps) + 1)] and len(steps) >= len(_box_titles(lang))


def test_glossary_has_the_same_terms_in_both_languages():
    en, zh = headings(page("en", "glossary.md")), headings(page("zh", "glossary.md"))
    assert len(en) == len(zh) >= 30
    for term_en, term_zh in zip(en, zh):
        # a Chinese entry names its English term, so readers can match both and search finds either
        assert term_en.lower() in term_zh.lower(), (term_en, term_zh)
    assert en == sorted(en, key=str.lower)


REQUIRED_TERMS = ("LoRA", "Rank", "Alpha", "Dropout", "Chat template", "Mask / labels", "Epoch", "Step",
                  "Batch size", "Gradient accumulation", "Learning rate", "Warmup", "Scheduler", "Perplexity",
                  "Quantization", "QLoRA", "GGUF", "Checkpoint", "Overfitting", "Token", "Cutoff length", "Packing",
                  "bf16 / fp16")


def test_glossary_covers_the_terms_the_guide_relies_on():
    terms = headings(page("en", "glossary.md"))
    assert not set(REQUIRED_TERMS) - set(terms)
    for body in re.split(r"^## .*$", page("en", "glossary.md"), flags=re.M)[1:]:
        sentences = re.findall(r"[.!?](?:\s|$)", body.strip())
        assert 1 <= len(sentences) <= 4, body  # short: two or three sentences each


def test_faq_has_the_same_entries_in_both_languages():
    en, zh = headings(page("en", "faq.md")), headings(page("zh", "faq.md"))
    assert len(en) == len(zh) >= 9


@pytest.mark.parametrize("lang", LANGS)
def test_guide_index_leads_to_every_stage(lang):
    # data, fine-tuning and evaluation; terms, tool choice and problems: each reachable from the guide's start
    text = page(lang, "guide/index.md")
    for target in ("data.md", "models.md", "train.md", "monitor.md", "evaluate.md", "../glossary.md",
                   "../choosing-a-tool.md", "../faq.md"):
        assert f"]({target})" in text or f"]({target}#" in text, target


def test_quickstart_time_agrees_with_readme():
    from guide_pages import REPO

    minutes = re.search(r"about (\d+) minutes on 2 CPU cores", (REPO / "README.md").read_text(encoding="utf-8"))[1]
    for rel in ("guide/index.md", "guide/train.md", "faq.md"):
        assert set(re.findall(r"about (\d+) minutes", page("en", rel))) == {minutes}, rel
        assert set(re.findall(r"约 (\d+) 分钟", page("zh", rel))) == {minutes}, rel
