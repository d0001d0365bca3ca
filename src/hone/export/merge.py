"""A run's weights (LoRA/DoRA adapter or full weights) as a plain Hugging Face model directory.

The directory holds safetensors, config, tokenizer (with the chat template hone trained with) and generation
config, and loads with transformers alone. It is built in a staging folder beside its final place and renamed
into place only when complete, so a killed export never leaves a half-written model under the final name.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..integrity import write_manifest
from ..models.load import resolve_model
from ..runs import RunInfo, read_run, run_dir_of
from .tokenizer import ExportError, export_tokenizer, stop_token_ids

log = logging.getLogger("hone")

MANIFEST = "hone_export.json"
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Source:
    """What an export reads: the run, the folder of weights, and the base model directory."""

    run: RunInfo
    weights: Path
    base_dir: Path
    adapter: bool

    @property
    def default_out(self) -> Path:
        """``checkpoint-N-merged`` beside a checkpoint, ``<run>/merged`` for final weights."""
        if self.weights == self.run.run_dir:
            return self.run.run_dir / "merged"
        return self.weights.parent / f"{self.weights.name}-merged"


def locate(path: str | Path, which: str = "final") -> Source:
    """The run and weights named by ``path`` (a run directory, or a checkpoint inside one)."""
    run = read_run(path)
    p = Path(path)
    weights = p if run_dir_of(p) == p.parent and p != run.run_dir else run.weights_dir(which)
    if weights != run.run_dir:
        from ..training.checkpoint import problems

        bad = problems(weights)
        if bad:
            raise ExportError(f"{weights} is not a whole checkpoint ({'; '.join(bad[:3])}); export the run's final "
                              "weights or another checkpoint")
    adapter = (weights / "adapter_config.json").is_file()
    if not adapter and not (weights / "config.json").is_file():
        raise ExportError(f"{weights} holds neither an adapter (adapter_config.json) nor full weights "
                          "(config.json); pass a finished run or one of its checkpoint-N folders")
    base_ref = run.model_dir or run.model
    base_dir = resolve_model(base_ref)
    return Source(run, weights, base_dir, adapter)


def quantized_reason(src: Source) -> str | None:
    """Why merging would lose precision (the adapter was trained against a quantized base), or None."""
    if src.run.method == "qlora":
        return "the run trained QLoRA, so its adapter learned against a 4/8-bit quantized base"
    cfg = json.loads((src.base_dir / "config.json").read_text())
    if cfg.get("quantization_config"):
        method = cfg["quantization_config"].get("quant_method", "quantized")
        return f"the base model {src.base_dir} is quantized ({method})"
    return None


def merge_run(path: str | Path, out: str | Path | None = None, *, which: str = "final", dtype: str = "auto",
              force: bool = False, overwrite: bool = False) -> Path:
    """Merge the run's adapter into its base (or copy full weights) and save a plain HF directory; its path."""
    src = locate(path, which)
    final = Path(out) if out is not None else src.default_out
    reason = quantized_reason(src) if src.adapter else None
    if reason and not force:
        raise ExportError(f"not merging: {reason}. Merged weights would differ from what was trained (precision "
                          "loss). Serve the base with the adapter instead, or pass --force to merge into the "
                          "unquantized base anyway")
    if reason:
        log.warning("merging although %s: expect the merged model to differ slightly from base+adapter", reason)
    if final.exists() and not overwrite:
        raise ExportError(f"{final} already exists; pass --overwrite to replace it, or --out to choose another "
                          "folder")
    model, tokenizer = load_merged(src, dtype)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        export_tokenizer(tokenizer, src.run.template, staging, src.run.system)
        gen = model.generation_config
        stops = stop_token_ids(src.run.template, tokenizer)
        if stops:
            gen.eos_token_id = stops if len(stops) > 1 else stops[0]
        if gen.pad_token_id is None and tokenizer.pad_token_id is not None:
            gen.pad_token_id = tokenizer.pad_token_id
        gen.save_pretrained(staging)
        write_manifest(staging, MANIFEST, run=str(src.run.run_dir), weights=str(src.weights),
                       base=str(src.base_dir), template=src.run.template)
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a model directory is meant to be shared
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("merged model written to %s", final)
    return final


def load_merged(src: Source, dtype: str = "auto") -> tuple[Any, Any]:
    """The merged model (on CPU, in the base's stored dtype unless ``dtype`` says otherwise) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok_dir = src.weights if (src.weights / "tokenizer_config.json").is_file() else src.base_dir
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    except Exception as e:  # a missing or damaged tokenizer file
        raise ExportError(f"{tok_dir}: cannot load the tokenizer ({type(e).__name__}: {str(e)[:300]})") from None
    model_dir = src.weights if not src.adapter else src.base_dir
    try:
        # fp32 for the merge arithmetic; the result is cast to the saved dtype afterwards
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ExportError(f"{model_dir}: cannot load the model ({type(e).__name__}: {str(e)[:300]})") from None
    if src.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(src.weights)).merge_and_unload()
    target = _DTYPES.get(dtype) or _stored_dtype(model_dir)
    model = model.to(target)
    model.config.dtype = target
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def _stored_dtype(model_dir: Path) -> torch.dtype:
    cfg = json.loads((model_dir / "config.json").read_text())
    name = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(name, torch.float32)
