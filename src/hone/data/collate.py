"""Batches: padding to the longest row, or packing several rows into one sequence.

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
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pack_batch(rows: Sequence[Encoded]) -> dict[str, torch.Tensor]:
    """All rows in one sequence of batch size 1, position ids restarting per row.

    The first label of every row is masked so no row learns to predict across a row boundary.
    """
    ids: list[int] = []
    labels: list[int] = []
    pos: list[int] = []
    for r in rows:
        ids += r.input_ids
        labels += [IGNORE_INDEX] + r.labels[1:]
        pos += list(range(len(r.input_ids)))
    return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]), "position_ids": torch.tensor([pos])}


def collate(rows: Sequence[Encoded], pad_id: int, packing: bool = False) -> dict[str, torch.Tensor]:
    return pack_batch(rows) if packing else pad_batch(rows, pad_id)


def n_supervised(batch: dict[str, torch.Tensor]) -> int:
    """Labelled positions that carry loss (labels shift left by one against the inputs)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
