"""Checkpoints: written atomically, found again, resumed exactly, rotated keeping the best and the last.

A checkpoint is staged in ``.tmp-checkpoint-N``; its ``COMPLETE`` manifest (every file, its size and
sha256) is written last, and only then is the folder renamed to ``checkpoint-N``. An existing
``checkpoint-N`` is first renamed aside to ``.old-checkpoint-N`` and deleted only once the new one is in
place, so at every moment one complete copy exists under one of the three names; the next run's sweep puts
a complete staged or aside folder back in place and deletes only incomplete ones. Nothing is unpickled on
resume: state is JSON, safetensors, or tensors read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..atomic import fsync_dir, staged, write_text
from ..integrity import manifest_problems, write_manifest

log = logging.getLogger("hone")

COMPLETE = "COMPLETE"
STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.json"
RNG = "rng_state.pt"
_CKPT = re.compile(r"^checkpoint-(\d+)$")
_STAGED = re.compile(r"^\.(tmp|old)-checkpoint-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensor RNG states (for torch.save) and the Python / NumPy ones (as JSON)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    py = random.getstate()
    npst = np.random.get_state()
    plain = {"python": [py[0], list(py[1]), py[2]],
             "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])]}
    return tensors, plain


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
        if states:
            torch.cuda.set_rng_state_all(states)
    v, st, gauss = plain["python"]
    random.setstate((v, tuple(st), gauss))
    n = plain["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save(run_dir: Path, step: int, *, save_weights, optimizer: Any, scheduler: Any, state: dict[str, Any],
         rank_rng: dict[int, tuple[dict[str, torch.Tensor], dict[str, Any]]], weights_only: bool) -> Path:
    """Write checkpoint-<step> atomically; ``save_weights(folder)`` writes the model's weights."""
    final = run_dir / f"checkpoint-{step}"
    staging = run_dir / f".tmp-checkpoint-{step}"
    with staged(staging, lambda e: CheckpointError(
            f"could not write checkpoint {final} ({e.strerror or e}); earlier checkpoints are untouched. Free disk "
            "space or choose another output_dir, then resume")):
        save_weights(staging)
        if not weights_only:
            torch.save(optimizer.state_dict(), staging / OPTIMIZER)
            write_text(staging / SCHEDULER, json.dumps(scheduler.state_dict()))
            tensors = {f"rank{r}.{k}": v for r, (t, _) in rank_rng.items() for k, v in t.items()}
            torch.save(tensors, staging / RNG)
            state = {**state, "rng": {str(r): p for r, (_, p) in rank_rng.items()}}
        write_text(staging / STATE, json.dumps(state, indent=1))
        write_manifest(staging, COMPLETE, step=step, weights_only=weights_only)
        fsync_dir(staging)
        _replace(staging, final)
    return final


def _replace(staging: Path, final: Path) -> None:
    """Put ``staging`` in ``final``'s place with no moment at which neither exists complete."""
    aside = final.parent / f".old-{final.name}"
    if aside.exists():
        shutil.rmtree(aside)
    if final.exists():
        os.rename(final, aside)
    os.rename(staging, final)
    fsync_dir(final.parent)
    if aside.exists():
        shutil.rmtree(aside)


def problems(path: Path, *, digests: bool = False) -> list[str]:
    """What is wrong with a checkpoint folder (empty: complete); names every missing, cut or (with
    ``digests``) damaged file."""
    return manifest_problems(path, COMPLETE, digests=digests)


