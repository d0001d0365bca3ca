"""The one home of run directories: creating them, finding "the latest run", reading and writing ``hone_run.json``.

Training writes through this module; chat, inference, evaluation, export and serving read runs only through
``read_run``, so a user names a run directory (or a checkpoint inside one) and never repeats its base model,
template or system prompt.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import atomic
from .errors import HoneError, TrainingError
from .integrity import folder_fingerprint, manifest_problems, write_manifest

log = logging.getLogger("hone")

RUN_INFO = "hone_run.json"
CONFIG_FILE = "hone_config.yaml"
METRICS_FILE = "metrics.jsonl"
FINAL_MANIFEST = "final_weights.json"
CHECKPOINT_MANIFEST = "COMPLETE"
LAYOUT = 2
"""Runs from this layout on write their final weights with a manifest; without one they are unfinished."""
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
_RUN_FILES = (METRICS_FILE, "loss.png", RUN_INFO, FINAL_MANIFEST)
_FINAL_STAGING = ".tmp-final"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class RunError(HoneError):
    """A path that is not a hone run (or checkpoint), or a run whose record cannot be read."""


@dataclass(frozen=True)
class RunInfo:
    """What a run directory says about itself (``hone_run.json``)."""

    run_dir: Path
    model: str
    model_dir: str | None = None
    template: str = "auto"
    system: str | None = None
    method: str = "lora"
    global_step: int = 0
    best_checkpoint: str | None = None
    last_checkpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Every other field of the record (data digests, versions, ...)."""

    @property
    def finished(self) -> bool:
        """The run wrote its final weights into the run directory (completely: their manifest is there)."""
        if (self.run_dir / FINAL_MANIFEST).is_file():
            return True
        legacy = int(self.extra.get("layout", 1)) < LAYOUT  # written before final weights had a manifest
        return legacy and any((self.run_dir / f).is_file() for f in WEIGHT_FILES)

    def base_model(self) -> str:
        """The base model to load for this run: its recorded model directory (checked to be the one the run
        trained on, where the run recorded its digest), else its model reference."""
        if self.model_dir and Path(self.model_dir).is_dir() and self.extra.get("model_digest"):
            if model_digest(Path(self.model_dir)) != self.extra["model_digest"]:
                raise RunError(f"{self.run_dir / RUN_INFO}: model_dir {self.model_dir} is not the model this run "
                               f"trained on (its files differ from those recorded when it trained on {self.model}). "
                               "Restore that model, or name the base model yourself with --model")
        return self.model_dir or self.model

    def model_settings(self, mcfg: Any, *, model_given: bool) -> Any:
        """``mcfg`` (a ModelCfg) with what the run knows filled in: its base model unless the user named one,
        its template unless one other than ``auto`` is set, its system prompt unless one is set."""
        import dataclasses

        return dataclasses.replace(
            mcfg, model=mcfg.model if model_given else self.base_model(),
            template=mcfg.template if mcfg.template != "auto" else self.template,
            system=mcfg.system if mcfg.system is not None else self.system)

    def weights_dir(self, which: str = "final") -> Path:
        """The folder holding the weights to use: ``final`` (the run directory once finished, else the last
        checkpoint), ``best`` or ``last`` checkpoint."""
        order = {"final": ("final", "last"), "best": ("best", "last", "final"), "last": ("last", "final")}
        if which not in order:
            raise RunError(f"unknown weights choice {which!r}; use final, best or last")
        for w in order[which]:
            p = self.run_dir if w == "final" and self.finished else \
                Path(self.best_checkpoint) if w == "best" and self.best_checkpoint else \
                Path(self.last_checkpoint) if w == "last" and self.last_checkpoint else None
            if p is not None and p.is_dir():
                verify_weights(p)
                return p
        raise RunError(f"{self.run_dir} holds no weights yet (no final weights and no checkpoint)")


    def config(self) -> Any:
        """The run's resolved configuration (``hone_config.yaml``), as a RunCfg."""
        from .config import load_config

        path = self.run_dir / CONFIG_FILE
        if not path.is_file():
            raise RunError(f"{path} is missing, so the run's data settings are unknown; name the data with "
                           "--dataset")
        return load_config(path)

    def metrics(self) -> list[dict[str, Any]]:
        """The run's logged records (``metrics.jsonl``), oldest first."""
        from .training.logging import read_metrics

        return read_metrics(self.run_dir / METRICS_FILE)


