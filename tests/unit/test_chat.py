"""`hone chat` on a tiny model with two adapters: multi-line input, /save, /adapter, Ctrl-C stops one answer."""
from __future__ import annotations

import io
import json

import pytest

from hone.config import GenCfg, ModelCfg
from hone.data.conversation import Message
from hone.infer.chat import chat_loop
from hone.infer.engine import BASE, TransformersEngine


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tiny_adapters):
    return TransformersEngine.load(ModelCfg(model=str(tiny_model_dir)),
                                   adapters={k: str(v) for k, v in tiny_adapters.items()})


class InterruptingOut(io.StringIO):
    """A terminal where the user presses Ctrl-C while the `n`-th streamed piece of the first reply is shown."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left, self.armed = n, False

    def write(self, s: str) -> int:
        if s == "assistant> ":
            self.armed = self.left > 0
        elif self.armed:
            self.left -= 1
            if self.left == 0:
                self.armed = False
                raise KeyboardInterrupt
        return super().write(s)


def test_multiline_save_and_adapter_switch(engine, tmp_path):
    gen = GenCfg(max_new_tokens=6)
    saved = tmp_path / "conv.jsonl"
    lines = iter(["/adapter b", "first line \\", "second line", '"""', "a", "block", '"""', f"/save {saved}",
                  "/adapter nope", "/exit"])
    out = io.StringIO()
    chat_loop(engine, gen, read=lambda _: next(lines), out=out)
    rows = [json.loads(x) for x in saved.read_text().splitlines()]
    msgs = rows[0]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[0]["content"] == "first line \nsecond line" and msgs[2]["content"] == "a\nblock"
    want = engine.complete([Message("user", msgs[0]["content"])], gen, adapter="b").text.strip()
    assert msgs[1]["content"] == want
    assert want != engine.complete([Message("user", msgs[0]["content"])], gen, adapter=BASE).text.strip()
    assert "no adapter named 'nope'" in out.getvalue()


def test_ctrl_c_stops_the_answer_not_the_session(engine):
    gen = GenCfg(max_new_tokens=40)
    lines = iter(["/adapter a", "Tell me a long story about the sea.", "hi", "/exit"])
    out = InterruptingOut(2)
    seen: list[list[Message]] = []
    real = engine.submit

    def spy(req):
        seen.append(list(req.messages))
        return real(req)

    engine.submit = spy
    try:
        chat_loop(engine, gen, read=lambda _: next(lines), out=out)
    finally:
        del engine.submit
    assert "[stopped]" in out.getvalue()
    assert len(seen) == 2  # the session went on to the second question
    stopped = seen[1][1].content
    full = engine.complete([Message("user", "Tell me a long story about the sea.")], gen, adapter="a").text
    assert full.strip().startswith(stopped) and len(stopped) < len(full.strip())
    assert out.getvalue().count("assistant> ") == 2
