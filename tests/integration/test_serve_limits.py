"""`hone serve` under load and on the way down: a bounded queue answers 429, a signal drains in-flight streams
and the process exits 0; unsafe or impossible start-ups stop with one clear line."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from serve_proc import SRC, Server

pytest.importorskip("fastapi")
pytestmark = pytest.mark.slow


def _stream(url, body, out, i):
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
            out[i] = (r.status_code, r.headers.get("retry-after"), r.read().decode())
    except httpx.HTTPError as e:
        out[i] = (None, None, repr(e))


@pytest.mark.parametrize("sig", [15, 2])
def test_overload_429_then_signal_drains(tiny_model_dir, sig):
    srv = Server(["--model", str(tiny_model_dir), "--max-queue", "1"])
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 300, "temperature": 0, "stream": True}
    results: list = [None] * 3
    first = threading.Thread(target=_stream, args=(srv.url, body, results, 0))
    first.start()
    deadline = time.monotonic() + 30
    while httpx.get(srv.url + "/health", timeout=10).json()["active"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    for i in (1, 2):
        _stream(srv.url, body, results, i)
    code, out, err = srv.stop(sig)
    first.join(timeout=120)
    status, _, text = results[0]
    assert status == 200 and text.endswith("data: [DONE]\n\n"), text[-300:]
    assert '"finish_reason": "length"' in text  # the stream ran to the end, not cut by the shutdown
    for status, retry, text in results[1:]:
        assert status == 429 and retry == "1" and '"code": "server_busy"' in text.replace('":"', '": "')
    assert code == 0, err[-2000:]
    assert "Traceback" not in err


def _hone(*args, timeout=120):
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "hone", "serve", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_public_host_without_key_refuses_to_start(tiny_model_dir):
    p = _hone("--model", str(tiny_model_dir), "--host", "0.0.0.0", "--port", "0")
    assert p.returncode == 2 and "--api-key" in p.stderr and "--insecure" in p.stderr and "loading" not in p.stderr


def test_busy_port_is_an_error(tiny_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = _hone("--model", str(tiny_model_dir), "--port", str(port))
    assert p.returncode == 2 and f"127.0.0.1:{port}" in p.stderr and "--port" in p.stderr
    assert "loading" not in p.stderr and "Traceback" not in p.stderr


def test_vllm_backend_without_vllm_or_a_gpu_is_one_sentence(tiny_model_dir):
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and a GPU are present here")
    p = _hone("--model", str(tiny_model_dir), "--port", "0", "--infer_backend", "vllm", "--vllm_enforce_eager")
    assert p.returncode == 2 and "infer_backend vllm needs" in p.stderr and "transformers" in p.stderr
    assert "loading" not in p.stderr and "Traceback" not in p.stderr


def test_serve_a_run_directory(tiny_cfg):
    import hone

    import json

    from hone import runs

    res = hone.train({**tiny_cfg, "max_steps": 2, "save_steps": 2})
    # a run of a named model (`smollm2-135m`) records the folder it was loaded from as model_dir; the server
    # names the base as the run does, and the folder's path still reaches it
    record = res.run_dir / runs.RUN_INFO
    record.write_text(json.dumps({**json.loads(record.read_text()), "model": "tiny-base"}))
    srv = Server([str(res.run_dir), "--max_new_tokens", "4"])
    try:
        models = httpx.get(srv.url + "/v1/models", timeout=60).json()["data"]
        assert [m["id"] for m in models] == ["tiny-base", res.run_dir.name]
        body = {"model": tiny_cfg["model"], "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        assert httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=300).json()["model"] == "tiny-base"
        body = {"messages": [{"role": "user", "content": "Who are you?"}], "temperature": 0}
        reply = httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=300).json()
        assert reply["model"] == res.run_dir.name and reply["usage"]["completion_tokens"] <= 4
    finally:
        code, _, err = srv.stop()
    assert code == 0, err[-2000:]
