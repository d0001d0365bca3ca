"""What the server asks of the generation engine: models by name, prompt ids, and cancellable streamed generation.

The app speaks only to ``Backend``; this module maps its few calls onto the engine, so the HTTP layer never
touches torch.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from ..config import GenCfg
from ..data.conversation import Message
from .protocol import APIError

log = logging.getLogger("hone")


@dataclass
class Job:
    """One choice to generate: prompt ids, sampling, stop strings, and a flag the client side sets to cancel."""

    model: str
    prompt_ids: list[int]
    gen: GenCfg
    seed: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class Piece:
    """Text generated since the last piece; ``finish_reason`` and the counts come with the last one."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0


class Backend:
    """Named models over one loaded engine per name (the base and each adapter)."""

    def __init__(self, engines: dict[str, Any], base: str, aliases: Sequence[str] = ()) -> None:
        self.engines, self.base = engines, base
        self.aliases = {a for a in aliases if a}
        first = engines[base]
        self.tokenizer = first.tokenizer
        self.context_length = int(getattr(first.model.config, "max_position_embeddings", 0) or 0) or 2048
        self._lock = threading.Lock()  # the engines share the device: one generation at a time

    @property
    def names(self) -> list[str]:
        return list(self.engines)

    def resolve(self, model: str | None) -> str:
        """The model name a request asks for; None or the base's path mean the base. Unknown → 404."""
        if model is None or model in self.aliases:
            return self.base
        if model not in self.engines:
            raise APIError(404, f"The model '{model}' does not exist; available: {', '.join(self.engines)}",
                           param="model", code="model_not_found")
        return model

    def template(self, model: str) -> Any:
        return self.engines[model].template

    def chat_prompt(self, model: str, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> list[int]:
        return list(self.engines[model].prompt_ids(messages, tools))

    def text_prompt(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def stop_words(self, model: str) -> list[str]:
        """Strings that end a reply for this model's template (besides its eos ids)."""
        eng = self.engines[model]
        return list(eng.template.stop_words(eng.tokenizer))

    def run(self, job: Job) -> Iterator[Piece]:
        """Generate ``job`` (blocking; call from a worker thread). Stops early when ``job.cancel`` is set."""
        eng = self.engines[job.model]
        stops = list(job.gen.stop_words) + self.stop_words(job.model)
        yield from _generate(eng, job, stops, self._lock)


def _generate(eng: Any, job: Job, stops: list[str], lock: threading.Lock) -> Iterator[Piece]:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    ids: list[int] = []
    cond = threading.Condition()
    done: list[BaseException | None] = []

    class Collect(BaseStreamer):
        first = True

        def put(self, value: Any) -> None:
            if self.first:  # generate() hands the prompt over first
                self.first = False
                return
            with cond:
                ids.extend(value.reshape(-1).tolist())
                cond.notify()

        def end(self) -> None:
            pass

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
            return torch.full((input_ids.shape[0],), job.cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    gen = job.gen
    kw: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample,
                          "repetition_penalty": gen.repetition_penalty, "eos_token_id": eng.eos_ids,
                          "pad_token_id": eng.tokenizer.pad_token_id if eng.tokenizer.pad_token_id is not None
                          else eng.eos_ids[0]}
    if gen.do_sample:
        kw.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k or None)
    else:
        kw.update(temperature=None, top_p=None, top_k=None)

    def work() -> None:
        err: BaseException | None = None
        try:
            with lock, torch.no_grad():
                if job.seed is not None:
                    torch.manual_seed(job.seed)
                x = torch.tensor([job.prompt_ids], device=eng.model.device)
                eng.model.generate(input_ids=x, attention_mask=torch.ones_like(x), streamer=Collect(),
                                   stopping_criteria=StoppingCriteriaList([Cancelled()]), **kw)
        except BaseException as e:  # handed to the consumer
            err = e
        with cond:
            done.append(err)
            cond.notify()

    threading.Thread(target=work, daemon=True, name="hone-generate").start()
    sent, n_seen, reason = "", 0, None
    try:
        while True:
            with cond:
                cond.wait_for(lambda: len(ids) > n_seen or done, timeout=1.0)
                new, finished = ids[n_seen:], bool(done)
                err = done[0] if done else None
            if err is not None:
                raise err
            if not new and not finished:
                continue
            n_seen += len(new)
            hit_eos = bool(new) and new[-1] in eng.eos_ids
            toks = ids[:n_seen - 1] if hit_eos else ids[:n_seen]
            text = eng.tokenizer.decode(toks, skip_special_tokens=True)
            cut = _first_stop(text, stops)
            if cut is not None:
                text, reason = text[:cut], "stop"
            elif hit_eos:
                reason = "stop"
            elif finished:
                reason = "length" if n_seen >= gen.max_new_tokens else "stop"
            # hold back a partial character, and a tail that may be the start of a stop string
            safe = text if reason else text[:len(text) - _held(text, stops)].rstrip("\ufffd")
            if reason:
                safe = safe.rstrip("\ufffd")
                job.cancel.set()
                yield Piece(safe[len(sent):], reason, n_seen)
                return
            if len(safe) > len(sent):
                yield Piece(safe[len(sent):])
                sent = safe
    finally:
        job.cancel.set()  # a consumer that stops early (client gone) stops the generation too


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for s in stops if (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def _held(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that begins some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def with_overrides(gen: GenCfg, **changes: Any) -> GenCfg:
    """``gen`` with the request's sampling values (None keeps the server's default)."""
    return dataclasses.replace(gen, **{k: v for k, v in changes.items() if v is not None})
