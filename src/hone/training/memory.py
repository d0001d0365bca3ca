"""How much memory the first step will need, said before it runs and set beside what the machine has.

A run that cannot fit stops at once with what to change, instead of being killed (or swapping) later. The
estimate counts live tensors: what the process holds now (weights, data, libraries), the gradients and
optimizer moments of the trained weights, the activations the backward pass keeps for the longest forward
the data allows, and the output layer's logits on the supervised positions of one chunk.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import TrainingError
from ..models.registry import LOSS_FAMILIES
from .loss import CE_BLOCK, CHUNK, logits_op

log = logging.getLogger("hone")
GiB = 2**30


@dataclass(frozen=True)
class Estimate:
    held: float
    """Bytes held now: process RSS on a CPU, allocated device memory on a GPU."""
    optimizer: float
    activations: float
    loss: float
    tokens: int
    """The most tokens one forward can take with this data and layout."""
    available: float
    device: str

    @property
    def total(self) -> float:
        return self.held + self.optimizer + self.activations + self.loss

    @property
    def fits(self) -> bool:
        return self.total - self.held <= self.available

    def describe(self) -> str:
        g = lambda b: f"{b / GiB:.2f}"  # noqa: E731
        where = "process" if self.device == "cpu" else "GPU"
        return (f"memory estimate {g(self.total)} GiB ({where} now {g(self.held)}, gradients + optimizer state "
                f"{g(self.optimizer)}, activations {g(self.activations)} for {self.tokens} tokens per forward, "
                f"loss {g(self.loss)}); {g(self.available + self.held)} GiB "
                f"{'available' if self.device == 'cpu' else 'free on the GPU'}")

    def record(self) -> dict[str, Any]:
        return {"kind": "estimate", "memory_estimate_gb": round(self.total / GiB, 3),
                "held_gb": round(self.held / GiB, 3), "optimizer_gb": round(self.optimizer / GiB, 3),
                "activations_gb": round(self.activations / GiB, 3), "loss_gb": round(self.loss / GiB, 3),
                "tokens_per_forward": self.tokens, "available_gb": round((self.available + self.held) / GiB, 3)}


def tokens_per_forward(lengths: Sequence[int], batch_size: int, packing: bool, max_tokens: int) -> int:
    """The longest forward this data can produce: padded micro-batches are batch x longest row; packed ones
    the longest rows end to end, cut to ``max_tokens`` (a longer row runs alone)."""
    if not lengths:
        return 0
    top = sorted(lengths)[-batch_size:]
    if not packing:
        return batch_size * top[-1]
    whole = sum(top)
    return min(whole, max(max_tokens, top[-1])) if max_tokens else whole


def activation_bytes_per_token(config: Any, dtype: torch.dtype, checkpointing: bool) -> float:
    """Bytes the backward pass keeps per token: per layer, the block's inputs and outputs that autograd saves
    (norms, q/k/v and rotary copies, attention output, the MLP's gate, up, activation and product)."""
    h = int(getattr(config, "hidden_size", 0) or 0)
    heads = int(getattr(config, "num_attention_heads", 0) or 1)
    head_dim = int(getattr(config, "head_dim", 0) or (h // heads if heads else 0))
    q = heads * head_dim
    kv = int(getattr(config, "num_key_value_heads", 0) or heads) * head_dim
    inter = int(getattr(config, "moe_intermediate_size", 0) or 0) * int(getattr(config, "num_experts_per_tok", 0)
                                                                        or 0)
    inter = inter or int(getattr(config, "intermediate_size", 0) or 4 * h)
    layers = int(getattr(config, "num_hidden_layers", 0) or 1)
    size = torch.finfo(dtype).bits // 8
    per_layer = (4 * h + 3 * q + 3 * kv + 4 * inter) * size
    if checkpointing:  # each layer keeps its input; one layer at a time is recomputed with everything
        return layers * h * size + per_layer
    return layers * per_layer


def estimate(model: Any, lengths: Sequence[int], batch_size: int, packing: bool, max_tokens: int,
             compute: torch.dtype, checkpointing: bool, device: torch.device) -> Estimate:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokens = tokens_per_forward(lengths, batch_size, packing, max_tokens)
    vocab = int(getattr(base.config, "vocab_size", 0) or 0)
    family = LOSS_FAMILIES.get(getattr(base.config, "model_type", None) or "")
    if family is not None and logits_op(family, base.config) is None:  # blockwise cross-entropy: the logits
        per_logit, blocks = 2 * (torch.finfo(compute).bits // 8), CE_BLOCK * 4  # and their gradient as they are
    else:  # the model's own forward, or a softcap / scale: logits upcast to fp32, and their gradient
        per_logit, blocks = (8 if compute == torch.float32 else 10), 0
    if device.type == "cuda":
        held = float(torch.cuda.memory_allocated(device))
        free, _ = torch.cuda.mem_get_info(device)
        available = float(free)
    else:
        import psutil

        held = float(psutil.Process().memory_info().rss)
        available = float(psutil.virtual_memory().available)
    return Estimate(held=held, optimizer=trained * 12.0,  # fp32 gradient + two Adam moments
                    activations=tokens * activation_bytes_per_token(base.config, compute, checkpointing),
                    loss=min(tokens, CHUNK) * vocab * per_logit + blocks, tokens=tokens, available=available,
                    device=device.type)


def check(est: Estimate, enabled: bool, max_tokens: int, say: bool = True) -> None:
    """Stop before the first step when the estimate exceeds what is available; ``say``: log the estimate."""
    if say:
        log.info(est.describe())
    if est.fits or not enabled:
        return
    lower = f"max_forward_tokens (now {max_tokens}), " if max_tokens else "batch_size, "
    raise TrainingError(
        f"this run needs about {est.total / GiB:.1f} GiB but {(est.available + est.held) / GiB:.1f} GiB is "
        f"available ({est.describe()}). Lower {lower}max_length, or set gradient_checkpointing: true; "
        "for large models use tuning: lora or qlora instead of full. Set check_memory: false to start anyway")
