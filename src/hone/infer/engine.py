"""The generation engine: messages in, text (whole or streamed) out.

``hone chat`` drives it now; batch inference and the OpenAI-compatible server reuse the same object, so
everything about prompts, stop conditions and adapters lives here once.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import torch

from ..config import GenCfg, ModelCfg
from ..data.conversation import Message
from ..errors import ModelError
from ..runs import RunInfo, read_run, run_dir_of, verify_weights
from ..models.load import choose_precision, load_model, load_tokenizer, resolve_model
from ..templates import Template, get_template

log = logging.getLogger("hone")


class Engine(Protocol):
    def generate(self, messages: Sequence[Message], gen: GenCfg, tools: Sequence[dict[str, Any]] = ()) -> str: ...

    def stream(self, messages: Sequence[Message], gen: GenCfg,
               tools: Sequence[dict[str, Any]] = ()) -> Iterator[str]: ...


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"
    extra: dict[str, Any] = field(default_factory=dict)


class TransformersEngine:
    """Generation with a transformers model (optionally with a LoRA adapter merged in)."""

    def __init__(self, model: Any, tokenizer: Any, template: Template, system: str | None = None) -> None:
        self.model, self.tokenizer, self.template, self.system = model, tokenizer, template, system
        self.model.eval()
        self._lock = threading.Lock()  # one generation at a time on one model
        eos: set[int] = set()
        for src in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            eos.update(src if isinstance(src, (list, tuple)) else [src] if src is not None else [])
        self.eos_ids = sorted(eos)

    @classmethod
    def load(cls, mcfg: ModelCfg, adapter: str | None = None, *, model_given: bool = True) -> "TransformersEngine":
        """Load the base model (or a run's) and merge an adapter directory if given."""
        run: RunInfo | None = read_run(adapter) if adapter and run_dir_of(adapter) else None
        ref = mcfg.model if model_given or run is None else run.base_model()
        adapter_path = Path(adapter) if adapter else None
        if adapter_path is not None and not adapter_path.is_dir():
            raise ModelError(f"adapter {adapter} does not exist")
        if adapter_path is not None and run is not None:
            verify_weights(adapter_path)  # a damaged or half-written file is named, not loaded
        full = adapter_path is not None and (adapter_path / "config.json").is_file() and \
            not (adapter_path / "adapter_config.json").is_file()
        model_dir = adapter_path if full else resolve_model(ref, revision=mcfg.model_revision, token=mcfg.hub_token)
        tok_dir = model_dir
        if full and not (model_dir / "tokenizer_config.json").is_file():  # a full checkpoint keeps weights only
            tok_dir = resolve_model(ref, revision=mcfg.model_revision, token=mcfg.hub_token)
        tokenizer = load_tokenizer(tok_dir, mcfg)
        model = load_model(model_dir, mcfg, choose_precision(mcfg.dtype))
        if adapter_path is not None and not full:
            if not (adapter_path / "adapter_config.json").is_file():
                raise ModelError(f"{adapter_path} is not an adapter directory (no adapter_config.json)")
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
        template_name = mcfg.template if mcfg.template != "auto" or run is None else run.template
        system = mcfg.system if mcfg.system is not None else run.system if run is not None else None
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(model.to(device), tokenizer, get_template(template_name, tokenizer), system)

    def prompt_ids(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        msgs = list(messages)
        if self.system is not None and not (msgs and msgs[0].role == "system"):
            msgs.insert(0, Message("system", self.system))
        return self.template.encode_prompt(msgs, self.tokenizer, tools)

    def _gen_kwargs(self, gen: GenCfg) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample,
                              "repetition_penalty": gen.repetition_penalty, "eos_token_id": self.eos_ids,
                              "pad_token_id": self.tokenizer.pad_token_id}
        if gen.do_sample:
            kw.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k or None)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        stops = list(gen.stop_words) + self.template.stop_words(self.tokenizer)
        if stops:
            kw.update(stop_strings=stops, tokenizer=self.tokenizer)
        return kw

    def complete(self, messages: Sequence[Message], gen: GenCfg, tools: Sequence[dict[str, Any]] = ()) -> Generation:
        ids = self.prompt_ids(messages, tools)
        x = torch.tensor([ids], device=self.model.device)
        with self._lock, torch.no_grad():
            out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), **self._gen_kwargs(gen))
        new = out[0, len(ids):].tolist()
        ended = bool(new) and new[-1] in self.eos_ids
        reason = "length" if len(new) >= gen.max_new_tokens and not ended else "stop"
        text = self.tokenizer.decode(new, skip_special_tokens=True).rstrip("\ufffd")
        return Generation(_cut_stops(text, gen.stop_words), len(ids), len(new), reason)

    def generate(self, messages: Sequence[Message], gen: GenCfg, tools: Sequence[dict[str, Any]] = ()) -> str:
        return self.complete(messages, gen, tools).text

    def stream(self, messages: Sequence[Message], gen: GenCfg, tools: Sequence[dict[str, Any]] = ()) -> Iterator[str]:
        """Yield text pieces as they are generated."""
        from transformers import TextIteratorStreamer

        ids = self.prompt_ids(messages, tools)
        x = torch.tensor([ids], device=self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with self._lock, torch.no_grad():
                    self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), streamer=streamer,
                                        **self._gen_kwargs(gen))
            except BaseException as e:  # surfaced in the caller's thread
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        for piece in streamer:
            piece = piece.rstrip("\ufffd")  # a reply cut by max_new_tokens inside a multi-byte character
            if piece:
                yield piece
        thread.join()
        if errors:
            raise errors[0]


def _cut_stops(text: str, stops: Sequence[str]) -> str:
    for s in stops:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text
