"""Model FLOPs of one B1 epoch (LoRA training of a decoder) and the machine's matmul peak.

Per real token t of a row of length s (all terms are multiply-adds counted as 2 FLOPs):
  4·N_block               frozen block linears: forward 2N, backward input-gradient 2N, no weight gradient
  6·N_lora                LoRA matrices: forward 2, input-gradient 2, weight-gradient 2 per parameter
  12·L·d_attn·s           attention scores and weighted sum: forward 4·L·d_attn·s, backward twice that
and per supervised token (the output layer is needed only where the loss is; counted so for every tool):
  4·N_head                output layer forward 2, backward input-gradient 2 (it is frozen)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Shape:
    layers: int
    d_attn: int        # attention heads × head dim (the width of the q·k and attention·v products)
    n_block: int       # parameters of the linear layers inside the decoder blocks
    n_head: int        # parameters of the output layer (vocab × hidden)
    n_lora: int        # LoRA parameters for rank r on every block linear


def shape(model_dir: Path, rank: int) -> Shape:
    """Counts from the model's config, built on the meta device (no weights are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    n_block = n_lora = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LORA_TARGETS:
            n_block += mod.weight.numel()
            n_lora += rank * (mod.in_features + mod.out_features)
    head = model.get_output_embeddings()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return Shape(cfg.num_hidden_layers, cfg.num_attention_heads * head_dim, n_block, head.weight.numel(), n_lora)


def epoch_flops(s: Shape, real_tokens: int, supervised_tokens: int, attn_sq: int) -> float:
    """Model FLOPs of one pass over rows with these totals (attn_sq: sum over rows of length squared)."""
    linear = (4 * s.n_block + 6 * s.n_lora) * real_tokens
    attention = 12 * s.layers * s.d_attn * attn_sq
    head = 4 * s.n_head * supervised_tokens
    return float(linear + attention + head)


def matmul_peak(dtype_name: str, threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n×n matmul in this dtype with `threads` threads (best of `repeats`, after a warm-up)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(n, n, dtype=dtype)
        b = torch.randn(n, n, dtype=dtype)
        torch.matmul(a, b)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(old)
    return 2 * n ** 3 / best


def mfu(flops: float, train_s: Any, peak: float) -> float | None:
    if not isinstance(train_s, (int, float)) or train_s <= 0 or peak <= 0:
        return None
    return flops / train_s / peak
