"""The exported tokenizer: the run's chat template as Jinja, and the template's stop words as stop tokens."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import HoneError
from ..templates import AUTO_NAMES, get_template
from ..templates.declarative import DeclarativeTemplate
from .jinja import to_jinja

log = logging.getLogger("hone")


class ExportError(HoneError):
    """A run, model or option that cannot be exported as asked."""


def chat_template_for(template_name: str, tokenizer: Any, system: str | None = None) -> str | None:
    """The Jinja that renders what hone trained on, or None to keep the tokenizer's own (``auto``)."""
    if template_name.lower() in AUTO_NAMES:
        if system is not None:
            log.warning("the run's system prompt is not written into the tokenizer's own chat template; pass it "
                        "as the first (system) message when using the exported model")
        return None
    template = get_template(template_name, tokenizer)
    if not isinstance(template, DeclarativeTemplate):
        raise ExportError(f"template '{template_name}' is not declarative, so it cannot be written as Jinja; "
                          "export with a tokenizer that carries the template, or use a built-in template")
    return to_jinja(template, tokenizer, default_system=system)


def stop_token_ids(template_name: str, tokenizer: Any) -> list[int]:
    """The eos id plus every stop word of the template that is a single token."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if template_name.lower() not in AUTO_NAMES:
        for word in get_template(template_name, tokenizer).stop_words(tokenizer):
            tid = tokenizer(word, add_special_tokens=False)["input_ids"]
            if len(tid) == 1 and tid[0] not in ids:
                ids.append(tid[0])
    return ids


def export_tokenizer(tokenizer: Any, template_name: str, out_dir: Path, system: str | None = None) -> Any:
    """Save ``tokenizer`` to ``out_dir`` with the chat template hone trained with."""
    jinja = chat_template_for(template_name, tokenizer, system)
    if jinja is not None:
        tokenizer.chat_template = jinja
    tokenizer.save_pretrained(out_dir)
    return tokenizer
