"""Batches: padding to the longest row, or packing several rows into one sequence.

A batch carries ``loss_weights`` (float, the shape of ``labels``) only when some row's reply has a
``loss_weight`` other than 1; the loss multiplies the cross-entropy at label position t by it.

Packed rows keep attention within each row: position ids restart at 0 for every row, and
transformers' attention (sdpa, flash-attention) builds a block-diagonal mask from those resets.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .encode import IGNORE_INDEX, Encoded


def pad_batch(rows: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rows to the longest; padding has attention 0 and label IGNORE_INDEX."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        mask[i, :n] = 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    if any(r.weights is not None for r in rows):
        weights = torch.ones((len(rows), width), dtype=torch.float32)
        for i, r in enumerate(rows):
            if r.weights is not None:
                weights[i, :len(r.weights)] = torch.tensor(r.weights, dtype=torch.float32)
        _add_weights(batch, weights)
    return batch


def pack_batch(rows: Sequence[Encoded]) -> dict[str, torch.Tensor]:
    """All rows in one sequence of batch size 1, position ids restarting per row.

    The first label of every row is masked so no row learns to predict across a row boundary.
    """
    ids: list[int] = []
    labels: list[int] = []
    pos: list[int] = []
    weights: list[float] = []
    for r in rows:
        ids += r.input_ids
        labels += [IGNORE_INDEX] + r.labels[1:]
        pos += list(range(len(r.input_ids)))
        weights += r.weights if r.weights is not None else [1.0] * len(r.input_ids)
    batch = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]), "position_ids": torch.tensor([pos])}
    if any(r.weights is not None for r in rows):
        _add_weights(batch, torch.tensor([weights], dtype=torch.float32))
    return batch


def _add_weights(batch: dict[str, torch.Tensor], weights: torch.Tensor) -> None:
    """Attach weights only where they change a labelled position's loss, so plain batches stay plain."""
    if bool((weights[batch["labels"] != IGNORE_INDEX] != 1.0).any()):
        batch["loss_weights"] = weights


def collate(rows: Sequence[Encoded], pad_id: int, packing: bool = False) -> dict[str, torch.Tensor]:
    return pack_batch(rows) if packing else pad_batch(rows, pad_id)


def n_supervised(batch: dict[str, torch.Tensor]) -> int:
    """Labelled positions that carry loss (labels shift left by one against the inputs)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
