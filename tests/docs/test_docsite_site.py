"""The built site (one strict build per session): it builds, it fetches nothing from the internet when viewed,
it ships its search index, and the language switch links the two languages."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

# Tags and the attribute through which a browser fetches something when the page loads.
_FETCHED = {"script": "src", "link": "href", "img": "src", "iframe": "src", "source": "src", "video": "src",
            "audio": "src", "embed": "src", "object": "data", "track": "src"}
# `<link>`s that make the browser fetch or connect (prev/next/canonical/alternate only name pages)
_FETCHED_LINKS = {"stylesheet", "icon", "shortcut", "apple-touch-icon", "mask-icon", "manifest", "preload",
                  "modulepreload", "prefetch", "preconnect", "dns-prefetch"}
_EXTERNAL = re.compile(r"^\s*(https?:)?//", re.I)
_CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s]+)""", re.I)


class _Resources(HTMLParser):
    """Collects what an HTML page would load from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []
        self.local: list[str] = []
        self.mermaid = False
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        url = a.get(_FETCHED.get(tag, ""), "")
        rel = set(a.get("rel", "").lower().split())
        fetched = url and (tag != "link" or rel & _FETCHED_LINKS)
        if fetched and _EXTERNAL.match(url):
            self.external.append(f"<{tag} {url}>")
        elif fetched and not url.startswith(("data:", "#")):
            self.local.append(url)
        self.external += [f"<{tag} style {u}>" for u in _CSS_URL.findall(a.get("style", ""))]
        # Material loads mermaid from a CDN for any diagram on the page
        self.mermaid |= "mermaid" in a.get("class", "").split()
        self._in_style = tag == "style"

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.external += [f"<style> {u}" for u in _CSS_URL.findall(data)]

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False


def external_resources(html: str) -> list[str]:
    """Every script, style sheet, font, image or frame a page would fetch from another host."""
    parser = _Resources()
    parser.feed(html)
    return parser.external + (["a mermaid diagram (its script comes from a CDN)"] if parser.mermaid else [])


def local_resources(html: str) -> list[str]:
    """The site's own scripts, style sheets and images a page loads (as written: relative to the page)."""
    parser = _Resources()
    parser.feed(html)
    return parser.local


def test_strict_build(docs_build):
    assert docs_build.returncode == 0, "mkdocs build --strict failed:\n" + docs_build.problems()


def test_nothing_is_fetched_from_the_internet(site: Path):
    bad = []
    for page in sorted(site.rglob("*.html")):
        bad += [f"{page.relative_to(site)}: {r}" for r in external_resources(page.read_text(encoding="utf-8"))]
    for sheet in sorted(site.rglob("*.css")):
        bad += [f"{sheet.relative_to(site)}: {u}" for u in _CSS_URL.findall(sheet.read_text(encoding="utf-8"))]
    assert not bad, "the site would fetch these from the internet when viewed:\n" + "\n".join(bad)


def test_every_local_script_style_and_image_exists(site: Path):
    missing = []
    for page in sorted(site.rglob("*.html")):
        for url in local_resources(page.read_text(encoding="utf-8")):
            path = url.split("#")[0].split("?")[0]
            target = site / path.lstrip("/") if path.startswith("/") else page.parent / path
            if not target.resolve().is_file():
                missing.append(f"{page.relative_to(site)}: {url}")
    assert not missing, "pages load files the site does not have:\n" + "\n".join(missing)


def test_chinese_paragraphs_have_no_stray_spaces(site: Path):
    """A line break between two Chinese characters in a paragraph would show as a space between them."""
    cjk = "\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"
    broken = re.compile(rf"[{cjk}]\n\s*[{cjk}]")
    bad = []
    for page in sorted((site / "zh").rglob("*.html")):
        for block in re.findall(r"<(?:p|li|td)>(.*?)</(?:p|li|td)>", page.read_text(encoding="utf-8"), re.S):
            bad += [f"{page.relative_to(site)}: ...{m.group(0)!r}..." for m in broken.finditer(block)]
    assert not bad, "line breaks between Chinese characters left in the pages:\n" + "\n".join(bad[:20])


def _switch_target(site: Path, page: str, lang: str) -> Path:
    """The page the language switch of ``page`` (a site path like ``zh/``) leads to for ``lang``."""
    html = (site / page / "index.html").read_text(encoding="utf-8")
    m = re.search(rf'<a href="([^"]*)" hreflang="{lang}"', html)
    assert m, f"{page}: no language switch entry for {lang}"
    link = m[1]
    target = site / link.lstrip("/") if link.startswith("/") else site / page / link
    return (target / "index.html").resolve()


@pytest.mark.parametrize("page, other, lang", [("", "zh/", "zh"), ("zh/", "", "en"),
                                               ("reference/config/", "zh/reference/config/", "zh"),
                                               ("zh/reference/config/", "reference/config/", "en")])
def test_the_language_switch_leads_to_the_same_page_in_the_other_language(site: Path, page, other, lang):
    assert _switch_target(site, page, lang) == (site / other / "index.html").resolve()
    html = (site / page / "index.html").read_text(encoding="utf-8")
    assert re.search(r'hreflang="en"[^>]*>\s*English\s*<', html) and re.search(r'hreflang="zh"[^>]*>\s*中文\s*<', html)
    assert f'<html lang="{"en" if lang == "zh" else "zh"}"' in html


def test_search_index_ships_with_the_site(site: Path):
    index = json.loads((site / "search/search_index.json").read_text(encoding="utf-8"))
    locations = [d["location"] for d in index["docs"]]
    assert any(loc.startswith("zh/") for loc in locations) and any(not loc.startswith("zh/") for loc in locations)
    assert "zh" in index["config"]["lang"], "Chinese pages are indexed with Chinese word splitting"
    assert any("lora_rank" in d["text"] for d in index["docs"]), "the reference pages are searchable"


def test_external_resource_check_catches_cdn_assets():
    assert external_resources('<script src="https://cdn.example.org/x.js"></script>')
    assert external_resources('<link rel="stylesheet" href="//fonts.googleapis.com/css?family=Roboto">')
    assert external_resources('<style>@import "https://fonts.example.org/a.css";</style>')
    assert external_resources('<pre class="mermaid">graph TD; a-->b</pre>')
    assert not external_resources('<a href="https://github.com/">repo</a><script src="assets/x.js"></script>'
                                  '<link rel="canonical" href="https://example.org/">')
    assert local_resources('<img src="../assets/flow.svg"><link rel="next" href="../x/"><a href="y.md">') == [
        "../assets/flow.svg"]
