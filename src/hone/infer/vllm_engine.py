"""`infer_backend: vllm`: the same engine interface on vLLM (CUDA GPUs), with LoRA adapters by name.

Prompts are encoded by hone's template (so they are the ones training saw) and handed to vLLM as token ids.
Batch inference hands vLLM every request at once; the server submits requests one by one, and a worker thread
that alone touches vLLM's engine adds them, steps it (continuous batching) and streams each reply's new text.
"""
from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..config import GenCfg, ModelCfg
from ..data.conversation import Message
from ..errors import ModelError
from ..models.load import load_tokenizer, resolve_model
from ..runs import read_run, run_dir_of
from ..templates import get_template
from .engine import BASE, Delta, Generation, Request, adapter_dir, adapter_name, prompt_ids
from .queue import Handle


def check_available() -> None:
    """vLLM needs its package and a CUDA GPU; say which is missing in one sentence."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ModelError("infer_backend vllm needs the vllm package (pip install 'hone[vllm]') on a machine with "
                         "a CUDA GPU; use infer_backend transformers elsewhere") from None
    import torch

    if not torch.cuda.is_available():
        raise ModelError("infer_backend vllm needs a CUDA GPU and none is visible; use infer_backend "
                         "transformers on this machine")


class VllmEngine:
    """Whole replies (and one-piece streams) from vLLM; adapters are LoRA requests chosen by name."""

    def __init__(self, llm: Any, tokenizer: Any, template: Any, system: str | None, adapters: dict[str, str],
                 default_adapter: str | None, context_length: int = 0) -> None:
        self.llm, self.tokenizer, self.template, self.system = llm, tokenizer, template, system
        self.context_length = context_length
        """Longest prompt plus reply vLLM was started with (``vllm_maxlen``)."""
        self.default_adapter = default_adapter
        self._paths = adapters
        self._stepper: _Stepper | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, mcfg: ModelCfg, gen: GenCfg, adapter: str | None = None, *, model_given: bool = True,
             adapters: dict[str, str] | None = None) -> "VllmEngine":
        check_available()
        from vllm import LLM

        run = read_run(adapter) if adapter and run_dir_of(adapter) else None
        if run is not None:
            mcfg = run.model_settings(mcfg, model_given=model_given)
        ref = mcfg.model
        named = dict(adapters or {})
        if adapter:
            path = run.weights_dir("final") if run is not None and Path(adapter) == run.run_dir else Path(adapter)
            named = {adapter_name(adapter): str(path), **named}
        named = {name: str(adapter_dir(path)) for name, path in named.items()}
        model_dir = resolve_model(ref, revision=mcfg.model_revision, token=mcfg.hub_token)
        tokenizer = load_tokenizer(model_dir, mcfg)
        llm = LLM(model=str(model_dir), tokenizer=str(model_dir), max_model_len=gen.vllm_maxlen,
                  gpu_memory_utilization=gen.vllm_gpu_util, enforce_eager=gen.vllm_enforce_eager,
                  enable_lora=bool(named), max_lora_rank=gen.vllm_max_lora_rank, max_loras=max(1, len(named)),
                  trust_remote_code=mcfg.trust_remote_code, dtype="auto")
        return cls(llm, tokenizer, get_template(mcfg.template, tokenizer), mcfg.system, named,
                   adapter_name(adapter) if adapter else None, gen.vllm_maxlen)

    @property
    def adapters(self) -> list[str]:
        return [*self._paths, BASE]

    def _params(self, gen: GenCfg, seed: int | None) -> Any:
        from vllm import SamplingParams

        eos = sorted({t for t in (self.tokenizer.eos_token_id,) if t is not None})
        stops = [w for w in (*gen.stop_words, *self.template.stop_words(self.tokenizer)) if w]
        return SamplingParams(max_tokens=gen.max_new_tokens, temperature=gen.temperature if gen.do_sample else 0.0,
                              top_p=gen.top_p if gen.do_sample else 1.0,
                              top_k=(gen.top_k or -1) if gen.do_sample else -1,
                              repetition_penalty=gen.repetition_penalty, stop=list(dict.fromkeys(stops)) or None,
                              stop_token_ids=eos, seed=seed, skip_special_tokens=True)

    def _lora(self, name: str | None) -> Any:
        from vllm.lora.request import LoRARequest

        name = name if name is not None else self.default_adapter
        if name in (None, BASE):
            return None
        if name not in self._paths:
            raise ModelError(f"no adapter named {name!r}; loaded: {', '.join(self.adapters)}")
        return LoRARequest(name, list(self._paths).index(name) + 1, self._paths[name])

    def prompt_ids(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        return prompt_ids(self.template, self.tokenizer, self.system, messages, tools)

    def submit(self, request: Request) -> Handle:
        """Queue a request from any thread; vLLM generates it beside the others in flight.

        Returns a handle: iterate it for ``Delta``s, or call ``.result()``; ``cancel()`` aborts it in vLLM.
        """
        lora = self._lora(request.adapter)  # an unknown adapter fails here, in the caller's thread
        ids = list(request.prompt) if request.prompt is not None else self.prompt_ids(request.messages, request.tools)
        with self._lock:
            if self._stepper is None:
                self._stepper = _Stepper(self.llm.llm_engine)
        return self._stepper.put(request, {"prompt_token_ids": ids}, self._params(request.gen, request.seed), lora)

    def generate_many(self, requests: Sequence[Request], batch_size: int = 0, progress: Any = None
                      ) -> list[Generation]:
        """All requests at once: vLLM schedules them itself (continuous batching)."""
        prompts = [{"prompt_token_ids": prompt_ids(self.template, self.tokenizer, self.system, r.messages, r.tools)}
                   for r in requests]
        params = [self._params(r.gen, r.seed) for r in requests]
        loras = [self._lora(r.adapter) for r in requests]
        outs = self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        if progress is not None:
            progress(len(requests))
        return [Generation(o.outputs[0].text, len(p["prompt_token_ids"]), len(o.outputs[0].token_ids),
                           "length" if o.outputs[0].finish_reason == "length" else "stop")
                for p, o in zip(prompts, outs)]

    def complete(self, messages: Sequence[Message], gen: GenCfg, tools: Sequence[dict[str, Any]] = (),
                 adapter: str | None = None, seed: int | None = None) -> Generation:
        return self.generate_many([Request(messages, gen, adapter, tools, seed)])[0]

    def stream_deltas(self, messages: Sequence[Message], gen: GenCfg, tools: Sequence[dict[str, Any]] = (),
                      adapter: str | None = None, seed: int | None = None) -> Iterator[Delta]:
        g = self.complete(messages, gen, tools, adapter, seed)
        yield Delta(g.text)
        yield Delta("", g)

    def stream(self, messages: Sequence[Message], gen: GenCfg, tools: Sequence[dict[str, Any]] = (),
               adapter: str | None = None) -> Iterator[str]:
        for d in self.stream_deltas(messages, gen, tools, adapter):
            if d.text:
                yield d.text


@dataclass
class _Live:
    handle: Handle
    prompt_tokens: int
    text: str = ""
    completion_tokens: int = 0


class _Stepper:
    """The one thread that drives vLLM's engine: adds queued requests, aborts cancelled ones, steps, streams."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._inbox: queue.Queue[tuple[Handle, dict[str, Any], Any, Any]] = queue.Queue()
        self._ids = itertools.count()
        self._live: dict[str, _Live] = {}
        threading.Thread(target=self._work, name="hone-vllm", daemon=True).start()

    def put(self, request: Request, prompt: dict[str, Any], params: Any, lora: Any) -> Handle:
        handle = Handle(request)
        self._inbox.put((handle, prompt, params, lora))
        return handle

    def _take(self) -> None:
        """Add what is waiting (blocking while nothing is in flight)."""
        block = not self._live
        while True:
            try:
                handle, prompt, params, lora = self._inbox.get(block=block)
            except queue.Empty:
                return
            block = False
            rid = f"hone-{next(self._ids)}"
            try:
                self.engine.add_request(rid, prompt, params, lora_request=lora)
            except Exception as e:  # e.g. a prompt longer than vllm_maxlen: this request fails, the others go on
                handle.close(ModelError(f"vLLM refused the request: {e}"))
                continue
            self._live[rid] = _Live(handle, len(prompt["prompt_token_ids"]))

    def _work(self) -> None:
        while True:
            self._take()
            for rid, live in list(self._live.items()):
                if live.handle.cancelled:
                    self.engine.abort_request([rid])
                    del self._live[rid]
                    live.handle.close(Generation(live.text, live.prompt_tokens, live.completion_tokens, "stop"))
            if not self._live:
                continue
            try:
                outs = self.engine.step()
            except Exception as e:  # the engine failed: every request in flight gets the error
                for live in self._live.values():
                    live.handle.close(ModelError(f"vLLM failed: {e}"))
                self._live.clear()
                continue
            for out in outs:
                live = self._live.get(out.request_id)
                if live is None:
                    continue
                c = out.outputs[0]
                live.completion_tokens = len(c.token_ids)
                if c.text.startswith(live.text) and len(c.text) > len(live.text):
                    live.handle.piece(c.text[len(live.text):])
                    live.text = c.text
                if out.finished:
                    del self._live[out.request_id]
                    live.handle.close(Generation(live.text, live.prompt_tokens, live.completion_tokens,
                                                 "length" if c.finish_reason == "length" else "stop"))