def run_dir_of(path: str | Path) -> Path | None:
    """The run directory holding ``path`` (the path itself, or the run around a ``checkpoint-N`` in it)."""
    p = Path(path)
    if (p / RUN_INFO).is_file():
        return p
    if _CHECKPOINT.match(p.name) and (p.parent / RUN_INFO).is_file():
        return p.parent
    return None


def read_run(path: str | Path) -> RunInfo:
    """The record of the run at ``path`` (a run directory or a checkpoint inside one); RunError when it is none."""
    run_dir = run_dir_of(path)
    if run_dir is None:
        raise RunError(f"{path} is not a hone run directory (no {RUN_INFO} in it or its parent); pass the "
                       "directory `hone train` printed at the end")
    try:
        raw = json.loads((run_dir / RUN_INFO).read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or not isinstance(raw.get("model"), str):
            raise ValueError("no model")
    except (OSError, ValueError) as e:
        raise RunError(f"{run_dir / RUN_INFO} cannot be read ({e}); the run's record is damaged") from None
    known = {f: raw.pop(f) for f in ("model", "model_dir", "template", "system", "method", "global_step",
                                     "best_checkpoint", "last_checkpoint") if f in raw}
    return RunInfo(run_dir=run_dir, extra=raw, **known)


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    """Write ``hone_run.json`` atomically (a kill leaves the old record or the new one)."""
    atomic.write_json(Path(run_dir) / RUN_INFO, info)


def repeated_run(config: Any) -> Path | None:
    """The run directory a config file was saved in (``hone_config.yaml``), when ``config`` is such a path."""
    if not isinstance(config, (str, Path)) or not Path(config).is_file():
        return None
    return run_dir_of(Path(config).parent)


def differences(old: RunInfo, new: dict[str, Any]) -> list[str]:
    """What repeating a run needs that differs between its record and a new one: base model, template, data
    and library versions (empty: none, or the old record predates them)."""
    was = {"model_digest": old.extra.get("model_digest"), "template_digest": old.extra.get("template_digest"),
           "versions": old.extra.get("versions") or {}, "data": old.extra.get("data")}
    out = []
    if was["model_digest"] and was["model_digest"] != new.get("model_digest"):
        out.append(f"base model files ({old.model_dir} then, {new.get('model_dir')} now)")
    if was["template_digest"] and was["template_digest"] != new.get("template_digest"):
        out.append(f"chat template ({old.template} then, {new.get('template')} now)")
    for lib, v in (new.get("versions") or {}).items():
        if lib in was["versions"] and was["versions"][lib] != v:
            out.append(f"{lib} {was['versions'][lib]} then, {v} now")
    if was["data"] is not None:
        then = {(d["split"], d["dataset"]): d for d in was["data"]}
        now = {(d["split"], d["dataset"]): d for d in new.get("data") or []}
        for key in sorted(then.keys() | now.keys()):
            a, b = then.get(key), now.get(key)
            if a is None or b is None:
                out.append(f"{key[0]} dataset {key[1]} {'added' if a is None else 'removed'}")
            elif a.get("sha256") != b.get("sha256"):
                out.append(f"{key[0]} dataset {key[1]}: its files' content changed")
            elif a.get("rows") != b.get("rows"):
                out.append(f"{key[0]} dataset {key[1]}: rows {a.get('rows')} then, {b.get('rows')} now")
    return out


def model_digest(model_dir: Path) -> str:
    """A cheap digest of a base model directory (the model cache's manifest where it has one)."""
    from .models.gguf import MANIFEST

    return folder_fingerprint(Path(model_dir), MANIFEST)


def write_final(run_dir: Path, write: Callable[[Path], None]) -> None:
    """Write a run's final weights: ``write(folder)`` fills a staging folder, which gets a manifest (sizes and
    sha256) and is moved file by file into ``run_dir``, the manifest last, so a run directory holding a
    manifest holds every file it names, and one without it is read as unfinished."""
    run_dir = Path(run_dir)
    staging = run_dir / _FINAL_STAGING
    with atomic.staged(staging, lambda e: TrainingError(
            f"could not write the final weights into {run_dir} ({e.strerror or e}); the run's checkpoints are "
            "untouched. Free disk space, then use the last checkpoint")):
        write(staging)
        write_manifest(staging, FINAL_MANIFEST)
    (run_dir / FINAL_MANIFEST).unlink(missing_ok=True)  # from here until the end, the run reads as unfinished
    atomic.fsync_dir(run_dir)
    for p in sorted(staging.iterdir()):
        if p.name != FINAL_MANIFEST:
            os.replace(p, run_dir / p.name)
    atomic.fsync_dir(run_dir)
    os.replace(staging / FINAL_MANIFEST, run_dir / FINAL_MANIFEST)
    atomic.fsync_dir(run_dir)
    shutil.rmtree(staging, ignore_errors=True)


def verify_weights(folder: Path) -> None:
    """Check a run's final weights or a checkpoint against their manifest, digests included; RunError names
    every damaged or missing file. Folders hone did not write (no manifest at all) are left to the loader."""
    folder = Path(folder)
    for name in (FINAL_MANIFEST, CHECKPOINT_MANIFEST):
        if (folder / name).is_file():
            wrong = manifest_problems(folder, name, digests=True)
            if wrong:
                raise RunError(f"{folder} is damaged: {'; '.join(wrong)}. Use another checkpoint of the run "
                               "(or train again)")
            return
    if run_dir_of(folder) == folder and not read_run(folder).finished:
        raise RunError(f"{folder} holds no complete final weights (the run did not finish writing them); "
                       "use one of its checkpoints")


def slug(ref: str) -> str:
    """A model reference as a folder name."""
    name = Path(ref).name if ("/" in ref or Path(ref).exists()) else ref
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def new_run_dir(output_dir: str | Path, model: str, suffix: bool) -> Path:
    """``output_dir`` itself, or ``output_dir/<model>/v<N>-<timestamp>`` with a fresh N."""
    base = Path(output_dir)
    if not suffix:
        return base
    parent = base / slug(model)
    n = max((v for v, _ in _versions(parent)), default=-1) + 1
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return parent / f"v{n}-{stamp}"


def latest_run_dir(output_dir: str | Path, model: str, suffix: bool) -> Path | None:
    """The newest run directory of this model under ``output_dir`` (for ``resume_from_checkpoint: auto``)."""
    base = Path(output_dir)
    if not suffix:
        return base if base.is_dir() else None
    runs = _versions(base / slug(model))
    return max(runs)[1] if runs else None


def _versions(parent: Path) -> list[tuple[int, Path]]:
    if not parent.is_dir():
        return []
    return [(int(m.group(1)), p) for p in parent.iterdir() if (m := re.match(r"^v(\d+)-", p.name))]


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The ``checkpoint-N`` folders of a run, oldest first (whole or not: callers check manifests)."""
    out = [(int(m.group(1)), p) for p in Path(run_dir).glob("checkpoint-*") if (m := _CHECKPOINT.match(p.name))]
    return sorted(out)


def claim_run_dir(run_dir: Path, overwrite: bool) -> None:
    """A fresh run may not mix with an earlier run's checkpoints and metrics in the same directory.

    With ``overwrite`` the earlier run's checkpoints, metrics and TensorBoard logs are removed (only what hone
    wrote there); without it the run stops before training and says what to do.
    """
    old = sorted(p.name for p in run_dir.glob("checkpoint-*")) + [f for f in _RUN_FILES if (run_dir / f).exists()]
    if not old:
        return
    if not overwrite:
        raise TrainingError(f"{run_dir} already holds a run ({', '.join(old[:4])}). Resume it with "
                            "resume_from_checkpoint: auto, replace it with overwrite_output_dir: true, or choose "
                            "another output_dir (add_output_dir_suffix: true gives every run its own)")
    log.info("overwrite_output_dir: removing the earlier run in %s", run_dir)
    for p in list(run_dir.glob("checkpoint-*")) + [run_dir / "runs"]:
        shutil.rmtree(p, ignore_errors=True)
    for f in _RUN_FILES:
        (run_dir / f).unlink(missing_ok=True)


def ensure_writable(run_dir: Path) -> None:
    """Create ``run_dir`` and prove a file can be written there, before any model loads."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise TrainingError(f"cannot write to the output directory {run_dir} ({e.strerror or e}); choose another "
                            "output_dir") from None
