"""`infer_backend: vllm`: the same engine interface on vLLM (CUDA GPUs), with LoRA adapters by name.

Prompts are encoded by hone's template (so they are the ones training saw) and handed to vLLM as token ids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from ..config import GenCfg, ModelCfg
from ..data.conversation import Message
from ..errors import ModelError
from ..models.load import load_tokenizer, resolve_model
from ..runs import read_run, run_dir_of
from ..templates import get_template
from .engine import BASE, Delta, Generation, Request, adapter_name, prompt_ids


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
                 default_adapter: str | None) -> None:
        self.llm, self.tokenizer, self.template, self.system = llm, tokenizer, template, system
        self.default_adapter = default_adapter
        self._paths = adapters

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
        model_dir = resolve_model(ref, revision=mcfg.model_revision, token=mcfg.hub_token)
        tokenizer = load_tokenizer(model_dir, mcfg)
        llm = LLM(model=str(model_dir), tokenizer=str(model_dir), max_model_len=gen.vllm_maxlen,
                  gpu_memory_utilization=gen.vllm_gpu_util, enforce_eager=gen.vllm_enforce_eager,
                  enable_lora=bool(named), max_lora_rank=gen.vllm_max_lora_rank, max_loras=max(1, len(named)),
                  trust_remote_code=mcfg.trust_remote_code, dtype="auto")
        return cls(llm, tokenizer, get_template(mcfg.template, tokenizer), mcfg.system, named,
                   adapter_name(adapter) if adapter else None)

    @property
    def adapters(self) -> list[str]:
        return [*self._paths, BASE]

    def _params(self, gen: GenCfg, seed: int | None) -> Any:
        from vllm import SamplingParams

        eos = sorted({t for t in (self.tokenizer.eos_token_id,) if t is not None})
        return SamplingParams(max_tokens=gen.max_new_tokens, temperature=gen.temperature if gen.do_sample else 0.0,
                              top_p=gen.top_p if gen.do_sample else 1.0,
                              top_k=(gen.top_k or -1) if gen.do_sample else -1,
                              repetition_penalty=gen.repetition_penalty, stop=list(gen.stop_words) or None,
                              stop_token_ids=eos, seed=seed, skip_special_tokens=True)

    def _lora(self, name: str | None) -> Any:
        from vllm.lora.request import LoRARequest

        name = name if name is not None else self.default_adapter
        if name in (None, BASE):
            return None
        if name not in self._paths:
            raise ModelError(f"no adapter named {name!r}; loaded: {', '.join(self.adapters)}")
        return LoRARequest(name, list(self._paths).index(name) + 1, self._paths[name])

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
