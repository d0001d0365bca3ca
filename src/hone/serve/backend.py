"""What the server asks of the generation engine: models by name, prompt ids, and cancellable streamed generation.

The app speaks only to ``Backend``; this module maps its few calls onto the engine (one base model, adapters
kept unmerged by name, concurrent requests batched by the engine's queue), so the HTTP layer never touches torch.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from ..config import GenCfg
from ..data.conversation import Message
from .protocol import APIError


@dataclass
class Job:
    """One choice to generate: prompt ids, sampling, and a flag the client side sets to cancel."""

    model: str
    prompt_ids: list[int]
    gen: GenCfg
    seed: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    _hooks: list[Any] = field(default_factory=list, init=False, repr=False)
    _mu: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def stop(self) -> None:
        """End the generation (from any thread); the engine drops the row at its next token."""
        with self._mu:
            self.cancel.set()
            hooks = list(self._hooks)
        for h in hooks:
            h()

    def on_cancel(self, hook: Any) -> None:
        """Call ``hook`` on ``stop()``, at once if it has already happened."""
        with self._mu:
            self._hooks.append(hook)
            done = self.cancel.is_set()
        if done:
            hook()


@dataclass
class Piece:
    """Text generated since the last piece; ``finish_reason`` and the count come with the last one."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0


class Backend:
    """The served names: the base model (``base``) and each adapter of ``engine``."""

    def __init__(self, engine: Any, base: str, aliases: Sequence[str] = ()) -> None:
        from ..infer.engine import BASE

        self.engine, self.base, self._base_adapter = engine, base, BASE
        self.aliases = {a for a in aliases if a and a not in engine.adapters}
        self.tokenizer = engine.tokenizer
        config = getattr(getattr(engine, "model", None), "config", None)
        self.context_length = (int(getattr(engine, "context_length", 0) or 0)
                               or int(getattr(config, "max_position_embeddings", 0) or 0) or 2048)

    @property
    def names(self) -> list[str]:
        """The base model first, then the adapters in the order they were loaded."""
        return [self.base] + [a for a in self.engine.adapters if a != self._base_adapter]

    def resolve(self, model: str | None) -> str:
        """The name a request asks for: None means the default (the first adapter, else the base); the base's path
        or ``base`` also name the base. Unknown → 404."""
        names = self.names
        if model is None:
            return names[1] if len(names) > 1 else names[0]
        if model in self.aliases or model == self._base_adapter:
            return self.base
        if model not in names:
            raise APIError(404, f"The model '{model}' does not exist; available: {', '.join(names)}",
                           param="model", code="model_not_found")
        return model

    def template(self, model: str) -> Any:
        return self.engine.template

    def chat_prompt(self, model: str, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> list[int]:
        return list(self.engine.prompt_ids(messages, tools))

    def text_prompt(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def start(self, job: Job) -> Any:
        """Queue ``job`` with the engine (may wait while a batch runs: call from a worker thread)."""
        from ..infer.engine import Request

        adapter = self._base_adapter if job.model == self.base else job.model
        handle = self.engine.submit(Request((), job.gen, adapter, seed=job.seed, prompt=job.prompt_ids))
        job.on_cancel(handle.cancel)
        return handle

    def pieces(self, handle: Any) -> Iterator[Piece]:
        """A started job's text as it is generated (blocking); the last piece has the finish reason."""
        for d in handle:
            if d.done is not None:
                yield Piece(d.text, d.done.finish_reason, d.done.completion_tokens)
                return
            if d.text:
                yield Piece(d.text)


def with_overrides(gen: GenCfg, **changes: Any) -> GenCfg:
    """``gen`` with the request's sampling values (None keeps the server's default)."""
    return dataclasses.replace(gen, **{k: v for k, v in changes.items() if v is not None})
