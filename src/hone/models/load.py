"""Resolve a model reference to a local directory, and load its tokenizer and weights."""
from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import ModelCfg
from ..errors import ModelError
from . import gguf
from .registry import MODELS

log = logging.getLogger("hone")


def resolve_model(ref: str, *, revision: str | None = None, token: str | None = None) -> Path:
    """A built-in name, a local HF directory, a local .gguf file or a hub id → a local model directory."""
    if ref in MODELS:
        return gguf.pull_builtin(MODELS.get(ref))
    path = Path(ref).expanduser()
    if path.suffix.lower() == ".gguf":
        return gguf.from_gguf_file(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a model directory: it has no config.json")
        return path
    if path.exists():
        raise ModelError(f"{path} is a file but not a .gguf model; pass a model directory, a .gguf file or a "
                         f"built-in name ({', '.join(MODELS.names())})")
    looks_like_path = ref.startswith((".", "/", "~")) or ref.count("/") != 1
    if looks_like_path:
        raise ModelError(f"model '{ref}' is not a built-in name ({', '.join(MODELS.names())}), and no such "
                         "directory or .gguf file exists")
    return _from_hub(ref, revision, token)


def _from_hub(repo_id: str, revision: str | None, token: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, token=token,
                                      allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja",
                                                      "*.tiktoken", "*.py"]))
    except Exception as e:  # offline, unknown repo, gated, ...
        kind = type(e).__name__
        raise ModelError(f"cannot fetch '{repo_id}' from the Hugging Face hub ({kind}: {str(e)[:200]}). If this "
                         "machine is offline, download the model elsewhere and pass its directory with --model, "
                         f"or use a built-in model ({', '.join(MODELS.names())})") from None


def _read_config(model_dir: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{model_dir / 'config.json'}: cannot read it ({e})") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{model_dir / 'config.json'}: expected a JSON object")
    return cfg


def model_type(model_dir: Path) -> str | None:
    """The transformers model_type a model directory declares in its config.json."""
    return _read_config(model_dir).get("model_type")


def _check_remote_code(model_dir: Path, trust: bool) -> None:
    cfg = _read_config(model_dir)
    if cfg.get("auto_map") and not trust:
        raise ModelError(f"{model_dir} ships its own Python code (auto_map in config.json). hone does not run a "
                         "model's code unless you allow it: set trust_remote_code: true if you trust its source")


def load_tokenizer(model_dir: Path, cfg: ModelCfg) -> Any:
    from transformers import AutoTokenizer

    _check_remote_code(model_dir, cfg.trust_remote_code)
    try:
        tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=cfg.trust_remote_code)
    except Exception as e:
        raise ModelError(f"{model_dir}: cannot load the tokenizer ({type(e).__name__}: {e})") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # padding is masked out of attention and loss
    return tok


@dataclass(frozen=True)
class Precision:
    """Where the model runs and in which dtypes: frozen weights in ``weights``, compute in ``compute``."""

    device: str
    weights: torch.dtype
    compute: torch.dtype
    reason: str = ""
    """Why this precision, for the run's first lines."""

    @property
    def mixed(self) -> str:
        """accelerate's mixed_precision setting for this precision."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.compute, "no")


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BF16_CPU_SPEEDUP = 1.5
"""`dtype: auto` trains in bf16 on a CPU whose bf16 matmuls measure at least this much faster than fp32."""


def choose_precision(dtype: str, device: str | None = None, *, train: bool = False) -> Precision:
    """`auto`: bf16 on a GPU that has it, else fp16 on CUDA. On a CPU: fp32, or for training bf16 where this
    CPU's bf16 matmuls measure clearly faster than fp32 (native bf16 instructions: AMX, AVX512-BF16)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    reason = f"dtype {dtype}"
    if dtype == "auto":
        if device == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
            compute = torch.bfloat16 if bf16 else torch.float16
            reason = "dtype auto: bf16 (the GPU supports it)" if bf16 else "dtype auto: fp16 (the GPU has no bf16)"
        elif train and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # processes must agree; each would measure
            compute, reason = torch.float32, "dtype auto: fp32 (several CPU processes)"
        elif train:
            speedup = bf16_matmul_speedup()
            compute = torch.bfloat16 if speedup >= BF16_CPU_SPEEDUP else torch.float32
            how = "set by HONE_BF16_SPEEDUP" if os.environ.get("HONE_BF16_SPEEDUP") else "measured"
            reason = (f"dtype auto: {'bf16 autocast' if compute == torch.bfloat16 else 'fp32'} (bf16 matmuls "
                      f"{how} {speedup:.2f}x fp32 on this CPU; bf16 needs {BF16_CPU_SPEEDUP}x)")
        else:
            compute = torch.float32
            reason = "dtype auto: fp32 (CPU)"
    else:
        compute = _DTYPES[dtype]
    if device == "cpu" and compute == torch.float16:
        raise ModelError("dtype fp16 needs a GPU; on CPU use fp32, or bf16 where the CPU supports it")
    # Frozen weights in the compute dtype on CPU too: measured with bf16 LoRA steps, fp32 weights under autocast
    # were no faster and no closer to fp32 losses, and took twice the memory.
    return Precision(device, compute, compute, reason)


