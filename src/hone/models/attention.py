"""Attention for packed rows on a CPU: each row attends causally to itself, one row at a time.

A packed forward holds several rows in one sequence. transformers' sdpa path keeps them apart with a
block-diagonal mask over the whole sequence, and with a mask the CPU kernel computes every block, the ones
between rows and above the diagonal included. Run per row instead, with ``is_causal``, the same attention
costs a fraction: measured 2.7x less time for four rows of about 115 tokens (fwd + bwd, one layer).

The CPU kernel's speed in bf16 and fp32 also differs by machine (fp32 ran 1.6x faster on short rows of an AMD
EPYC with AVX512-BF16, about level at 512 tokens): under autocast the rows run in whichever dtype a short
timing before training finds faster, fp32 being exact for bf16 inputs.

Short rows (up to ``EAGER_MAX_ROW`` tokens) in bf16 can go faster still as one padded batch through plain
matmuls and a softmax, transformers' eager attention under autocast, where the per-row kernel's fixed cost per
call outweighs its work (measured on a 2-core AMD EPYC, eight rows of about 130 tokens, fwd + bwd: 8 ms against
15 ms per layer; quickstart steps 6.6% faster). Right padding under a causal mask is exact for every real
position (padding comes after a row's tokens, so no real query sees it). Which of the two runs is timed once
before training.

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

_EAGER: set[tuple[int, int, int, torch.dtype]] = set()
"""Shapes (as in ``_DTYPE``) whose short rows run faster as one padded eager batch, timed by ``use_row_attention``."""
EAGER_MAX_ROW = 256
"""Longest row the padded eager path takes: its scores grow with the square of the longest row, and longer rows
gain nothing from batching."""

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
        key = (heads, kv, dim, compute)
        _DTYPE[key] = fastest_dtype(heads, kv, dim, compute)
        if eager_is_faster(heads, kv, dim, compute, _DTYPE[key]):
            _EAGER.add(key)
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
    shape = (query.shape[1], key.shape[1], query.shape[-1], query.dtype)
    dropout = kwargs.get("dropout", 0.0) or 0.0
    if shape in _EAGER and max(lengths) <= EAGER_MAX_ROW and not dropout:
        with torch.autocast("cpu", enabled=False):
            return padded_eager(query, key, value, lengths, kwargs.get("scaling")), None
    dtype = _DTYPE.get(shape, query.dtype)
    gqa = query.shape[1] != key.shape[1]
    outs = []
    with torch.autocast("cpu", enabled=False):  # the dtype is chosen here, not by autocast's op list
        for q, k, v in zip(*(t.to(dtype).split(lengths, dim=2) for t in (query, key, value))):
            outs.append(F.scaled_dot_product_attention(q, k, v, dropout_p=dropout,
                                                       scale=kwargs.get("scaling"), is_causal=True, enable_gqa=gqa))
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def eager_width(config: Any, compute: torch.dtype, lengths: Any) -> int:
    """The widest padded batch the eager path can run for rows of these lengths (0: it never runs)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(getattr(cfg, "num_attention_heads", 0) or 0)
    if not heads:
        return 0
    kv = int(getattr(cfg, "num_key_value_heads", 0) or heads)
    dim = int(getattr(cfg, "head_dim", 0) or cfg.hidden_size // heads)
    if (heads, kv, dim, compute) not in _EAGER:
        return 0
    return max((n for n in lengths if n <= EAGER_MAX_ROW), default=0)


def padded_eager(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, lengths: list[int],
                 scale: float | None = None) -> torch.Tensor:
    """Causal attention of packed rows as one right-padded batch: (1, H, T, D) query, (1, Hkv, T, D) key/value
    -> (1, T, H, D). Scores and probabilities are in the inputs' dtype (the softmax accumulates in fp32)."""
    heads, kv, dim = query.shape[1], key.shape[1], query.shape[-1]
    n, width = len(lengths), max(lengths)
    at = torch.cat([torch.arange(length) + i * width for i, length in enumerate(lengths)]).to(query.device)

    def pad(x: torch.Tensor) -> torch.Tensor:  # (1, h, T, D) -> (n, h, width, D), zeros after each row
        flat = x.new_zeros(n * width, x.shape[1], dim).index_copy(0, at, x[0].transpose(0, 1))
        return flat.view(n, width, x.shape[1], dim).transpose(1, 2)

    group = heads // kv  # query heads sharing one key/value head sit next to each other (transformers' repeat_kv)
    q = pad(query).reshape(n * kv, group * width, dim)
    k, v = pad(key).reshape(n * kv, width, dim), pad(value).reshape(n * kv, width, dim)
    # scores = causal bias + scale * q k^T in one call; -inf above the diagonal of every row's block
    scores = torch.baddbmm(_causal_bias(width, group, query.dtype, query.device), q, k.transpose(1, 2),
                           alpha=scale if scale is not None else dim ** -0.5)
    out = torch.bmm(scores.softmax(-1), v).view(n, heads, width, dim).transpose(1, 2).reshape(n * width, heads, dim)
    return out.index_select(0, at).unsqueeze(0)


_BIAS: dict[tuple[int, int, torch.dtype, torch.device], torch.Tensor] = {}


def _causal_bias(width: int, group: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(group * width, width): 0 where query position i may see key j <= i, -inf elsewhere; kept per shape."""
    key = (width, group, dtype, device)
    if key not in _BIAS:
        if len(_BIAS) > 64:
            _BIAS.clear()
        upper = torch.ones(width, width, dtype=torch.bool, device=device).triu(1).repeat(group, 1)
        _BIAS[key] = torch.zeros(group * width, width, dtype=dtype, device=device).masked_fill(upper, float("-inf"))
    return _BIAS[key]


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


def eager_is_faster(heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, rows_dtype: torch.dtype) -> bool:
    """Whether eight rows of 128 tokens in ``dtype`` run faster (fwd + bwd) as one padded eager batch than one
    row at a time in ``rows_dtype``; never for fp32 inputs, which the row path computes exactly."""
    if dtype == torch.float32:
        return False
    lengths = [128] * 8
    timings: dict[str, float] = {}
    with torch.autocast("cpu", enabled=False), torch.enable_grad():
        for kind in ("eager", "rows") * 3:  # interleaved, best of three: the first round warms up
            q = torch.randn(1, heads, sum(lengths), head_dim, dtype=dtype, requires_grad=True)
            k, v = (torch.randn(1, kv_heads, sum(lengths), head_dim, dtype=dtype, requires_grad=True)
                    for _ in range(2))
            start = time.perf_counter()
            if kind == "eager":
                out = padded_eager(q, k, v, lengths)
            else:
                out = torch.cat([F.scaled_dot_product_attention(a, b, c, is_causal=True, enable_gqa=heads != kv_heads)
                                 for a, b, c in zip(*(t.to(rows_dtype).split(lengths, dim=2) for t in (q, k, v)))],
                                dim=2)
            out.float().sum().backward()
            timings[kind] = min(timings.get(kind, float("inf")), time.perf_counter() - start)
    return timings["eager"] < timings["rows"]
