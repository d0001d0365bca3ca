"""Faults injected behind the HTTP layer (an engine that fails mid-reply, a model that answers with a tool call),
served by uvicorn on loopback and read with the official openai client."""
from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>'
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}, "unit": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def app_url(tiny_model_dir):
    import uvicorn

    from hone.config import GenCfg, ModelCfg
    from hone.infer.engine import TransformersEngine
    from hone.serve.app import Settings, create_app
    from hone.serve.backend import Backend, Piece

    class Faulty(Backend):
        """The real engine, except: a prompt containing EXPLODE fails after two pieces; one containing WEATHER
        is answered with a scripted Qwen-style tool call."""

        def pieces(self, handle):
            text = self.tokenizer.decode(handle.request.prompt)
            if "WEATHER" in text:
                handle.cancel()
                yield Piece("Let me check. ")
                yield Piece(CALL[:7])
                yield Piece(CALL[7:], "stop", 30)
                return
            for k, p in enumerate(super().pieces(handle)):
                if "EXPLODE" in text and k == 2:
                    raise RuntimeError("CUDA error: device-side assert triggered")
                yield p

    engine = TransformersEngine.load(ModelCfg(model=str(tiny_model_dir), template="qwen"))
    app = create_app(Faulty(engine, "tiny"), Settings(gen=GenCfg()))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def client(app_url):
    return openai.OpenAI(base_url=app_url + "/v1", api_key="none", max_retries=0, timeout=120)


def test_engine_error_mid_stream_ends_with_error_event_and_done(client, app_url):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "EXPLODE now"}], "max_tokens": 20,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", app_url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        events = [e for e in r.read().decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    err = json.loads(events[-2][6:])["error"]
    assert err["type"] == "server_error" and "RuntimeError" in err["message"] and "CUDA" not in err["message"]
    assert all("choices" in json.loads(e[6:]) for e in events[:-2])
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(**{k: v for k, v in body.items() if k != "stream"}, stream=True):
            pass
    assert httpx.get(app_url + "/health", timeout=10).json() == {"status": "ok", "active": 0}
    ok = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert ok.choices[0].finish_reason == "length"


def test_tool_call_reply_whole_and_streamed(client):
    msgs = [{"role": "user", "content": "WEATHER in Paris?"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "c"}
    assert choice.message.content == "Let me check."
    chunks = list(client.chat.completions.create(model="tiny", messages=msgs, tools=TOOLS, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me check. " and "<tool" not in text
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == \
        [("get_weather", {"city": "Paris", "unit": "c"})]
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]
    # without tools in the request the same text stays text
    plain = client.chat.completions.create(model="tiny", messages=msgs)
    assert plain.choices[0].finish_reason == "stop" and CALL in plain.choices[0].message.content
