"""Attention for packed rows on a CPU: each row attends causally to itself, one row at a time.

A packed forward holds several rows in one sequence. transformers' sdpa path keeps them apart with a
block-diagonal mask over the whole sequence, and with a mask the CPU kernel computes every block, the ones
between rows and above the diagonal included. Run per row instead, with ``is_causal``, the same attention
costs a fraction: measured 2.7x less time for four rows of about 115 tokens (fwd + bwd, one layer).

The CPU kernel's speed in bf16 and fp32 also differs by machine (fp32 ran 1.6x faster on short rows of an AMD
EPYC with AVX512-BF16, about level at 512 tokens): under autocast the rows run in whichever dtype a short
timing before training finds faster, fp32 being exact for bf16 inputs.

Anything this path does not cover (a batch of several padded rows, a sliding window shorter than a row, logit
softcapping, attention sinks, an unknown argument) goes to transformers' own sdpa function unchanged, with
the mask transformers built for it.
"""
from __future__ import annotations

import itertools
import time
from typing import Any

import torch
import torch.nn.functional as F

NAME = "hone_rows_sdpa"
"""The attention implementation name models are switched to while training packed rows on a CPU."""

_DTYPE: dict[tuple[int, int, int, torch.dtype], torch.dtype] = {}
"""(heads, kv heads, head dim, input dtype) -> the dtype rows are computed in, timed by ``use_row_attention``."""

# keyword arguments the model may pass that this path handles; any other one sends the call to sdpa as it is
_HANDLED = {"position_ids", "dropout", "scaling", "sliding_window", "use_cache", "cache_position",
            "output_attentions", "is_causal", "output_router_logits", "output_hidden_states", "return_dict"}


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, rows_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # padded batches keep exactly sdpa's mask


def use_row_attention(model: Any, compute: torch.dtype = torch.float32) -> bool:
    """Switch ``model`` (its sdpa attention, on a CPU) to per-row attention; True when it was switched.

    ``compute``: the dtype attention inputs arrive in (bf16 under bf16 autocast). Where it is not fp32, the
    faster of it and fp32 is timed here, before any forward: a timing inside a forward would add tensors to
    what activation checkpointing saves, and the recomputation would not match.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) != "sdpa" or base.device.type != "cpu":
        return False
    _register()
    base.set_attn_implementation(NAME)
    cfg = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    heads = int(getattr(cfg, "num_attention_heads", 0) or 0)
    if compute != torch.float32 and heads:
        kv = int(getattr(cfg, "num_key_value_heads", 0) or heads)
        dim = int(getattr(cfg, "head_dim", 0) or cfg.hidden_size // heads)
        _DTYPE[(heads, kv, dim, compute)] = fastest_dtype(heads, kv, dim, compute)
    return True


def row_lengths(position_ids: torch.Tensor) -> list[int] | None:
    """The lengths of the rows packed in a (1, L) position-id tensor: a row starts where ids stop counting up
    by one (transformers' own rule for packed sequences). None when it is not a single sequence."""
    if position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return None
    pos = position_ids[0]
    starts = [0] + ((pos[1:] - pos[:-1]) != 1).nonzero().flatten().add(1).tolist() + [pos.numel()]
    return [b - a for a, b in itertools.pairwise(starts)]


def rows_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: (B, H, L, D) query, (B, Hkv, L, D) key/value -> (B, L, H, D)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    lengths = _rows(module, query, key, attention_mask, kwargs)
    if lengths is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    dtype = _DTYPE.get((query.shape[1], key.shape[1], query.shape[-1], query.dtype), query.dtype)
    gqa = query.shape[1] != key.shape[1]
    outs = []
    with torch.autocast("cpu", enabled=False):  # the dtype is chosen here, not by autocast's op list
        for q, k, v in zip(*(t.to(dtype).split(lengths, dim=2) for t in (query, key, value))):
            outs.append(F.scaled_dot_product_attention(q, k, v, dropout_p=kwargs.get("dropout", 0.0) or 0.0,
                                                       scale=kwargs.get("scaling"), is_causal=True, enable_gqa=gqa))
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _rows(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
          kwargs: dict[str, Any]) -> list[int] | None:
    """Row lengths when this call is causal self-attention over one packed sequence this path covers."""
    if query.device.type != "cpu" or query.shape[0] != 1 or key.shape[2] != query.shape[2] or query.shape[2] < 2:
        return None
    if set(kwargs) - _HANDLED or kwargs.get("output_attentions") or kwargs.get("is_causal") is False:
        return None
    if not getattr(module, "is_causal", True) or kwargs.get("position_ids") is None:
        return None
    lengths = row_lengths(kwargs["position_ids"])
    if lengths is None or sum(lengths) != query.shape[2]:
        return None
    if len(lengths) == 1 and attention_mask is not None:  # one row with a mask: it may hold padding
        return None
    window = kwargs.get("sliding_window")
    if window is not None and max(lengths) > window:  # the window would cut into a row: the mask knows how
        return None
    return lengths


def fastest_dtype(heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> torch.dtype:
    """``dtype`` or fp32, whichever runs causal attention (fwd + bwd) of a 256-token row faster here."""
    if dtype == torch.float32:
        return dtype
    timings = {}
    with torch.autocast("cpu", enabled=False), torch.enable_grad():
        for d in (dtype, torch.float32) * 3:  # interleaved, best of three: the first round warms up
            q = torch.randn(1, heads, 256, head_dim, dtype=d, requires_grad=True)
            k, v = (torch.randn(1, kv_heads, 256, head_dim, dtype=d, requires_grad=True) for _ in range(2))
            start = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=heads != kv_heads).sum().backward()
            timings[d] = min(timings.get(d, float("inf")), time.perf_counter() - start)
    return torch.float32 if timings[torch.float32] < timings[dtype] else dtype
