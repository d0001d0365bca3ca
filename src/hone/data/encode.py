"""Conversation + template → input_ids and labels (per-turn masks, truncation strategies)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .conversation import Conversation
from .formats import RowError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    source: str = ""
    truncated: bool = False
    eos_cut: bool = False
    """Truncation removed the last reply's end (its end-of-turn / EOS token)."""
    weights: list[float] | None = None
    """Per-token loss weights aligned with ``labels`` (a reply's ``loss_weight``); None when all are 1."""
    prompt_cut: bool = False
    """Left truncation removed every prompt token (system and user turns) before the first kept reply."""

    @property
    def n_supervised(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def encode(conv: Conversation, template: Any, tokenizer: Any, *, loss_scope: str = "all_turns",
           max_length: int = -1, truncation: str = "delete") -> Encoded:
    """Token ids and labels for one conversation; raises RowError when the row cannot be trained on."""
    if conv.is_text:
        ids = list(tokenizer(conv.text, add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        return _truncate(ids, list(ids), conv.source, max_length, truncation)
    turns = template.encode_turns(conv, tokenizer)
    flags = _turn_flags(conv, len(turns), loss_scope)
    ids: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    is_prompt: list[bool] = []
    for (prompt, response), (train, weight) in zip(turns, flags):
        ids += prompt + response
        is_prompt += [True] * len(prompt) + [False] * len(response)
        labels += (prompt if loss_scope == "all" else [IGNORE_INDEX] * len(prompt))
        labels += response if train else [IGNORE_INDEX] * len(response)
        weights += [1.0] * len(prompt) + [weight if train else 1.0] * len(response)
    if not any(t != IGNORE_INDEX for t in labels):
        raise RowError("no_trainable_tokens", "no token carries loss (every reply is masked); check the "
                       "template and the rows' train flags")
    return _truncate(ids, labels, conv.source, max_length, truncation, weights, is_prompt)


def _turn_flags(conv: Conversation, n_turns: int, loss_scope: str) -> list[tuple[bool, float]]:
    """Per reply: whether it carries loss, and its weight (a zero weight switches it off)."""
    replies = [m for m in conv.messages if m.role == "assistant"]
    flags = []
    for k in range(n_turns):
        if k >= len(replies):  # ids a template adds after the last reply
            flags.append((False, 1.0))
            continue
        m = replies[k]
        if m.train is not None:
            flags.append((m.train and m.loss_weight > 0, m.loss_weight))
        elif m.loss_weight <= 0:
            flags.append((False, 1.0))
        else:
            flags.append((loss_scope != "last_turn" or k == len(replies) - 1, m.loss_weight))
    return flags


def _weights(weights: list[float] | None) -> list[float] | None:
    return weights if weights is not None and any(w != 1.0 for w in weights) else None


def _truncate(ids: list[int], labels: list[int], source: str, max_length: int, strategy: str,
              weights: list[float] | None = None, is_prompt: list[bool] | None = None) -> Encoded:
    if max_length == -1 or len(ids) <= max_length:
        return Encoded(ids, labels, source, weights=_weights(weights))
    if strategy == "delete":
        raise RowError("over_length", f"{len(ids)} tokens > max_length {max_length} (truncation_strategy "
                       "delete drops it; raise max_length or use left/right)")
    n = len(ids)
    last = max(i for i, t in enumerate(labels) if t != IGNORE_INDEX)
    prompt_cut = False
    if strategy == "left":
        ids, labels = ids[-max_length:], labels[-max_length:]
        weights = weights[-max_length:] if weights else None
        eos_cut = False
        prompt_cut = is_prompt is not None and _no_prompt_left(is_prompt[n - max_length:], labels)
    else:
        ids, labels = ids[:max_length], labels[:max_length]
        weights = weights[:max_length] if weights else None
        eos_cut = last >= max_length
    if not any(t != IGNORE_INDEX for t in labels):
        raise RowError("response_cut", f"{n} tokens > max_length {max_length}, and cutting its "
                       f"{'start' if strategy == 'left' else 'end'} removes every reply token; raise "
                       "max_length or shorten the prompt")
    return Encoded(ids, labels, source, truncated=True, eos_cut=eos_cut, weights=_weights(weights),
                   prompt_cut=prompt_cut)


def _no_prompt_left(is_prompt: list[bool], labels: list[int]) -> bool:
    """No prompt token precedes the first kept reply token that carries loss: the model learns a reply
    to a question it never sees."""
    first = next((i for i, (p, t) in enumerate(zip(is_prompt, labels)) if not p and t != IGNORE_INDEX), None)
    return first is not None and not any(is_prompt[:first])