def is_complete(path: Path) -> bool:
    return not problems(path)


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first."""
    if not run_dir.is_dir():
        return []
    out = []
    for p in run_dir.iterdir():
        m = _CKPT.match(p.name)
        if m and p.is_dir() and is_complete(p):
            out.append(Checkpoint(p, int(m.group(1))))
    return sorted(out, key=lambda c: c.step)


def sweep_staging(run_dir: Path) -> None:
    """Settle what a killed save left behind: a complete staged (``.tmp-``) or set-aside (``.old-``) folder
    whose ``checkpoint-N`` is missing or incomplete is put in its place; every other leftover is removed."""
    if not run_dir.is_dir():
        return
    # the staged copy is newer than the aside one, so it is tried first
    leftovers = sorted((p for p in run_dir.iterdir() if _STAGED.match(p.name)),
                       key=lambda p: (p.name.startswith(".old-"), p.name))
    for p in leftovers:
        final = run_dir / p.name.split("-", 1)[1]
        if not is_complete(final) and is_complete(p):
            log.warning("recovering checkpoint %s from %s, which a killed save left complete", final.name, p.name)
            if final.exists():
                shutil.rmtree(final)
            os.rename(p, final)
            fsync_dir(run_dir)
        else:
            log.info("removing %s, left by a killed save", p)
            shutil.rmtree(p, ignore_errors=True)


def rotate(run_dir: Path, limit: int, best: Path | None) -> None:
    """Keep ``limit`` checkpoints: the best one and the newest others; never the last complete one."""
    if limit < 0:
        return
    ckpts = list_checkpoints(run_dir)
    keep = {best} if best is not None else set()
    for c in reversed(ckpts):  # newest first; the newest is always kept
        if len(keep) >= max(1, limit) and c is not ckpts[-1]:
            break
        keep.add(c.path)
    for c in ckpts:
        if c.path not in keep:
            shutil.rmtree(c.path, ignore_errors=True)


def find(ref: str, run_dir: Path) -> Checkpoint | None:
    """Resolve resume_from_checkpoint: ``auto`` → latest complete (or None), a path → that checkpoint."""
    if ref.lower() == "auto":
        ckpts = list_checkpoints(run_dir)
        return ckpts[-1] if ckpts else None
    path = Path(ref)
    if path.is_dir() and not _CKPT.match(path.name):  # a run directory: its latest checkpoint
        ckpts = list_checkpoints(path)
        if ckpts:
            return ckpts[-1]
    wrong = problems(path) if path.is_dir() else ["no such folder"]
    resumable = {f"missing {f}" for f in (OPTIMIZER, SCHEDULER, RNG)}  # load_state names these (or weights only)
    if not path.is_dir() or not set(wrong) <= resumable:
        raise CheckpointError(f"no valid checkpoint at {path} ({'; '.join(wrong)}): it must be a checkpoint-N "
                              "folder with a COMPLETE manifest, or a run folder holding one")
    m = _CKPT.match(path.name)
    return Checkpoint(path, int(m.group(1)) if m else json.loads((path / COMPLETE).read_text())["step"])


def load_state(ckpt: Checkpoint, *, weights_only: bool) -> dict[str, Any]:
    """The trainer state; unless weights_only, also check the optimizer, scheduler and RNG files exist."""
    manifest = json.loads((ckpt.path / COMPLETE).read_text())
    if not weights_only:
        if manifest.get("weights_only"):
            raise CheckpointError(f"{ckpt.path} holds weights only (only_save_model); resume from it with "
                                  "resume_weights_only: true")
        for f in (OPTIMIZER, SCHEDULER, RNG, STATE):
            if not (ckpt.path / f).is_file():
                raise CheckpointError(f"{ckpt.path} is missing {f}; it cannot resume exactly. Use "
                                      "resume_weights_only: true to start from its weights alone")
    damaged = [w for w in problems(ckpt.path, digests=True) if not w.startswith("missing ")]
    if damaged:
        raise CheckpointError(f"{ckpt.path} is damaged: {'; '.join(damaged)}. Resume from an earlier checkpoint "
                              "(pass its folder as resume_from_checkpoint)")
    try:
        return json.loads((ckpt.path / STATE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt.path / STATE}: cannot read it ({e})") from None


def load_tensors(path: Path) -> Any:
    """torch.load restricted to tensors and plain containers: a pickle that would run code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: refused to load ({type(e).__name__}); it is not a plain tensor file "
                              "written by hone, and loading it could run code") from None
