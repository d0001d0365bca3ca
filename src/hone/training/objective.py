"""What the training loop asks of a training objective, and supervised fine-tuning as the first one.

The loop is written once. It asks its objective to lay rows out as the forwards of a micro-batch, to count
the tokens a step's loss is divided by, and for the module whose ``forward(**batch)`` returns (loss_sum, n).
Another objective (preference pairs, say) is another class with these methods, not another loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch

from ..data.collate import collate, n_supervised
from ..data.encode import IGNORE_INDEX, Encoded
from .loss import CausalLMLoss


class Objective(Protocol):
    """The three things the loop needs from an objective."""

    def batch(self, rows: Sequence[Any], *, train: bool = True) -> dict[str, torch.Tensor]:
        """One micro-batch from ``rows``; no rows (a process idle this micro-step) gives a zero-loss batch."""
        ...

    def batches(self, rows: Sequence[Any]) -> list[dict[str, torch.Tensor]]:
        """A training micro-batch laid out as one or more forwards; their summed losses are the micro-batch's."""
        ...

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        """The tokens of ``batch`` that the step's summed loss is normalised by."""
        ...

    def loss_module(self, model: Any) -> torch.nn.Module:
        """The module the loop (and DDP / FSDP / DeepSpeed) runs: ``forward(**batch)`` -> (loss_sum, n)."""
        ...


@dataclass(frozen=True)
class SFT:
    """Next-token cross-entropy on the labelled (reply) tokens, normalised by their count."""

    pad_id: int
    packing: bool
    filler: Encoded
    """Any encoded row: its first tokens, all unlabelled, make the batch of a process that has no row."""
    full_forward: bool = False
    max_tokens: int = 0
    """With packing, the most tokens per forward (0: no limit); a longer row runs alone."""

    def batch(self, rows: Sequence[Encoded], *, train: bool = True) -> dict[str, torch.Tensor]:
        if not rows:  # zero loss, yet the same forward and collectives as the other processes
            rows = [Encoded(self.filler.input_ids[:8], [IGNORE_INDEX] * len(self.filler.input_ids[:8]))]
        return collate(rows, self.pad_id, self.packing and train)

    def batches(self, rows: Sequence[Encoded]) -> list[dict[str, torch.Tensor]]:
        if not (self.packing and self.max_tokens) or not rows:
            return [self.batch(rows)]
        groups: list[list[Encoded]] = [[]]
        used = 0
        for r in rows:  # in order, so the rows of a step and their layout depend on nothing else
            if groups[-1] and used + len(r.input_ids) > self.max_tokens:
                groups.append([])
                used = 0
            groups[-1].append(r)
            used += len(r.input_ids)
        return [self.batch(g) for g in groups]

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return n_supervised(batch)

    def loss_module(self, model: Any) -> CausalLMLoss:
        return CausalLMLoss(model, full_forward=self.full_forward)
