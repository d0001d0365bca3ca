"""The server's way into vLLM: one thread adds requests to vLLM's engine, steps it and streams each reply.

vLLM needs a CUDA GPU, so here its engine is a scripted stand-in with the same calls (``add_request``, ``step``,
``abort_request``) and outputs shaped as vLLM's ``RequestOutput`` (cumulative text and token ids). The test
with the real vLLM is marked ``gpu``.
"""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from hone.config import GenCfg
from hone.errors import ModelError
from hone.infer.engine import Request
from hone.infer.vllm_engine import _Stepper


class ScriptedEngine:
    """Each request's reply is its script, one word per step; a prompt starting with 0 is refused on add."""

    def __init__(self, fail_step_at: int | None = None) -> None:
        self.live: dict[str, list[str]] = {}
        self.done: dict[str, int] = {}
        self.aborted: list[str] = []
        self.added: list[tuple[str, list[int], object, object]] = []
        self.steps = 0
        self.fail_step_at = fail_step_at
        self.gate = threading.Event()
        self.gate.set()

    def add_request(self, rid, prompt, params, lora_request=None):
        ids = prompt["prompt_token_ids"]
        if ids[0] == 0:
            raise ValueError("prompt is longer than max_model_len")
        self.added.append((rid, ids, params, lora_request))
        self.live[rid] = params["script"]
        self.done[rid] = 0

    def abort_request(self, rids):
        for rid in rids:
            self.aborted.append(rid)
            self.live.pop(rid, None)

    def step(self):
        self.gate.wait()
        self.steps += 1
        if self.fail_step_at is not None and self.steps >= self.fail_step_at:
            raise RuntimeError("CUDA error: out of memory")
        outs = []
        for rid, script in list(self.live.items()):
            self.done[rid] += 1
            n = self.done[rid]
            finished = n >= len(script)
            reason = ("length" if script[-1] == "…" else "stop") if finished else None
            if finished:
                del self.live[rid]
            outs.append(SimpleNamespace(request_id=rid, finished=finished, outputs=[SimpleNamespace(
                text="".join(script[:n]), token_ids=list(range(n)), finish_reason=reason)]))
        time.sleep(0.001)
        return outs


def submit(stepper, prompt, script, lora=None):
    return stepper.put(Request((), GenCfg()), {"prompt_token_ids": prompt}, {"script": script}, lora)


def test_replies_stream_in_pieces_and_end_with_the_whole_generation():
    eng = ScriptedEngine()
    st = _Stepper(eng)
    a = submit(st, [5, 6, 7], ["Hel", "lo", " there"])
    b = submit(st, [8], ["a", "b", "c", "d", "…"], lora="alpha-request")
    pieces = [d.text for d in a if d.text]
    assert pieces == ["Hel", "lo", " there"]
    ga = a.result()
    assert (ga.text, ga.prompt_tokens, ga.completion_tokens, ga.finish_reason) == ("Hello there", 3, 3, "stop")
    gb = b.result()
    assert (gb.text, gb.completion_tokens, gb.finish_reason) == ("abcd…", 5, "length")
    assert [x[3] for x in eng.added] == [None, "alpha-request"]


def test_requests_from_many_threads_run_together():
    eng = ScriptedEngine()
    st = _Stepper(eng)
    results = {}

    def one(i):
        results[i] = submit(st, [i + 1], [str(i)] * 20).result().text

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == {i: str(i) * 20 for i in range(8)}
    assert eng.steps < 8 * 20  # they shared steps (continuous batching), not one request after another


def test_cancel_aborts_the_request_in_vllm_and_keeps_what_was_made():
    eng = ScriptedEngine()
    st = _Stepper(eng)
    h = submit(st, [5], ["x"] * 10_000)
    it = iter(h)
    assert next(it).text == "x"
    h.cancel()
    g = h.result()
    assert g.finish_reason == "stop" and 1 <= len(g.text) < 10_000 and g.completion_tokens == len(g.text)
    assert eng.aborted == [eng.added[0][0]]
    assert submit(st, [5], ["ok"]).result().text == "ok"  # the engine goes on


def test_a_refused_request_fails_alone():
    eng = ScriptedEngine()
    st = _Stepper(eng)
    bad = submit(st, [0, 1], ["never"])
    good = submit(st, [3], ["fine"])
    with pytest.raises(ModelError, match="vLLM refused the request: prompt is longer"):
        bad.result()
    assert good.result().text == "fine"


def test_an_engine_failure_reaches_every_request_in_flight():
    eng = ScriptedEngine(fail_step_at=3)
    eng.gate.clear()
    st = _Stepper(eng)
    hs = [submit(st, [i + 1], ["w"] * 50) for i in range(3)]
    time.sleep(0.05)
    eng.gate.set()
    for h in hs:
        with pytest.raises(ModelError, match="vLLM failed: CUDA error: out of memory"):
            h.result()


@pytest.mark.gpu
def test_real_vllm_streams_what_it_generates_whole(tiny_model_dir):
    pytest.importorskip("vllm")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from hone.config import ModelCfg
    from hone.data.conversation import Message
    from hone.infer.vllm_engine import VllmEngine

    gen = GenCfg(max_new_tokens=24, do_sample=False, vllm_maxlen=512, vllm_enforce_eager=True, vllm_gpu_util=0.3)
    eng = VllmEngine.load(ModelCfg(model=str(tiny_model_dir), template="qwen"), gen)
    msgs = [Message("user", "Who are you?")]
    whole = eng.complete(msgs, gen)
    h = eng.submit(Request(msgs, gen))
    streamed = "".join(d.text for d in h)
    assert streamed == whole.text == h.result().text
