"""Which rows each process sees at each step, and the learning-rate schedule.

The data order is a pure function of (seed, epoch, step), so resuming at step k needs no replay and
sees exactly the rows an uninterrupted run would: nothing twice, nothing skipped. One optimizer step
takes ``batch_size x processes x accumulation`` rows; process r of W takes micro-batch slices r, r+W,
... so W processes see the same global batch as one process with W times the accumulation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchPlan:
    n_rows: int
    batch_size: int
    world: int
    accum: int
    seed: int
    max_steps: int  # -1: use epochs
    epochs: float

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * self.world * self.accum

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_rows / self.rows_per_step)

    @property
    def total_steps(self) -> int:
        if self.max_steps > 0:
            return self.max_steps
        return max(1, math.ceil(self.steps_per_epoch * self.epochs))

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_rows, generator=g).tolist()

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, step within epoch) of a global step (0-based)."""
        return divmod(step, self.steps_per_epoch)

    def micro_batches(self, step: int, rank: int, order: list[int] | None = None) -> list[list[int]]:
        """Row indices of each of the ``accum`` micro-batches process ``rank`` runs at global ``step``.

        The last step of an epoch may be short; every process still runs exactly ``accum`` micro-batches
        (an empty one becomes a fully masked dummy), so no process waits forever on the others and the
        accumulation boundary (DeepSpeed counts micro-batches) stays where it belongs.
        """
        rows = self.step_rows(step, order)
        out = []
        for m in range(self.accum):
            start = (m * self.world + rank) * self.batch_size
            out.append(rows[start:start + self.batch_size])
        return out

    def step_rows(self, step: int, order: list[int] | None = None) -> list[int]:
        """Every row index (all processes) that global ``step`` trains on."""
        epoch, k = self.position(step)
        order = order if order is not None else self.order(epoch)
        return order[k * self.rows_per_step:(k + 1) * self.rows_per_step]


def lr_lambda(kind: str, warmup: int, total: int, min_ratio: float = 0.0):
    """Multiplier of the peak learning rate at each step (a LambdaLR function)."""
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / (warmup + 1)
        if kind in ("constant", "constant_with_warmup"):
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        progress = min(1.0, progress)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        floor = min_ratio if kind == "cosine_with_min_lr" else 0.0
        return floor + (1 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def warmup_steps(warmup_steps: int, warmup_ratio: float, total: int) -> int:
    return warmup_steps if warmup_steps > 0 else int(math.ceil(warmup_ratio * total))
