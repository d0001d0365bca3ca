"""Training under a memory allocator that hands freed memory back: jemalloc or tcmalloc where installed.

A training step allocates and frees gigabytes of tensors whose sizes change from step to step. The C library's
malloc keeps much of that memory after it is freed (measured on B1: about a third of the process's peak), while
jemalloc and tcmalloc reuse and return it at the same speed. A library can only replace malloc before the
process starts, so `hone train` starts itself again with it preloaded (``LD_PRELOAD``) when one is installed
(`apt install libjemalloc2`, `conda install jemalloc`, `brew install jemalloc` has no preload on macOS).
``HONE_ALLOCATOR``: `auto` (default), `system` (keep the C library's), or the path of a library to preload.
"""
from __future__ import annotations

import glob
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("hone")

_MARK = "HONE_ALLOCATOR_ACTIVE"
_NAMES = ("libjemalloc.so.2", "libjemalloc.so", "libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
         "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu")


def find() -> Path | None:
    """The allocator library to preload, or None (not Linux, turned off, or none installed)."""
    wanted = os.environ.get("HONE_ALLOCATOR", "auto").strip()
    if not sys.platform.startswith("linux") or wanted == "system":
        return None
    if wanted not in ("", "auto"):
        path = Path(wanted)
        if not path.is_file():
            log.warning("HONE_ALLOCATOR=%s: no such file; using the C library's allocator", wanted)
            return None
        return path
    dirs = [*_DIRS, *(os.path.join(p, "lib") for p in (os.environ.get("CONDA_PREFIX"), sys.prefix) if p)]
    for name in _NAMES:
        for d in dirs:
            hits = glob.glob(os.path.join(d, name))
            if hits:
                return Path(hits[0])
    return None


def active() -> str | None:
    """The file name of the allocator this process runs under when one was preloaded (by hone or by the
    user's own LD_PRELOAD), else None: the C library's."""
    for lib in os.environ.get("LD_PRELOAD", "").replace(" ", os.pathsep).split(os.pathsep):
        if os.environ.get(_MARK) == Path(lib).name or any(n in lib for n in ("jemalloc", "tcmalloc", "mimalloc")):
            return Path(lib).name
    return None


def restart_with_better_allocator(argv: list[str]) -> None:
    """Replace this process with ``python -m hone *argv`` under jemalloc/tcmalloc, when one is installed and
    none is preloaded yet; returns (doing nothing) otherwise."""
    if os.environ.get(_MARK) or active():  # restarted already, or the user preloads one
        return
    lib = find()
    if lib is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = os.pathsep.join(p for p in (str(lib), env.get("LD_PRELOAD", "")) if p)
    env[_MARK] = lib.name
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "hone", *argv], env)
    except OSError as e:  # could not start again: train under the C library's allocator instead
        log.warning("could not restart under %s (%s); using the C library's allocator", lib, e)
