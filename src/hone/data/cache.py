"""Tokenized-data cache under ``$HONE_HOME/cache/data/<key>``: ids as .npz, reports as JSON, nothing pickled.

The key hashes everything the encoded rows depend on (data file contents, dataset settings, template,
tokenizer, length settings), so an entry is never stale; a run whose key matches skips tokenizing.
Entries are written to a temporary folder and renamed into place, so a crash never leaves half an entry;
temporary folders a killed run left behind are swept by the next write.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .encode import Encoded
from .mixing import BadRow, DataReport

log = logging.getLogger("hone")

STALE_AFTER_S = 6 * 3600
"""A temporary folder without a live writer we can check (another host, no owner file) is swept after this."""
OWNER = ".owner"

VERSION = 3  # 2: per-token loss weights, prompt_cut, deleted over-length rows; 3: reports count the rows used


def cache_dir() -> Path:
    from ..paths import data_cache_dir

    return data_cache_dir()


def make_key(parts: dict[str, Any]) -> str:
    """A stable hash of JSON-able parts."""
    from .. import __version__

    blob = json.dumps({"version": VERSION, "hone": __version__, **parts}, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def tokenizer_id(tokenizer: Any) -> str:
    """A hash of the tokenizer's vocabulary, merges, special tokens and chat template."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    extra = {"cls": type(tokenizer).__name__, "chat_template": getattr(tokenizer, "chat_template", None),
             "special": getattr(tokenizer, "special_tokens_map", {}), "eos": tokenizer.eos_token_id,
             "bos": getattr(tokenizer, "bos_token_id", None),
             "added": str(getattr(tokenizer, "added_tokens_decoder", ""))}
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def template_id(template: Any) -> str:
    """What identifies a template: its class, name and plain-valued settings."""
    cls = type(template)
    state = getattr(template, "__dict__", {})
    plain = {k: repr(v) for k, v in sorted(state.items())
             if isinstance(v, (str, int, float, bool, type(None), tuple, list, dict))}
    name = getattr(template, "name", "")
    return json.dumps({"cls": f"{cls.__module__}.{cls.__qualname__}", "name": name, "state": plain}, sort_keys=True)


def _pack(rows: list[Encoded]) -> dict[str, np.ndarray]:
    lengths = np.fromiter((len(r.input_ids) for r in rows), dtype=np.int64, count=len(rows))
    ids = np.fromiter((t for r in rows for t in r.input_ids), dtype=np.int32, count=int(lengths.sum()))
    labels = np.fromiter((t for r in rows for t in r.labels), dtype=np.int32, count=int(lengths.sum()))
    weights = np.fromiter((w for r in rows for w in (r.weights or [1.0] * len(r.labels))), dtype=np.float32,
                          count=int(lengths.sum()))
    return {"lengths": lengths, "ids": ids, "labels": labels, "weights": weights,
            "weighted": np.array([r.weights is not None for r in rows], dtype=np.bool_),
            "truncated": np.array([r.truncated for r in rows], dtype=np.bool_),
            "eos_cut": np.array([r.eos_cut for r in rows], dtype=np.bool_),
            "prompt_cut": np.array([r.prompt_cut for r in rows], dtype=np.bool_),
            "source": np.array([r.source for r in rows], dtype=np.str_)}


def _unpack(z: Any) -> list[Encoded]:
    bounds = np.concatenate([[0], np.cumsum(z["lengths"])]).tolist()
    ids, labels = z["ids"].tolist(), z["labels"].tolist()
    src, trunc, cut = z["source"].tolist(), z["truncated"].tolist(), z["eos_cut"].tolist()
    weights, weighted, prompt_cut = z["weights"].tolist(), z["weighted"].tolist(), z["prompt_cut"].tolist()
    return [Encoded(ids[a:b], labels[a:b], src[i], trunc[i], cut[i], weights[a:b] if weighted[i] else None,
                    prompt_cut[i]) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def _report_json(r: DataReport) -> dict[str, Any]:
    return {"kept": r.kept, "bad": [[b.location, b.reason, b.detail] for b in r.bad],
            "deleted": [[b.location, b.reason, b.detail] for b in r.deleted], "warnings": r.warnings,
            "unused": r.unused}


def _report(d: dict[str, Any]) -> DataReport:
    return DataReport(int(d["kept"]), [BadRow(*b) for b in d["bad"]], [BadRow(*b) for b in d["deleted"]],
                      list(d["warnings"]), int(d["unused"]))


def save(key: str, train: list[Encoded], val: list[Encoded], report: DataReport, val_report: DataReport,
         meta: dict[str, Any]) -> Path | None:
    """Write one entry atomically; a cache that cannot be written is logged and skipped, never fatal."""
    final = cache_dir() / key
    if final.exists():
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(final.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        (tmp / OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        np.savez(tmp / "train.npz", **_pack(train))
        np.savez(tmp / "val.npz", **_pack(val))
        doc = {"version": VERSION, "report": _report_json(report), "val_report": _report_json(val_report), **meta}
        (tmp / "meta.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        (tmp / OWNER).unlink()
        try:
            os.rename(tmp, final)
        except OSError:  # another process wrote the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
        return final
    except OSError as e:
        log.warning("could not write the data cache at %s (%s); the next run tokenizes again", final, e)
        return None


def sweep_stale(root: Path, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove temporary entry folders whose writer is gone: its process on this host is dead, or, when that
    cannot be told, nothing in the folder changed for ``max_age_s``. A live writer's folder is never touched."""
    removed: list[Path] = []
    for tmp in root.glob(".*-*"):
        if tmp.is_dir() and not tmp.is_symlink() and _abandoned(tmp, max_age_s):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d unfinished data cache folders left by stopped runs", len(removed))
    return removed


def _abandoned(tmp: Path, max_age_s: float) -> bool:
    try:
        owner = json.loads((tmp / OWNER).read_text())
        if owner.get("host") == socket.gethostname():
            return not _alive(int(owner["pid"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # just created (no owner file yet), or unreadable: go by age
    try:
        newest = max([tmp.stat().st_mtime] + [p.stat().st_mtime for p in tmp.iterdir()])
    except OSError:
        return False
    return time.time() - newest > max_age_s


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows' os.kill would stop the process: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    return True


def load(key: str) -> tuple[list[Encoded], list[Encoded], DataReport, DataReport, dict[str, Any]] | None:
    """The entry for ``key``, or None when there is none (or it cannot be read)."""
    path = cache_dir() / key
    if not (path / "meta.json").is_file():
        return None
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if meta.get("version") != VERSION:
            return None
        with np.load(path / "train.npz", allow_pickle=False) as z:
            train = _unpack(z)
        with np.load(path / "val.npz", allow_pickle=False) as z:
            val = _unpack(z)
    except (OSError, ValueError, KeyError) as e:
        log.warning("ignoring an unreadable data cache entry %s (%s)", path, e)
        return None
    return train, val, _report(meta.pop("report")), _report(meta.pop("val_report")), meta
