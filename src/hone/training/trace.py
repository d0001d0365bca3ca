"""Which rows reached the model: a digest of every sequence in each batch as the model receives it.

With ``HONE_TRACE_ROWS=1`` in the environment every training record in ``metrics.jsonl`` gets a ``fed``
field listing, in order, a short digest of each row's token ids taken from the very tensors passed to the
model (a packed sequence is split at its position-id resets back into rows). Comparing two runs' ``fed``
lists proves they trained on the same rows in the same order, independently of the batch plan that chose
them. Off by default: it costs a hash of every row.
"""
from __future__ import annotations

import hashlib
import os
from typing import Sequence

import torch

ENV = "HONE_TRACE_ROWS"


def enabled() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def row_digest(ids: Sequence[int]) -> str:
    """The id of one row: the first 12 hex digits of sha256 over its token ids."""
    return hashlib.sha256(torch.as_tensor(list(ids), dtype=torch.int64).numpy().tobytes()).hexdigest()[:12]


def rows_fed(batch: dict[str, torch.Tensor]) -> list[str]:
    """Digests of the rows in one batch, in order: padded rows without their padding, packed rows split."""
    ids = batch["input_ids"].detach().cpu()
    out = []
    for i in range(ids.shape[0]):
        seq = ids[i]
        if "attention_mask" in batch:
            out.append(row_digest(seq[batch["attention_mask"][i].cpu().bool()].tolist()))
        elif "position_ids" in batch:
            pos = batch["position_ids"][i].cpu()
            starts = (pos == 0).nonzero().flatten().tolist() + [len(seq)]
            out += [row_digest(seq[a:b].tolist()) for a, b in zip(starts, starts[1:]) if b > a]
        else:
            out.append(row_digest(seq.tolist()))
    return out
