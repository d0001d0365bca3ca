"""The generation engine: messages in, text (whole or streamed) out, many prompts generated together.

``hone chat``, ``hone infer``, ``hone eval`` and the server all use this object, so prompts, stop conditions,
adapters and batching live here once. Adapters stay unmerged and are kept by name, so each request picks one
(or none: the base model).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..config import GenCfg, ModelCfg, RunCfg
from ..data.conversation import Message
from ..errors import ModelError
from ..models.load import choose_precision, load_model, load_tokenizer, resolve_model
from ..runs import RunInfo, read_run, run_dir_of, verify_weights
from ..templates import Template, get_template
from .decode import RowTracker, TrackerCriteria

log = logging.getLogger("hone")

BASE = "base"
"""The adapter name that means "no adapter": the base model alone."""


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Delta:
    """A streamed piece of a reply; the last one carries the whole ``Generation`` (the same as a whole call)."""

    text: str
    done: Generation | None = None


@dataclass
class Request:
    """One reply to generate: the conversation, its options, which adapter (None: the engine's default) and
    the sampling seed (None: not reseeded)."""

    messages: Sequence[Message]
    gen: GenCfg = field(default_factory=GenCfg)
    adapter: str | None = None
    tools: Sequence[dict[str, Any]] = ()
    seed: int | None = None
    prompt: Sequence[int] | None = None
    """Token ids to continue instead of the rendered conversation (plain-text completion)."""


class TransformersEngine:
    """Generation with a transformers model and any number of unmerged LoRA adapters, chosen by name."""

    def __init__(self, model: Any, tokenizer: Any, template: Template, system: str | None = None,
                 default_adapter: str | None = None) -> None:
        self.model, self.tokenizer, self.template, self.system = model, tokenizer, template, system
        self.model.eval()
        self.default_adapter = default_adapter
        self.lock = threading.RLock()  # the model runs one batch at a time; adapters switch under it
        self._queue: Any = None
        eos: set[int] = set()
        for src in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            eos.update(src if isinstance(src, (list, tuple)) else [src] if src is not None else [])
        self._stop_texts: list[str] = []
        vocab = tokenizer.get_vocab()
        for s in template.stop_words(tokenizer):  # a stop word that is one token stops like eos does
            if s in vocab:
                eos.add(vocab[s])
            else:
                self._stop_texts.append(s)
        self.eos_ids = sorted(eos)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token_id = self.eos_ids[0] if self.eos_ids else 0

    # ------------------------------------------------------------------------------------------------ loading

    @classmethod
    def load(cls, mcfg: ModelCfg, adapter: str | None = None, *, model_given: bool = True,
             adapters: dict[str, str] | None = None) -> "TransformersEngine":
        """Load the base model (or a run's) with an adapter (a run, a checkpoint or an adapter folder).

        ``adapter`` becomes the default for requests that name none; ``adapters`` maps more names to folders.
        A full-tuning checkpoint is loaded as the model itself.
        """
        run: RunInfo | None = read_run(adapter) if adapter and run_dir_of(adapter) else None
        if run is not None:
            mcfg = run.model_settings(mcfg, model_given=model_given)
        ref = mcfg.model
        adapter_path = Path(adapter) if adapter else None
        if adapter_path is not None and not adapter_path.is_dir():
            raise ModelError(f"adapter {adapter} does not exist")
        if run is not None and adapter_path == run.run_dir:
            adapter_path = run.weights_dir("final")  # checked against its manifest there
        elif adapter_path is not None and run is not None:
            verify_weights(adapter_path)  # a damaged or half-written checkpoint is named, not loaded
        full = adapter_path is not None and (adapter_path / "config.json").is_file() and \
            not (adapter_path / "adapter_config.json").is_file()
        model_dir = adapter_path if full else resolve_model(ref, revision=mcfg.model_revision, token=mcfg.hub_token)
        tok_dir = model_dir
        if full and not (model_dir / "tokenizer_config.json").is_file():  # a full checkpoint keeps weights only
            tok_dir = resolve_model(ref, revision=mcfg.model_revision, token=mcfg.hub_token)
        tokenizer = load_tokenizer(tok_dir, mcfg)
        model = load_model(model_dir, mcfg, choose_precision(mcfg.dtype))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        engine = cls(model.to(device), tokenizer, get_template(mcfg.template, tokenizer), mcfg.system)
        named = dict(adapters or {})
        if adapter_path is not None and not full:
            named = {adapter_name(adapter): str(adapter_path), **named}
            engine.default_adapter = adapter_name(adapter)
        for name, path in named.items():
            engine.add_adapter(name, path)
        return engine

    def add_adapter(self, name: str, path: str | Path) -> None:
        """Load a LoRA adapter folder (or a run / checkpoint holding one) under ``name``, unmerged."""
        from peft import PeftModel

        if name == BASE:
            raise ModelError(f"'{BASE}' names the model without an adapter; give the adapter another name")
        p = adapter_dir(path)
        with self.lock:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(p), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(p), adapter_name=name)
            self.model.eval()

    @property
    def adapters(self) -> list[str]:
        """Names a request may pick: the loaded adapters and ``base``."""
        return [*getattr(self.model, "peft_config", {}).keys(), BASE]

    # ------------------------------------------------------------------------------------------------ prompts

    def prompt_ids(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        return prompt_ids(self.template, self.tokenizer, self.system, messages, tools)

    def stops(self, gen: GenCfg) -> list[str]:
        """Strings that end a reply and are cut from it: the user's stop words and the template's multi-token ones."""
        return [s for s in (*gen.stop_words, *self._stop_texts) if s]

    def gen_kwargs(self, gen: GenCfg) -> dict[str, Any]:
        """``generate`` options for ``gen`` (also what ``overwrite_generation_config`` writes)."""
        kw: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample,
                              "repetition_penalty": gen.repetition_penalty, "eos_token_id": self.eos_ids,
                              "pad_token_id": self.tokenizer.pad_token_id}
        if gen.do_sample:
            kw.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k or None)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw

    # ------------------------------------------------------------------------------------------------ generating

    def generate_batch(self, requests: Sequence[Request], sinks: Sequence[Any] | None = None) -> list[Generation]:
        """Generate replies for requests that share options, adapter and seed, in one left-padded batch.

        ``sinks`` (one per request) receive the text as it is decoded and may cancel their row (see RowTracker).
        """
        if not requests:
            return []
        first = requests[0]
        gen, adapter = first.gen, self._adapter_of(first)
        prompts = [list(r.prompt) if r.prompt is not None else self.prompt_ids(r.messages, r.tools)
                   for r in requests]
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)
        trackers = [RowTracker(self.tokenizer, self.eos_ids, self.stops(gen), gen.max_new_tokens,
                               sinks[i] if sinks else None) for i in range(len(requests))]
        with self.lock, torch.no_grad(), self.using(adapter):
            if first.seed is not None:
                torch.manual_seed(first.seed)
            self.model.generate(input_ids=ids, attention_mask=mask, stopping_criteria=[
                TrackerCriteria(trackers, width)], **self.gen_kwargs(gen))
        out = []
        for prompt, t in zip(prompts, trackers):
            text, n, reason = t.finish()
            out.append(Generation(text, len(prompt), n, reason, {"adapter": adapter or BASE}))
        return out

    def generate_many(self, requests: Sequence[Request], batch_size: int = 8,
                      progress: Any = None) -> list[Generation]:
        """Replies to many requests in their order: grouped by options and adapter, sorted by length, batched."""
        results: list[Generation | None] = [None] * len(requests)
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(group_key(r, self._adapter_of(r)), []).append(i)
        for idx in groups.values():
            idx.sort(key=lambda i: len(self.prompt_ids(requests[i].messages, requests[i].tools)))
            for k in range(0, len(idx), max(1, batch_size)):
                part = idx[k:k + max(1, batch_size)]
                for i, g in zip(part, self.generate_batch([requests[i] for i in part])):
                    results[i] = g
                if progress is not None:
                    progress(len(part))
        return [r for r in results if r is not None]

    def complete(self, messages: Sequence[Message], gen: GenCfg, tools: Sequence[dict[str, Any]] = (),
                 adapter: str | None = None, seed: int | None = None) -> Generation:
        """One whole reply."""
        return self.generate_batch([Request(messages, gen, adapter, tools, seed)])[0]

    def generate(self, messages: Sequence[Message], gen: GenCfg, tools: Sequence[dict[str, Any]] = (),
                 adapter: str | None = None) -> str:
        return self.complete(messages, gen, tools, adapter).text

    def stream_deltas(self, messages: Sequence[Message], gen: GenCfg, tools: Sequence[dict[str, Any]] = (),
                      adapter: str | None = None, seed: int | None = None) -> Iterator[Delta]:
        """Pieces of one reply as they are decoded; the last ``Delta`` carries the whole ``Generation``.

        Goes through the shared queue, so concurrent streams are generated together.
        """
        return iter(self.submit(Request(messages, gen, adapter, tools, seed)))

    def stream(self, messages: Sequence[Message], gen: GenCfg, tools: Sequence[dict[str, Any]] = (),
               adapter: str | None = None) -> Iterator[str]:
        """Text pieces of one reply as they are generated."""
        for d in self.stream_deltas(messages, gen, tools, adapter):
            if d.text:
                yield d.text

    def submit(self, request: Request) -> Any:
        """Queue a request from any thread; requests arriving together are generated in one batch.

        Returns a handle: iterate it for ``Delta``s, or call ``.result()`` for the ``Generation``.
        """
        from .queue import BatchQueue

        if self._queue is None:  # checked before locking: the lock is held while a batch generates
            with self.lock:
                if self._queue is None:
                    self._queue = BatchQueue(self)
        self._adapter_of(request)  # an unknown adapter fails here, in the caller's thread
        return self._queue.put(request)

    def write_generation_config(self, folder: str | Path, gen: GenCfg) -> Path:
        """``overwrite_generation_config``: save these options as ``folder/generation_config.json``."""
        from transformers import GenerationConfig

        kw = {k: v for k, v in self.gen_kwargs(gen).items() if v is not None}
        GenerationConfig(**kw).save_pretrained(str(folder))
        return Path(folder) / "generation_config.json"

    # ------------------------------------------------------------------------------------------------ adapters

    def _adapter_of(self, r: Request) -> str | None:
        """The adapter a request runs with (None: the base model); an unknown name is refused."""
        name = r.adapter if r.adapter is not None else self.default_adapter
        if name in (None, BASE):
            return None
        if name not in self.adapters:
            raise ModelError(f"no adapter named {name!r}; loaded: {', '.join(self.adapters)}")
        return name

    def using(self, adapter: str | None) -> Any:
        """A context in which the model runs with ``adapter`` (None: with every adapter switched off)."""
        import contextlib

        if not hasattr(self.model, "peft_config"):
            return contextlib.nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()


def load_engine(cfg: RunCfg, adapter: str | None = None, *, model_given: bool = True,
                adapters: dict[str, str] | None = None) -> Any:
    """The engine ``infer_backend`` asks for: transformers (anywhere) or vLLM (CUDA)."""
    if cfg.gen.infer_backend == "vllm":
        from .vllm_engine import VllmEngine

        return VllmEngine.load(cfg.model, cfg.gen, adapter, model_given=model_given, adapters=adapters)
    return TransformersEngine.load(cfg.model, adapter, model_given=model_given, adapters=adapters)


def prompt_ids(template: Template, tokenizer: Any, system: str | None, messages: Sequence[Message],
               tools: Sequence[dict[str, Any]] = ()) -> list[int]:
    """Ids of the prompt for ``messages``, with the run's system prompt where the conversation has none."""
    msgs = list(messages)
    if system is not None and not (msgs and msgs[0].role == "system"):
        msgs.insert(0, Message("system", system))
    return template.encode_prompt(msgs, tokenizer, tools)


def adapter_dir(path: str | Path) -> Path:
    """The LoRA adapter folder ``path`` names: itself, or a run directory's final weights."""
    p = Path(path)
    if run_dir_of(p) == p:
        p = read_run(p).weights_dir("final")
    if not (p / "adapter_config.json").is_file():
        raise ModelError(f"{path} is not an adapter directory (no adapter_config.json); pass a run directory, "
                         "one of its checkpoint-N folders, or a LoRA adapter folder")
    return p


def adapter_name(path: str | Path) -> str:
    """The name an adapter is known by: its run's folder name (``v3-...``), or ``run/checkpoint-N``."""
    p = Path(path).resolve()
    return f"{p.parent.name}/{p.name}" if p.name.startswith("checkpoint-") else p.name


def group_key(r: Request, adapter: str | None) -> tuple[Any, ...]:
    """Requests with equal keys may share a batch (same options, adapter and seed)."""
    return (replace(r.gen, stream=False), adapter, r.seed)
