"""The built site in a real browser (headless chromium, driven over its DevTools protocol): the Chinese home
page renders with its language switch, and search answers from the shipped index with no network."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import pytest

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")]


class Browser:
    """One headless chromium tab: navigate, then evaluate JavaScript in the page."""

    def __init__(self, profile: Path) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                                      f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"  # chromium writes the port it picked here
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        import urllib.request

        tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
        page = next(t for t in tabs if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None).__enter__()
        self._id = 0

    def call(self, method: str, **params: Any) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self._id:
                return msg.get("result", {})

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """The first truthy value of a JavaScript expression, polled until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.25)

    def close(self) -> None:
        self.ws.__exit__(None, None, None)
        self.proc.terminate()
        self.proc.wait(timeout=30)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the test output stays readable
        pass


@pytest.fixture(scope="module")
def browser(site: Path, tmp_path_factory) -> Iterator[tuple[Browser, str]]:
    pytest.importorskip("websockets", reason="drives chromium over a websocket (pip install websockets)")
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    b = Browser(tmp_path_factory.mktemp("chromium"))
    try:
        yield b, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        b.close()
        server.shutdown()
        server.server_close()


def test_chinese_home_page_renders_with_the_language_switch(browser):
    b, root = browser
    b.call("Page.navigate", url=root + "zh/")
    assert "hone" in b.wait_for("document.readyState === 'complete' && document.title")
    assert "快速上手" in b.wait_for("document.querySelector('article').textContent")
    assert b.wait_for("document.documentElement.lang") == "zh"
    switch = b.wait_for("Array.from(document.querySelectorAll('a.md-select__link'))"
                        ".map(a => [a.hreflang, a.textContent.trim(), a.href])")
    assert [(lang, name) for lang, name, _ in switch] == [("en", "English"), ("zh", "中文")]
    assert switch[0][2] == root, "English is the site root"


@pytest.mark.parametrize("page, query, expected", [("", "lora_rank", "reference/config/"),
                                                   ("zh/", "换算", "zh/reference/config/")])
def test_search_finds_pages_offline(browser, page, query, expected):
    """A Chinese word in the middle of a sentence is found too (the index splits Chinese into words):
    换算 ends a sentence of the Chinese config reference's introduction."""
    b, root = browser
    b.call("Page.navigate", url=f"{root}{page}?q={quote(query)}")
    found = b.wait_for("Array.from(document.querySelectorAll('.md-search-result__item > a'))"
                       ".map(a => a.href.split(/[?#]/)[0])")
    assert found and root + expected in found, found
