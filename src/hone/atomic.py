"""Writes that a kill cannot leave half done: a temporary file beside the target, fsync, rename.

A reader sees either the old file or the new one, never a mix; the directory is synced too, so the rename
itself survives a power cut.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def staged(folder: Path, fail: Callable[[OSError], Exception]) -> Iterator[Path]:
    """A fresh, empty ``folder`` to fill before it is moved into place; on an OSError inside the block the
    folder is removed and ``fail(error)`` (a clear, user-facing error) is raised instead."""
    try:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        yield folder
    except OSError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise fail(e) from None
