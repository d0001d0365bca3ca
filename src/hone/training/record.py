"""What repeating a run needs, recorded in ``hone_run.json``: the base model and its digest, each data source's
content digest and row count, the template's digest, and the versions of the libraries that trained it."""
from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections import Counter
from pathlib import Path
from typing import Any

from .. import __version__, runs
from ..config import RunCfg
from ..config.derive import method
from ..data.cache import template_id
from ..data.pipeline import PreparedData, plan_sources
from ..integrity import file_digest

LIBRARIES = ("torch", "transformers", "peft", "accelerate")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"hone": __version__}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _file_of(source: str) -> str:
    """The file a row came from: its source without the row number (`file#N`, json and parquet) or the line
    number (`file:N`, jsonl and text)."""
    return re.sub(r"[#:]\d+$", "", source)


def data_sources(cfg: RunCfg, data: PreparedData) -> list[dict[str, Any]]:
    """Each dataset of `dataset` and `val_dataset`, once per split: its files' sha256, the rows it gave to
    training/validation, and the entries that named it (a dataset listed twice, as `a.json#50` and `a.json`, is one
    source whose rows both entries drew)."""
    train_plan, val_plan = plan_sources(cfg.data)
    counts = {"train": Counter(_file_of(r.source) for r in data.train),
              "val": Counter(_file_of(r.source) for r in data.val)}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for split, plan in (("train", train_plan), ("val", val_plan)):
        for spec, src in plan:
            entry = f"{spec.target}#{spec.count}" if spec.count else spec.target
            if (split, spec.target) in out:
                out[split, spec.target]["entries"].append(entry)
                continue
            files = {str(p): file_digest(p) for p in src.files}
            rows = {s: sum(counts[s][f] for f in files) for s in ("train", "val")} if files else None
            digest = hashlib.sha256("".join(sorted(files.values())).encode()).hexdigest() if files else None
            out[split, spec.target] = {"dataset": spec.target, "split": split, "entries": [entry], "sha256": digest,
                                       "files": files, "rows": rows}
    return list(out.values())


def run_record(cfg: RunCfg, model_dir: Path, template: Any, data: PreparedData) -> dict[str, Any]:
    """The fields of ``hone_run.json`` that do not change while the run trains."""
    return {"layout": runs.LAYOUT, "model": cfg.model.model, "model_dir": str(model_dir),
            "model_digest": runs.model_digest(model_dir), "template": cfg.model.template,
            "template_digest": hashlib.sha256(template_id(template).encode()).hexdigest(),
            "system": cfg.model.system, "method": method(cfg), "data": data_sources(cfg, data),
            "data_fingerprint": data.fingerprint, "versions": versions()}
