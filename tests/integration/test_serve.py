"""`hone serve` as a real process on loopback, checked with the official openai client, raw HTTP and curl.

The oracles are outside hone: peft + transformers generate for what an adapter answers, the published Qwen2.5
chat template for how tools are rendered, and the openai client's own parsing for the wire format.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from serve_proc import Server, make_adapter

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

KEY = "sk-test-9f8e7d"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
QWEN = (FIXTURES / "chat_templates" / "qwen2.5.jinja").read_text()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {"alpha": make_adapter(tiny_model_dir, root / "alpha", 1),
            "beta": make_adapter(tiny_model_dir, root / "beta", 2)}


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapters):
    srv = Server(["--model", str(tiny_model_dir), "--template", "qwen", "--api-key", KEY,
                  "--adapter", f"alpha={adapters['alpha']}", "--adapter", f"beta={adapters['beta']}",
                  "--infer_backend", "pt", "--sglang_mem_fraction_static=0.8"])
    yield srv
    code, out, err = srv.stop()
    assert code == 0, err[-2000:]
    assert KEY not in out + err
    assert "Who are you?" not in out + err and "你是谁" not in out + err  # prompts are not logged


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=300)


def http(server, method, path, key=KEY, **kw):
    headers = kw.pop("headers", {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.request(method, server.url + path, headers=headers, timeout=300, **kw)


def ask(model, text="Who are you?"):
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8, "temperature": 0}


def test_models_lists_base_and_adapters_by_name(client, tiny_model_dir):
    ids = [m.id for m in client.models.list().data]
    assert ids == [str(tiny_model_dir), "alpha", "beta"]


def test_each_adapter_answers_as_peft_says(client, tiny_model_dir, adapters):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    replies = {m: client.chat.completions.create(**ask(m)).choices[0].message.content
               for m in (str(tiny_model_dir), "alpha", "beta")}
    assert len(set(replies.values())) == 3, replies
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": "Who are you?"}], chat_template=QWEN,
                                  add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapters["beta"])
    x = torch.tensor([ids])
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=8, do_sample=False)
    assert replies["beta"] == tok.decode(out[0, len(ids):], skip_special_tokens=True)


def test_stream_matches_whole_reply_and_conforms(client, server):
    whole = client.chat.completions.create(**ask("alpha"))
    chunks = list(client.chat.completions.create(**ask("alpha"), stream=True,
                                                 stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == ["length"] == [whole.choices[0].finish_reason]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert whole.usage.completion_tokens == 8
    # raw wire: event-stream, data lines, one [DONE] at the end
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**ask("beta"), "stream": True},
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]" and raw.endswith("\n\n")
    assert "usage" not in json.loads(events[0][6:])


def test_stop_n_seed_and_completions(client):
    text = client.chat.completions.create(**ask("alpha")).choices[0].message.content
    stop = text[2:5]
    cut = client.chat.completions.create(**ask("alpha"), stop=["never-said", stop])
    assert cut.choices[0].message.content == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    many = client.chat.completions.create(**{**ask("beta"), "temperature": 1.0}, n=3, seed=7)
    again = client.chat.completions.create(**{**ask("beta"), "temperature": 1.0}, n=3, seed=7)
    assert [c.message.content for c in many.choices] == [c.message.content for c in again.choices]
    assert [c.index for c in many.choices] == [0, 1, 2]
    text = client.completions.create(model="alpha", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert text.choices[0].finish_reason == "length" and text.usage.completion_tokens == 5


def test_tools_are_rendered_by_the_template(client, tiny_model_dir):
    from transformers import AutoTokenizer

    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": {"type": "object", "properties": {
                                                   "city": {"type": "string"}}, "required": ["city"]}}}]
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(model="alpha", messages=msgs, tools=tools, max_tokens=4, temperature=0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok.apply_chat_template(msgs, tools=tools, chat_template=QWEN, add_generation_prompt=True,
                                  tokenize=True, return_dict=True)["input_ids"]
    assert r.usage.prompt_tokens == len(ids)


def test_seed_003_curl_works(server):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    body = json.dumps({
        "model": "alpha",
        "messages": [{"role": "system", "content": "你是Qwen，由阿里云创建。你是一个乐于助人的助手。"},
                     {"role": "user", "content": "你是谁？"}],
        "temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05, "max_tokens": 512}, ensure_ascii=False)
    proc = subprocess.run(["curl", "-s", "--max-time", "500", server.url + "/v1/chat/completions",
                           "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {KEY}",
                           "-d", body], capture_output=True, text=True, timeout=520)
    reply = json.loads(proc.stdout)
    assert reply["object"] == "chat.completion" and reply["model"] == "alpha"
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    assert reply["usage"]["total_tokens"] == reply["usage"]["prompt_tokens"] + reply["usage"]["completion_tokens"]


BAD = [
    (b"[1, 2]", None), (b"{not json", None), (b'{"messages": "hi"}', "messages"),
    (b'{"messages": []}', "messages"), (b'{"messages": [{"role": "bot", "content": "x"}]}', "messages[0].role"),
    (b'{"messages": [{"role": "user"}]}', "messages[0].content"),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature"),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": 3}', "temperature"),
    (b'{"messages": [{"role": "user", "content": "x"}], "n": 1000000}', "n"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "x"}], "top_p": 0}', "top_p"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}',
     "stream_options"),
    (b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}', "messages[1].role"),
]


@pytest.mark.parametrize("body, param, stream", [(b, p, False) for b, p in BAD] + [
    (b[:-1] + b', "stream": true}', p, True) for b, p in BAD if b.startswith(b'{"messages"') and p != "stream_options"])
def test_invalid_bodies_get_openai_400(server, body, param, stream):
    r = http(server, "POST", "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert not re.search(r"/\w+/|0x[0-9a-f]{6}|Traceback", err["message"])
    assert len(r.content) < 32_000


def test_unknown_model_context_and_size_limits(server):
    r = http(server, "POST", "/v1/chat/completions", json=ask("gamma"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    long = {**ask("alpha", "word " * 900), "max_tokens": 300, "stream": True}
    r = http(server, "POST", "/v1/chat/completions", json=long)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "context_length_exceeded"
    assert "1024" in err["message"] and "300 in the completion" in err["message"]
    r = http(server, "POST", "/v1/chat/completions", content=b"x" * (2 << 20))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = http(server, "GET", "/nope")
    assert r.status_code == 404 and "error" in r.json()


@pytest.mark.parametrize("method, path", [("GET", "/v1/models"), ("GET", "/v1/models/"), ("OPTIONS", "/v1/models"),
                                          ("POST", "/v1/chat/completions"), ("GET", "/v1/models/alpha")])
def test_auth_required_everywhere_but_health(server, method, path):
    for key in (None, "wrong-key", KEY[:-1]):
        r = http(server, method, path, key=key)
        assert r.status_code == 401, (method, path, key)
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert "access-control-allow-origin" not in r.headers
    assert http(server, "GET", "/health", key=None).status_code == 200
    assert http(server, "GET", "/v1/models", key=KEY).status_code == 200


def test_key_not_in_process_list(server):
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().decode(errors="replace")
    assert "serve" in cmdline and KEY not in cmdline


def test_disconnect_stops_generation(server):
    body = {**ask("alpha"), "max_tokens": 400, "stream": True}
    t0 = time.monotonic()
    r = http(server, "POST", "/v1/chat/completions", json={**body, "stream": False})
    full = time.monotonic() - t0
    assert r.json()["usage"]["completion_tokens"] > 200  # a long generation to cut short
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as s:
        for i, _ in enumerate(s.iter_lines()):
            if i > 6:
                break
    t1 = time.monotonic()
    r = http(server, "POST", "/v1/chat/completions", json=ask("beta"))
    assert r.status_code == 200
    assert time.monotonic() - t1 < max(full / 2, 0.5), f"full generation {full:.1f}s"
