"""The data chain, start to end: specs → rows → Conversations → checked → encoded, with one report."""
from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DataCfg, RunCfg
from ..errors import DataError
from .conversation import Conversation, Message
from .encode import Encoded, encode
from .formats import RowError
from .sources import BadRow, DataReport, DatasetSpec, load_dataset_info, read_source, resolve, sample, split_val

log = logging.getLogger("hone")


@dataclass
class PreparedData:
    train: list[Encoded]
    val: list[Encoded]
    report: DataReport
    truncated: int = 0
    fingerprint: str = ""
    val_report: DataReport = field(default_factory=DataReport)


def _info(d: DataCfg) -> dict[str, dict[str, Any]]:
    info: dict[str, dict[str, Any]] = {}
    if d.dataset_dir:
        p = Path(d.dataset_dir) / "dataset_info.json"
        if p.exists():
            info.update(load_dataset_info(p))
    if d.dataset_info:
        info.update(load_dataset_info(Path(d.dataset_info)))
    return info


def load_conversations(d: DataCfg) -> tuple[list[Conversation], list[Conversation], DataReport]:
    """Read, sample, mix and split every dataset of a config; bad rows are collected in the report."""
    if not d.dataset:
        raise DataError("no training data: set `dataset` to a file, folder or registered name")
    info = _info(d)
    rng = random.Random(d.dataset_seed)
    report = DataReport()
    train: list[Conversation] = []
    val: list[Conversation] = []
    for text in d.dataset:
        spec = DatasetSpec.parse(text)
        src = resolve(spec, info, d.format, d.dataset_dir)
        rows, given_val, rep = read_source(src, d.model_name, d.model_author)
        report.add(rep)
        n = spec.count or src.num_samples
        if d.max_samples is not None and len(rows) > d.max_samples:
            rows = rng.sample(rows, d.max_samples)
        if n is not None:
            rows = sample(rows, n, rng)
        if not d.val_dataset and not given_val:
            rows, split = split_val(rows, d.val_size, rng)
            val += split
        val += given_val
        train += rows
    for text in d.val_dataset:
        spec = DatasetSpec.parse(text)
        rows, _, rep = read_source(resolve(spec, info, d.format, d.dataset_dir), d.model_name, d.model_author)
        report.add(rep)
        val += sample(rows, spec.count, rng) if spec.count else rows
    if d.train_sample > 0 and len(train) != d.train_sample:
        train = sample(train, d.train_sample, rng)
    return train, val, report


def with_system(conv: Conversation, system: str | None) -> Conversation:
    if system is None or conv.is_text or conv.system is not None:
        return conv
    return Conversation((Message("system", system),) + conv.messages, conv.tools, source=conv.source, meta=conv.meta)


def encode_all(convs: list[Conversation], cfg: RunCfg, tokenizer: Any,
               template: Any) -> tuple[list[Encoded], int, list[BadRow]]:
    """Encode rows; those that cannot be trained on (too long, nothing to learn) come back as BadRows."""
    d = cfg.data
    out: list[Encoded] = []
    bad: list[BadRow] = []
    truncated = 0
    for conv in convs:
        try:
            enc = encode(with_system(conv, cfg.model.system), template, tokenizer, loss_scope=d.loss_scope,
                         max_length=d.max_length, truncation=d.truncation_strategy)
        except RowError as e:
            bad.append(BadRow(conv.source, e.reason, e.detail))
            continue
        truncated += enc.truncated
        out.append(enc)
    return out, truncated, bad


def enforce(report: DataReport, strategy: str, what: str = "training") -> None:
    """Apply check_dataset_strategy: stop on any bad row (error), or log them (warning) or a count (none)."""
    if report.bad and strategy == "error":
        shown = "\n".join(f"  {b}" for b in report.bad[:50])
        more = f"\n  ... and {len(report.bad) - 50} more" if len(report.bad) > 50 else ""
        raise DataError(f"{len(report.bad)} bad {what} rows (check_dataset_strategy: error):\n{shown}{more}\n"
                        "Fix these rows, or set check_dataset_strategy: warning to drop them.")
    if report.bad and strategy == "warning":
        for b in report.bad[:200]:
            log.warning("dropped %s", b)
        if len(report.bad) > 200:
            log.warning("... and %d more dropped rows", len(report.bad) - 200)
    if report.bad:
        log.info("%s data: %s", what, report.summary())


def fingerprint(rows: list[Encoded]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(len(r.input_ids).to_bytes(4, "little"))
        h.update(b"".join(int(t).to_bytes(4, "little", signed=True) for t in r.input_ids))
        h.update(b"".join(int(t).to_bytes(4, "little", signed=True) for t in r.labels))
    return h.hexdigest()[:16]


def prepare(cfg: RunCfg, tokenizer: Any, template: Any) -> PreparedData:
    """Everything between the config and the batches: read, check, encode, report."""
    train_c, val_c, report = load_conversations(cfg.data)
    enforce(report, cfg.data.check_dataset_strategy)
    train, truncated, bad = encode_all(train_c, cfg, tokenizer, template)
    enforce(DataReport(len(train), bad), cfg.data.check_dataset_strategy)
    report.kept -= len(bad)
    report.bad += bad
    val, _, val_bad = encode_all(val_c, cfg, tokenizer, template)
    val_report = DataReport(len(val), val_bad)
    enforce(val_report, cfg.data.check_dataset_strategy, "validation")
    if not train:
        raise DataError(f"no usable training rows ({report.summary()}); see the dropped rows above")
    if truncated:
        log.warning("%d rows were longer than max_length %d and were cut (%s)", truncated, cfg.data.max_length,
                    cfg.data.truncation_strategy)
    return PreparedData(train, val, report, truncated, fingerprint(train), val_report)
