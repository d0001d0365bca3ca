"""The Template interface: a conversation in, per-turn (prompt_ids, response_ids) out.

Masks are never recovered by parsing strings after the fact: every template says, turn by turn,
which ids are prompt and which are the assistant's reply.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

from ..errors import HoneError
from ..registry import Registry
from ..data.conversation import Conversation, Message

Turns = list[tuple[list[int], list[int]]]


class TemplateError(HoneError):
    """A template that cannot render a conversation, or does not fit the model."""


class Template(ABC):
    """Renders conversations to token ids for one model family."""

    name: str = "template"

    @abstractmethod
    def encode_turns(self, conv: Conversation, tokenizer: Any) -> Turns:
        """(prompt_ids, response_ids) for every assistant turn, in order.

        The concatenation of all pairs is exactly what the model sees; ``response_ids`` of turn k are
        the k-th assistant reply with its end-of-turn marker. Ids after the last reply, if a template
        adds any, come as a final pair with an empty response.
        """

    @abstractmethod
    def encode_prompt(self, messages: Sequence[Message], tokenizer: Any,
                      tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        """Ids of a conversation ending in a user (or tool) turn, plus the generation prompt."""

    def stop_words(self, tokenizer: Any) -> list[str]:
        """Strings that end a reply besides the tokenizer's eos."""
        return []


TEMPLATES: Registry[Any] = Registry("template")
AUTO_NAMES = ("auto", "hf", "tokenizer")
"""Template names that mean the tokenizer's own chat template."""


def register_template(name: str, template: Any, *, overwrite: bool = False) -> Any:
    """Register a Template (or a factory ``tokenizer -> Template``) under ``name``."""
    return TEMPLATES.register(name, template, overwrite=overwrite)


def get_template(name: str, tokenizer: Any) -> Template:
    """`auto` → the tokenizer's own chat template; otherwise a registered template."""
    if name.lower() in AUTO_NAMES:
        from .hf import HFTemplate

        return HFTemplate.from_tokenizer(tokenizer)
    _load_builtins()
    item = TEMPLATES.get(name)
    if isinstance(item, Template):
        return item
    return item(tokenizer) if callable(item) else item


def _load_builtins() -> None:
    from . import builtin  # noqa: F401  (importing registers the built-in templates)
