"""The chat page at / in headless Chromium, driven over the DevTools protocol: pick an adapter, send a message,
and the streamed reply on the page is the one the API gives for the same request."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from serve_proc import Server, make_adapter

pytest.importorskip("fastapi")
CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-port=0", "--window-size=1100,700"]


class Page:
    """A DevTools session on one page target."""

    def __init__(self, ws) -> None:
        self.ws, self.n = ws, 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]
        raise TimeoutError(method)

    def js(self, expr: str):
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return res["result"].get("value")

    def wait(self, expr: str, timeout: float = 240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expr)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(expr)


def test_chat_page_streams_an_adapters_reply(tiny_model_dir, tmp_path):
    pytest.importorskip("websockets")
    from websockets.sync.client import connect

    adapter = make_adapter(tiny_model_dir, tmp_path / "alpha", 1)
    srv = Server(["--model", str(tiny_model_dir), "--template", "qwen", "--adapter", f"alpha={adapter}"])
    profile = tmp_path / "profile"
    browser = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", srv.url + "/"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=30).json()
        with connect(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"], max_size=None,
                     open_timeout=30) as ws:
            _chat(Page(ws), srv, tiny_model_dir, tmp_path)
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        code, _, err = srv.stop()
    assert code == 0, err[-2000:]


def _chat(page: Page, srv: Server, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Pick the adapter, send a message at temperature 0, and compare the page's reply with the API's."""
    options = page.wait("document.querySelectorAll('#model option').length >= 2 && "
                        "[...document.querySelectorAll('#model option')].map(o => o.value)")
    assert options == [str(tiny_model_dir), "alpha"]
    page.js("document.getElementById('model').value = 'alpha';"
            "document.getElementById('temperature').value = '0';"
            "document.getElementById('max_tokens').value = '12';"
            "document.getElementById('prompt').value = 'Who are you?';"
            "document.getElementById('send').requestSubmit(); true")
    meta = page.wait("(document.querySelector('.assistant .meta') || {}).textContent")
    reply = page.js("document.querySelector('.assistant').firstChild.textContent")
    shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    out = Path(os.environ.get("HONE_SCREENSHOT", tmp_path / "chat.png"))
    out.write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 5000
    assert meta == "12 tokens, finish: length"
    api = httpx.post(srv.url + "/v1/chat/completions", timeout=300, json={
        "model": "alpha", "messages": [{"role": "user", "content": "Who are you?"}], "temperature": 0,
        "max_tokens": 12}).json()
    assert reply == api["choices"][0]["message"]["content"]
    assert not page.js("document.querySelector('.error') !== null")