def bf16_matmul_speedup() -> float:
    """fp32 time / bf16 time of the same matmul on this CPU, measured once per process (about 0.3 s).

    Measured, never assumed: bf16 runs 2-6x faster than fp32 where the CPU has native bf16 instructions and
    slower where it is emulated. ``HONE_BF16_SPEEDUP`` set to a number is taken instead (repeatable runs)."""
    given = os.environ.get("HONE_BF16_SPEEDUP")
    if given:
        try:
            return float(given)
        except ValueError:
            raise ModelError(f"HONE_BF16_SPEEDUP must be a number (fp32 time / bf16 time), got {given!r}") from None
    return _measure_bf16_speedup()


@functools.lru_cache(maxsize=None)
def _measure_bf16_speedup() -> float:
    """Best of several interleaved timings of one 512x1024x1024 matmul in each dtype."""
    import time

    g = torch.Generator().manual_seed(0)
    a32, b32 = torch.randn(512, 1024, generator=g), torch.randn(1024, 1024, generator=g)
    pairs = {torch.float32: (a32, b32), torch.bfloat16: (a32.bfloat16(), b32.bfloat16())}
    best = {dt: float("inf") for dt in pairs}
    for _ in range(2):  # warm-up: the first calls pick kernels
        for a, b in pairs.values():
            torch.mm(a, b)
    for _ in range(5):
        for dt, (a, b) in pairs.items():
            t = time.perf_counter()
            for _ in range(3):
                torch.mm(a, b)
            best[dt] = min(best[dt], time.perf_counter() - t)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def check_attention(attn_impl: str, device: str) -> None:
    if attn_impl.startswith("flash_attention"):
        pkg = "flash_attn_interface" if attn_impl.endswith("3") else "flash_attn"
        if device != "cuda":
            raise ModelError(f"attn_impl {attn_impl} needs a CUDA GPU; on this machine use attn_impl: sdpa")
        if importlib.util.find_spec(pkg) is None:
            raise ModelError(f"attn_impl {attn_impl} needs the {pkg} package: pip install 'hone[flash]' "
                             "(or use attn_impl: sdpa)")


def quantization_config(bits: int, cfg: ModelCfg, compute: torch.dtype) -> Any:
    if not torch.cuda.is_available():
        raise ModelError("QLoRA (a 4/8-bit base model) needs a CUDA GPU: bitsandbytes quantizes on the GPU. "
                         "On this machine use tuning: lora (same adapters, unquantized base)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError("QLoRA needs bitsandbytes: pip install 'hone[qlora]'")
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    qc = compute if cfg.quant_compute_dtype == "auto" else _DTYPES[cfg.quant_compute_dtype]
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg.quant_type,
                              bnb_4bit_use_double_quant=cfg.double_quant, bnb_4bit_compute_dtype=qc)


def load_model(model_dir: Path, cfg: ModelCfg, precision: Precision, *, quant_bits: int = 0,
               device_map: Any = None) -> Any:
    """Load the causal LM with its frozen weights in ``precision.weights``."""
    from transformers import AutoModelForCausalLM

    _check_remote_code(model_dir, cfg.trust_remote_code)
    check_attention(cfg.attn_impl, precision.device)
    kwargs: dict[str, Any] = {"dtype": precision.weights, "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_impl != "auto":  # `auto`: transformers picks the best the model supports (sdpa, else eager)
        kwargs["attn_implementation"] = cfg.attn_impl
    if quant_bits:
        kwargs["quantization_config"] = quantization_config(quant_bits, cfg, precision.compute)
        kwargs["device_map"] = device_map or {"": torch.cuda.current_device()}
    elif device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    except (OSError, ValueError) as e:
        if cfg.attn_impl != "auto" and _is_attention_refusal(str(e)):
            raise ModelError(f"{model_dir}: this model cannot use attn_impl {cfg.attn_impl} ({str(e)[:200]}). "
                             "Use attn_impl: auto (the best the model supports) or eager") from None
        raise ModelError(f"{model_dir}: cannot load the model ({type(e).__name__}: {str(e)[:300]})") from None
    except pickle.UnpicklingError:  # torch.load(weights_only=True) met a pickle that is more than tensors
        raise ModelError(f"{model_dir}: refused to load its pickled weights (.bin/.pt): they hold objects other than "
                         "tensors, and loading them could run code. Use a copy in safetensors format from a source "
                         "you trust") from None
    return model


def _is_attention_refusal(message: str) -> bool:
    m = message.lower()
    return "attention implementation" in m or "attn_implementation" in m
