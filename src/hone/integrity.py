"""How hone knows a folder it wrote is whole: a manifest of every file, its size and sha256, written last.

Model directories in the cache, training checkpoints and a run's final weights are all staged, given a
manifest, then moved into place; a folder whose manifest is missing or disagrees with its files is never
used. Sizes are checked cheaply whenever a folder is listed; digests when its files are about to be used.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .atomic import write_json


def write_manifest(folder: Path, name: str, **extra: Any) -> dict[str, Any]:
    """Record every file directly in ``folder`` (size and sha256) in ``folder/name``, plus ``extra`` fields.

    The files are fsynced first, so a manifest that survives a power cut describes files that survived too.
    """
    files = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name != name:
            fsync_file(p)
            files[p.name] = {"size": p.stat().st_size, "sha256": file_digest(p)}
    manifest = {**extra, "files": files}
    write_json(folder / name, manifest)
    return manifest


def fsync_file(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def manifest_problems(folder: Path, name: str, *, digests: bool = False) -> list[str]:
    """What is wrong with a folder against its manifest (empty: whole); names every missing, cut or (with
    ``digests``) altered file. Older manifests that record sizes alone are checked on size."""
    try:
        files = dict(json.loads((folder / name).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return [f"no {name} manifest (an interrupted write leaves none)"]
    out = []
    for f, rec in files.items():
        size, digest = (rec.get("size"), rec.get("sha256")) if isinstance(rec, dict) else (rec, None)
        p = folder / f
        if not p.is_file():
            out.append(f"missing {f}")
        elif p.stat().st_size != size:
            out.append(f"{f} has {p.stat().st_size} bytes, the manifest says {size}")
        elif digests and digest is not None and file_digest(p) != digest:
            out.append(f"{f} is damaged (its sha256 differs from the one recorded when it was written)")
    return out


def manifest_digest(folder: Path, name: str) -> str | None:
    """sha256 of a folder's manifest: a cheap digest of the whole folder (the manifest holds every file's)."""
    try:
        return hashlib.sha256((folder / name).read_bytes()).hexdigest()
    except OSError:
        return None


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (for a folder: of every file in it, with their names)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            h.update(p.name.encode())
            with p.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def folder_fingerprint(folder: Path, manifest: str | None = None) -> str:
    """A cheap digest of a model directory: of its manifest where hone wrote one (it holds every file's
    sha256), else of every file's name and size and the bytes of the small ones (config, tokenizer)."""
    if manifest is not None and (folder / manifest).is_file():
        return "manifest:" + hashlib.sha256((folder / manifest).read_bytes()).hexdigest()
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file():
            size = p.stat().st_size
            h.update(f"{p.name}\0{size}\0".encode())
            if size <= _SMALL:
                h.update(p.read_bytes())
    return "files:" + h.hexdigest()


_SMALL = 1 << 20
