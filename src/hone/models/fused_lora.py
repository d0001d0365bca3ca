"""LoRA linear layers as one autograd function on a CPU: the adapter's work folded into the base matmuls.

peft computes a LoRA layer as ``base(x) + lora_B(lora_A(dropout(x))) * scaling``: besides the base matmul and
the two thin adapter matmuls, that is a multiply and an add over the whole output in the forward, a multiply
backward, an add of the two input gradients, and (under autocast) a cast of each adapter weight with its
cast-backward, each a separate pass over memory. On a CPU those passes cost as much as a third of the base
layer's own time. Here one function computes the same sums with the adapter term accumulated into the base
matmul's output (``addmm``: ``y = x W^T + s (x A^T) B^T``) and, backward, into the base input gradient
(``dx = g W + s (g B) A``), while ``dA = s (g B)^T x`` and ``dB = s g^T (x A^T)``.

It covers the plain case only: one active adapter (its dropout drawn by peft's own dropout module, so the
random mask is the one peft would draw), no DoRA or other variant, an ``nn.Linear`` base layer that is frozen
and has no hooks on it (DeepSpeed ZeRO-3 and offloading gather weights through hooks). Any other call runs
peft's own forward unchanged. In fp32 the result equals peft's within rounding; under bf16 autocast the adapter
term is added before rounding to bf16, once, where peft rounds it three times.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

_ATTR = "_hone_fused_forward"


class _LoraLinear(torch.autograd.Function):
    """``y = x W^T + bias + scaling * (xd A^T) B^T``, where ``xd`` is the adapter's (dropped-out) input, or
    ``x`` itself when it is None."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, xd: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None,
                a: torch.Tensor, b: torch.Tensor, scaling: float, dtype: torch.dtype) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(dtype)
        xa = x2 if xd is None else xd.reshape(-1, shape[-1]).to(dtype)
        w, ad, bd = weight.to(dtype), a.to(dtype), b.to(dtype)
        h = xa @ ad.t()
        y = F.linear(x2, w, None if bias is None else bias.to(dtype))
        y.addmm_(h, bd.t(), alpha=scaling)
        ctx.save_for_backward(xa, w, ad, bd, h)
        ctx.meta = (shape, x.dtype, None if xd is None else xd.dtype, a.dtype, b.dtype,
                    None if bias is None else bias.dtype, scaling)
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xa, w, ad, bd, h = ctx.saved_tensors
        shape, x_dtype, xd_dtype, a_dtype, b_dtype, bias_dtype, scaling = ctx.meta
        g = grad.reshape(-1, grad.shape[-1]).to(w.dtype)
        gb = g @ bd  # (tokens, rank): the gradient at the adapter's middle, before scaling
        dx = dxd = None
        if xd_dtype is None and ctx.needs_input_grad[0]:  # one input: both terms of its gradient in one pass
            dx = (g @ w).addmm_(gb, ad, alpha=scaling).view(shape).to(x_dtype)
        elif xd_dtype is not None:
            dx = (g @ w).view(shape).to(x_dtype) if ctx.needs_input_grad[0] else None
            dxd = (gb @ ad).mul_(scaling).view(shape).to(xd_dtype) if ctx.needs_input_grad[1] else None
        da = (gb.t() @ xa).mul_(scaling).to(a_dtype) if ctx.needs_input_grad[4] else None
        db = (g.t() @ h).mul_(scaling).to(b_dtype) if ctx.needs_input_grad[5] else None
        dbias = g.sum(0).to(bias_dtype) if ctx.needs_input_grad[3] else None
        return dx, dxd, None, dbias, da, db, None, None


def _plain_adapter(layer: Any) -> str | None:
    """The one active adapter's name when this call is the plain case the function covers, else None."""
    if layer.disable_adapters or layer.merged or getattr(layer, "fan_in_fan_out", False):
        return None
    active = layer.active_adapters
    if len(active) != 1 or active[0] not in layer.lora_A or active[0] in getattr(layer, "lora_variant", {}):
        return None
    name = active[0]
    if getattr(layer, "use_dora", {}).get(name) or getattr(layer, "lora_bias", {}).get(name):
        return None
    if type(layer.lora_dropout[name]) not in (torch.nn.Identity, torch.nn.Dropout):
        return None
    base, lora_a, lora_b = layer.base_layer, layer.lora_A[name], layer.lora_B[name]
    if type(base) is not torch.nn.Linear or base.weight.requires_grad or hasattr(base.weight, "ds_id"):
        return None
    if lora_a.bias is not None or lora_b.bias is not None or type(lora_a) is not torch.nn.Linear:
        return None
    for m in (layer, base, lora_a, lora_b):
        if m._forward_hooks or m._forward_pre_hooks or getattr(m, "_hf_hook", None) is not None:
            return None
    return name


def _forward(layer: Any, original: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = None if args or kwargs or x.device.type != "cpu" else _plain_adapter(layer)
    if name is None:
        return original(x, *args, **kwargs)
    base, a, b = layer.base_layer, layer.lora_A[name].weight, layer.lora_B[name].weight
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
    elif x.dtype == base.weight.dtype == a.dtype == b.dtype:
        dtype = x.dtype
    else:  # mixed dtypes without autocast: peft's own casting rules apply
        return original(x, *args, **kwargs)
    drop = layer.lora_dropout[name]
    # peft's own dropout call, so the random mask (and the RNG stream after it) is the one peft would draw
    xd = drop(x) if isinstance(drop, torch.nn.Dropout) and drop.p > 0 and drop.training else None
    with torch.autocast("cpu", enabled=False):
        return _LoraLinear.apply(x, xd, base.weight, base.bias, a, b, float(layer.scaling[name]), dtype)


def fuse_lora(model: Any) -> int:
    """Route every peft LoRA ``Linear`` of ``model`` through the fused function when a call is the plain case
    on a CPU (checked at each call); returns how many layers were routed."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # pragma: no cover - peft is a dependency
        return 0
    n = 0
    for m in model.modules():
        if type(m) is LoraLinear and not hasattr(m, _ATTR):
            original = m.forward
            m.forward = functools.partial(_forward, m, original)
            setattr(m, _ATTR, original)
            n += 1
    return n


def unfuse_lora(model: Any) -> int:
    """Undo ``fuse_lora``: peft's own forward again; returns how many layers were restored."""
    n = 0
    for m in model.modules():
        if hasattr(m, _ATTR):
            del m.forward
            delattr(m, _ATTR)
            n += 1
    return n
