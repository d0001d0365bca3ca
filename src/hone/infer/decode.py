"""Turning generated token ids into reply text, one row of a batch at a time.

A ``RowTracker`` sees each new token of its row, ends the row at eos or at a stop string, and hands out
the text decoded so far, holding back what a stop string might still cut. The whole reply and the
streamed pieces come from the same tracker, so they always agree.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from transformers import StoppingCriteria


def cut_stops(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might be the start of a stop string (so cannot be shown yet)."""
    held = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:k]):
                held = k
                break
    return held


class RowTracker:
    """The state of one reply while it is generated."""

    def __init__(self, tokenizer: Any, eos_ids: Sequence[int], stops: Sequence[str], max_new_tokens: int,
                 sink: Any = None) -> None:
        """``sink`` (optional) has ``piece(text)``, called with each new piece of shown text, and ``cancelled``,
        which ends the row early when it turns true (a reader who stopped listening)."""
        self.tokenizer, self.eos, self.stops, self.max_new = tokenizer, set(eos_ids), list(stops), max_new_tokens
        self.sink = sink
        self.ids: list[int] = []
        self.done = False
        self.reason = "length"
        self.text = ""
        self.shown = ""
        self.eos_seen = False

    def _decode(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token: int) -> None:
        """One new token of this row (ignored once the row has ended)."""
        if self.done:
            return
        if self.sink is not None and self.sink.cancelled:
            self.done, self.reason = True, "stop"
            return
        self.ids.append(token)
        if token in self.eos:
            self.done, self.reason = True, "stop"
            self.ids.pop()  # eos counts as generated but is not text
            self.text = self._decode()
            self.eos_seen = True
        else:
            if self.stops or self.sink is not None:  # otherwise the text is needed only at the end
                self.text, hit = cut_stops(self._decode(), self.stops)
                if hit:
                    self.done, self.reason = True, "stop"
            if not self.done and len(self.ids) >= self.max_new:
                self.done = True
        if self.sink is not None and not self.done:
            safe = self.text.rstrip("\ufffd")
            safe = safe[:len(safe) - _held_back(safe, self.stops)]
            if len(safe) > len(self.shown) and safe.startswith(self.shown):  # never take back shown text
                self.sink.piece(safe[len(self.shown):])
                self.shown = safe

    def finish(self) -> tuple[str, int, str]:
        """(text, generated tokens, finish reason); streams the rest of the text and ends the stream."""
        if not self.stops and self.sink is None:
            self.text = self._decode()
        text = self.text.rstrip("\ufffd")  # a reply cut by max_new_tokens inside a multi-byte character
        n = len(self.ids) + int(self.eos_seen)
        if self.sink is not None and len(text) > len(self.shown) and text.startswith(self.shown):
            self.sink.piece(text[len(self.shown):])
            self.shown = text
        return text, n, self.reason


class TrackerCriteria(StoppingCriteria):
    """Feeds each step's new tokens to the rows' trackers; a row is finished when its tracker says so."""

    def __init__(self, trackers: Sequence[RowTracker], prompt_width: int) -> None:
        self.trackers, self.width = list(trackers), prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for t, tok in zip(self.trackers, last):
            if input_ids.shape[1] > self.width:
                t.push(int(tok))
        return torch.tensor([t.done for t in self.trackers], device=input_ids.device, dtype=torch.bool)
