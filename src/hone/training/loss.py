"""Next-token cross-entropy summed over labelled positions, as the model's own forward defines its loss.

Fast path: the decoder runs once, then the output layer, and whatever the family's forward does after it
(logit softcapping or scaling: ``models.registry.LOSS_FAMILIES``), runs only where labels exist, in chunks
recomputed in backward. MoE families add their own router load-balancing loss with their own coefficient.
A model type not in the table is refused unless the caller asks for the model's own full forward.

The loss is a *sum*; the loop divides by the supervised tokens of the whole accumulated batch (across
processes too), so accumulation and data parallelism give exactly the update of one big batch. Optional
``loss_weights`` (shaped and aligned like labels) weight each label's term; the normaliser stays the count.

The router auxiliary loss is a mean over one micro-batch's tokens, so it enters the sum as coef * aux * n
(n: that micro-batch's supervised tokens): one micro-batch gives exactly ``forward(labels=...).loss``, and an
accumulated batch the token-weighted mean of its micro-batches' auxiliary losses.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..data.encode import IGNORE_INDEX
from ..errors import ModelError
from ..models.registry import LOSS_FAMILIES, LossFamily

CHUNK = 2048  # supervised positions per output-layer chunk

LogitsOp = Callable[[torch.Tensor], torch.Tensor]


def loss_family(model_type: str | None, full_forward: bool = False) -> LossFamily | None:
    """The fast-path recipe for ``model_type``; None when the model's own full forward is asked for."""
    if full_forward:
        return None
    family = LOSS_FAMILIES.get(model_type or "")
    if family is None:
        raise ModelError(
            f"model type '{model_type}' is not one of the families hone's fast loss is tested on "
            f"({', '.join(sorted(LOSS_FAMILIES))}). Its forward may do more after the last layer than the output "
            "layer (logit softcapping or scaling, auxiliary losses), which the fast path would silently skip. "
            "Set full_forward_loss: true to train through the model's own forward (exact for any family; "
            "slower, and it holds every position's logits)")
    return family


def logits_op(family: LossFamily, config: Any) -> LogitsOp | None:
    """What the family's forward applies to ``lm_head(hidden)``, read from its config; None for nothing."""
    value = getattr(config, family.config_key, None) if family.config_key else None
    if family.logits == "plain" or value is None:  # transformers skips an unset cap or scale the same way
        return None
    c = float(value)
    ops: dict[str, LogitsOp] = {"softcap": lambda x: torch.tanh(x / c) * c, "scale": lambda x: x * c,
                                "divide": lambda x: x / c}
    return ops[family.logits]


CE_BLOCK = 1 << 22
"""fp32 logit elements (16 MiB) per block of ``_CrossEntropy``: one block of rows stays in the CPU's cache."""


