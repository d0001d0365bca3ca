"""How hone knows a folder it wrote is whole: a manifest of every file and its size, written last.

Model directories in the cache and training checkpoints are both staged, given a manifest, then renamed
into place; a folder whose manifest is missing or disagrees with its files is never used.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def write_manifest(folder: Path, name: str, **extra: Any) -> None:
    """Record every file directly in ``folder`` and its size in ``folder/name`` (plus ``extra`` fields)."""
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != name}
    (folder / name).write_text(json.dumps({**extra, "files": files}, indent=1))


def manifest_problems(folder: Path, name: str) -> list[str]:
    """What is wrong with a folder against its manifest (empty: whole); names every missing or cut file."""
    try:
        files = dict(json.loads((folder / name).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return [f"no {name} manifest (an interrupted write leaves none)"]
    out = []
    for f, n in files.items():
        p = folder / f
        if not p.is_file():
            out.append(f"missing {f}")
        elif p.stat().st_size != n:
            out.append(f"{f} has {p.stat().st_size} bytes, the manifest says {n}")
    return out


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
