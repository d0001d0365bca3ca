"""The engine's batching, adapters by name, stop strings and the thread-safe queue, on a tiny random model.

The oracle for batching is the same model generating one prompt at a time with plain ``generate``; for
adapters it is peft's own model and the base model without peft.
"""
from __future__ import annotations

import threading

import pytest
import torch

from hone.config import GenCfg, ModelCfg
from hone.data.conversation import Message
from hone.errors import ModelError
from hone.infer.engine import BASE, Request, TransformersEngine

PROMPTS = ["Who are you?", "Tell me a long story about the sea and ships.", "hi", "What is 2 + 2?",
           "Name three colours of the rainbow, please."]


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tiny_adapters):
    return TransformersEngine.load(ModelCfg(model=str(tiny_model_dir)), adapters={k: str(v) for k, v in
                                                                                  tiny_adapters.items()})


def _one_by_one(model, tokenizer, engine, prompt: str, n: int) -> list[int]:
    ids = torch.tensor([engine.prompt_ids([Message("user", prompt)])])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         eos_token_id=engine.eos_ids, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_batched_greedy_equals_one_by_one(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    engine = TransformersEngine.load(ModelCfg(model=str(tiny_model_dir)))
    gen = GenCfg(max_new_tokens=12)
    batched = engine.generate_many([Request([Message("user", p)], gen) for p in PROMPTS], batch_size=5)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for p, g in zip(PROMPTS, batched):
        new = _one_by_one(plain, engine.tokenizer, engine, p, 12)
        assert g.text == engine.tokenizer.decode(new, skip_special_tokens=True)
        assert g.completion_tokens == len(new)
        assert g.prompt_tokens == len(engine.prompt_ids([Message("user", p)]))
        assert g.finish_reason == ("stop" if new[-1] in engine.eos_ids else "length")


def test_adapters_by_name_and_base_equals_no_adapter(engine, tiny_model_dir, tiny_adapters):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    gen = GenCfg(max_new_tokens=10)
    msgs = [Message("user", PROMPTS[1])]
    outs = {name: engine.complete(msgs, gen, adapter=name).text for name in ("a", "b", BASE)}
    assert len(set(outs.values())) == 3, outs
    plain = TransformersEngine.load(ModelCfg(model=str(tiny_model_dir)))
    assert outs[BASE] == plain.complete(msgs, gen).text
    # adapter "a" through peft alone (merged into a fresh copy) gives the same greedy reply
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(tiny_adapters["a"]))
    new = _one_by_one(ref.merge_and_unload().eval(), engine.tokenizer, engine, PROMPTS[1], 10)
    assert outs["a"] == engine.tokenizer.decode(new, skip_special_tokens=True)
    # a mixed list of requests keeps each request's adapter
    mixed = engine.generate_many([Request(msgs, gen, adapter=n) for n in ("b", BASE, "a", "b")], batch_size=4)
    assert [g.text for g in mixed] == [outs["b"], outs[BASE], outs["a"], outs["b"]]
    with pytest.raises(ModelError, match="no adapter named 'c'"):
        engine.complete(msgs, gen, adapter="c")


def test_stop_strings_cut_the_same_in_stream_and_whole(engine):
    msgs = [Message("user", PROMPTS[1])]
    full = engine.complete(msgs, GenCfg(max_new_tokens=24), adapter=BASE).text
    assert len(full) > 12
    for stop in (full[5:8], full[10:11], full[3:9]):
        gen = GenCfg(max_new_tokens=24, stop_words=(stop,))
        whole = engine.complete(msgs, gen, adapter=BASE)
        deltas = list(engine.stream_deltas(msgs, gen, adapter=BASE))
        assert "".join(d.text for d in deltas) == whole.text == full[:full.find(stop)]
        assert deltas[-1].done == whole
        assert whole.finish_reason == "stop"
        assert stop not in whole.text


def test_finish_reasons(tiny_model_dir):
    engine = TransformersEngine.load(ModelCfg(model=str(tiny_model_dir)))
    msgs = [Message("user", PROMPTS[0])]
    g = engine.complete(msgs, GenCfg(max_new_tokens=3))
    assert (g.finish_reason, g.completion_tokens) == ("length", 3)
    # the last new token the model emits becomes an end-of-reply token: the reply stops there by itself
    toks = _one_by_one(engine.model, engine.tokenizer, engine, PROMPTS[0], 8)
    k = max(i for i, t in enumerate(toks) if t not in toks[:i])
    engine.eos_ids = [*engine.eos_ids, toks[k]]
    g = engine.complete(msgs, GenCfg(max_new_tokens=8))
    assert (g.finish_reason, g.completion_tokens) == ("stop", k + 1)
    assert g.text == engine.tokenizer.decode(toks[:k], skip_special_tokens=True)


def test_concurrent_submits_are_batched_and_match(engine):
    gen = GenCfg(max_new_tokens=8)
    want = {p: engine.complete([Message("user", p)], gen, adapter=BASE).text for p in PROMPTS}
    got: dict[str, str] = {}
    sizes: list[int] = []
    barrier = threading.Barrier(len(PROMPTS))
    real = engine.generate_batch

    def counting(requests, sinks=None):
        sizes.append(len(requests))
        return real(requests, sinks)

    def ask(p: str) -> None:
        barrier.wait()
        got[p] = engine.submit(Request([Message("user", p)], gen, adapter=BASE)).result().text

    engine.generate_batch = counting
    try:
        threads = [threading.Thread(target=ask, args=(p,)) for p in PROMPTS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        del engine.generate_batch
    assert got == want
    assert sum(sizes) == len(PROMPTS) and max(sizes) > 1, sizes  # requests arriving together share a batch


def test_sampling_is_repeatable_with_a_seed(engine):
    gen = GenCfg(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=0, top_p=1.0)
    msgs = [Message("user", PROMPTS[0])]
    a = engine.complete(msgs, gen, adapter=BASE, seed=7).text
    assert a == engine.complete(msgs, gen, adapter=BASE, seed=7).text
    assert any(engine.complete(msgs, gen, adapter=BASE, seed=s).text != a for s in (8, 9, 10))


def test_overwrite_generation_config(engine, tmp_path):
    import json

    path = engine.write_generation_config(tmp_path, GenCfg(max_new_tokens=33, do_sample=True, temperature=0.5,
                                                           top_k=5, top_p=0.8, repetition_penalty=1.1))
    cfg = json.loads(path.read_text())
    assert (cfg["max_new_tokens"], cfg["do_sample"], cfg["temperature"], cfg["top_k"], cfg["top_p"],
            cfg["repetition_penalty"]) == (33, True, 0.5, 5, 0.8, 1.1)


def test_vllm_backend_without_vllm_or_gpu_is_one_sentence(tiny_model_dir):
    import importlib.util

    from hone.config import load_config
    from hone.infer.engine import load_engine

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and a GPU are present here")
    cfg = load_config(None, {"model": str(tiny_model_dir), "infer_backend": "vllm"})
    with pytest.raises(ModelError, match="infer_backend vllm needs") as e:
        load_engine(cfg)
    assert "transformers" in str(e.value)
