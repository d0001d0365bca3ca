"""Cross-entropy summed over labelled positions only, with the output layer run only where labels exist.

The loss is a *sum*; the loop divides by the supervised tokens of the whole accumulated batch (across
processes too), so accumulation and data parallelism give exactly the update of one big batch.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..data.encode import IGNORE_INDEX

CHUNK = 2048  # supervised positions per output-layer chunk


def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return F.cross_entropy(logits, target, reduction="sum")


def selected_loss(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of next-token losses at positions whose label is set; the head sees only those positions.

    Large selections go through the head in chunks whose logits are recomputed in the backward pass,
    so memory stays bounded by CHUNK x vocab whatever the sequence length.
    """
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    n = int(keep.sum())
    if n == 0:  # a fully masked micro-batch: zero loss that still reaches every trainable weight, the output
        return head(hidden[:, :1]).float().sum() * 0.0, 0  # layer included (DDP waits for every gradient)
    h = hidden[:, :-1][keep]
    y = target[keep]
    if n <= CHUNK:
        return _chunk_loss(head, h, y), n
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, n, CHUNK):
        total = total + checkpoint(_chunk_loss, head, h[i:i + CHUNK], y[i:i + CHUNK], use_reentrant=False)
    return total, n


class CausalLMLoss(torch.nn.Module):
    """Wraps a causal LM so that ``forward(batch)`` returns (loss_sum, n_supervised_tokens).

    Being the module that DDP / FSDP / DeepSpeed wrap, its forward is the one they hook for gradient sync.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._split = hasattr(base, "get_decoder") and base.get_output_embeddings() is not None
        self._base = [base]  # not a submodule: `model` already registers it

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        base = self._base[0]
        if self._split:
            out = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                     use_cache=False)
            return selected_loss(base.get_output_embeddings(), out.last_hidden_state, labels)
        # a model without a separable output layer: full logits, then the same selection with an identity head
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False).logits
        return selected_loss(torch.nn.Identity(), logits, labels)