class _CrossEntropy(torch.autograd.Function):
    """Summed (weighted) cross-entropy of bf16/fp16/fp32 logits, computed in fp32 a block of rows at a time.

    The same sums as upcasting the whole logits matrix and calling ``F.cross_entropy``, without its
    full-size fp32 copies: the upcast, the log-probabilities kept for backward, the zero-filled gradient and
    its cast back each read or write ``n x vocab`` floats. Here the forward keeps the logits as they came and
    one log-sum-exp per row, and the backward writes ``weight * (softmax - one_hot)`` straight into a gradient
    of the logits' own dtype.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        rows = max(1, CE_BLOCK // max(1, logits.shape[-1]))
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        picked = logits.gather(1, target[:, None]).squeeze(1).float()
        for i in range(0, logits.shape[0], rows):
            lse[i:i + rows] = torch.logsumexp(logits[i:i + rows].float(), dim=-1)
        terms = lse - picked
        ctx.save_for_backward(logits, target, lse, weight)
        return (terms * weight).sum() if weight is not None else terms.sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, target, lse, weight = ctx.saved_tensors
        rows = max(1, CE_BLOCK // max(1, logits.shape[-1]))
        scale = grad.float() * weight if weight is not None else grad.float().expand(logits.shape[0])
        out = torch.empty_like(logits)
        for i in range(0, logits.shape[0], rows):
            p = logits[i:i + rows].to(torch.float32, copy=True).sub_(lse[i:i + rows, None]).exp_()
            p.scatter_add_(1, target[i:i + rows, None], p.new_full((p.shape[0], 1), -1.0))
            out[i:i + rows] = p.mul_(scale[i:i + rows, None])
        return out, None, None


def _chunk_loss(head: torch.nn.Module, op: LogitsOp | None, hidden: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None) -> torch.Tensor:
    if op is None:
        logits = head(hidden)
        with torch.autocast(hidden.device.type, enabled=False):  # the blocks pick their own dtype (fp32)
            return _CrossEntropy.apply(logits, target, weight)
    logits = op(head(hidden).float())  # upcast before any op, as transformers' loss does
    if weight is None:
        return F.cross_entropy(logits, target, reduction="sum")
    return (F.cross_entropy(logits, target, reduction="none") * weight).sum()


def selected_loss(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor,
                  weights: torch.Tensor | None = None, op: LogitsOp | None = None) -> tuple[torch.Tensor, int]:
    """Sum of (weighted) next-token losses at positions whose label is set; the head sees only those positions.

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
    w = weights[:, 1:][keep].float() if weights is not None else None
    if n <= CHUNK:
        return _chunk_loss(head, op, h, y, w), n
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, n, CHUNK):
        part = w[i:i + CHUNK] if w is not None else None
        total = total + checkpoint(_chunk_loss, head, op, h[i:i + CHUNK], y[i:i + CHUNK], part, use_reentrant=False)
    return total, n


class CausalLMLoss(torch.nn.Module):
    """Wraps a causal LM so that ``forward(batch)`` returns (loss_sum, n_supervised_tokens).

    Being the module that DDP / FSDP / DeepSpeed wrap, its forward is the one they hook for gradient sync.
    ``full_forward``: run the model's own forward over every position instead of the fast path.
    """

    def __init__(self, model: Any, *, full_forward: bool = False) -> None:
        super().__init__()
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        family = loss_family(getattr(base.config, "model_type", None), full_forward)
        self._split = (family is not None and hasattr(base, "get_decoder")
                       and base.get_output_embeddings() is not None)
        self._op = logits_op(family, base.config) if self._split and family else None
        self._balance: Callable[..., torch.Tensor] | None = None
        if self._split and family and family.router_aux and getattr(base.config, "output_router_logits", False):
            # the family's own load-balancing function, from the module that defines its forward
            self._balance = importlib.import_module(type(base).__module__).load_balancing_loss_func
        self._base = [base]  # not a submodule: `model` already registers it

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None,
                loss_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        if not self._split:
            return self._full_forward(input_ids, labels, attention_mask, position_ids, loss_weights)
        base = self._base[0]
        extra = {"output_router_logits": True} if self._balance is not None else {}
        out = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 use_cache=False, **extra)
        loss, n = selected_loss(base.get_output_embeddings(), out.last_hidden_state, labels, loss_weights, self._op)
        if self._balance is not None:
            aux = self._balance(out.router_logits, base.num_experts, base.num_experts_per_tok, attention_mask)
            loss = loss + base.router_aux_loss_coef * aux.float() * n
        return loss, n

    def _full_forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None,
                      position_ids: torch.Tensor | None, loss_weights: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        """The model's own forward(labels=...) loss as a sum: its token mean times the supervised tokens."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         labels=labels, use_cache=False)
        n = int((labels[:, 1:] != IGNORE_INDEX).sum())
        if n == 0:  # the model's mean over no token is NaN; a zero that still reaches every weight instead
            return out.logits.float().sum() * 0.0, 0
        own = out.loss.float() * n
        if loss_weights is None:
            return own, n
        # reweight the token terms; whatever the forward adds beyond them (an auxiliary loss) stays as it is
        plain, _ = selected_loss(torch.nn.Identity(), out.logits, labels)
        weighted, _ = selected_loss(torch.nn.Identity(), out.logits, labels, loss_weights)
        return own - plain + weighted, n
