"""The data chain, start to end: specs → rows → Conversations → checked → encoded (cached), with one report."""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..config import DataCfg, RunCfg
from ..errors import DataError
from . import cache
from .conversation import Conversation, Message
from .encode import Encoded, encode
from .formats import RowError
from .mixing import BadRow, DataReport, DatasetSpec, deleted_note, rng_for, sample, split_val
from ..integrity import file_digest
from .sources import DATASETS, Source, builtin_info, load_dataset_info, read_source, resolve

log = logging.getLogger("hone")

_PARALLEL_MIN_ROWS = 2000  # below this, starting worker processes costs more than it saves


@dataclass
class PreparedData:
    train: list[Encoded]
    val: list[Encoded]
    report: DataReport
    truncated: int = 0
    fingerprint: str = ""
    val_report: DataReport = field(default_factory=DataReport)
    eos_cut: int = 0
    """Training rows whose last reply lost its end-of-turn / EOS token to truncation."""
    cached: bool = False
    """The encoded rows came from the tokenization cache."""
    prompt_cut: int = 0
    """Training rows whose left truncation removed their whole prompt (system and user turns)."""


Plan = list[tuple[DatasetSpec, Source]]


def _info(d: DataCfg) -> dict[str, dict[str, Any]]:
    info: dict[str, dict[str, Any]] = {}
    if d.dataset_dir:
        p = Path(d.dataset_dir) / "dataset_info.json"
        if p.exists():
            info.update(load_dataset_info(p))
    if d.dataset_info:
        info.update(load_dataset_info(Path(d.dataset_info)))
    return info


def plan_sources(d: DataCfg) -> tuple[Plan, Plan]:
    """Resolve every `dataset` and `val_dataset` entry (fails fast on a missing file or unknown name)."""
    if not d.dataset:
        raise DataError("no training data: set `dataset` to a file, folder or registered name")
    info = _info(d)
    train = [(s, resolve(s, info, d.format, d.dataset_dir)) for s in dataset_specs(d.dataset, info, d.dataset_dir)]
    val = [(s, resolve(s, info, d.format, d.dataset_dir))
           for s in dataset_specs(d.val_dataset, info, d.dataset_dir)]
    return train, val


def dataset_specs(entries: Sequence[str], info: Mapping[str, Any], dataset_dir: str | None) -> list[DatasetSpec]:
    """Parse `dataset` entries; one that is neither an existing path nor a known name and holds whitespace
    stands for several entries.

    Shell scripts build lists as `--dataset $ds1' '$ds2`, which joins the last path of one list and the
    first of the next into one argument; ms-swift read such an argument as its space-separated parts.
    """
    out: list[DatasetSpec] = []
    for entry in map(str, entries):
        if any(c.isspace() for c in entry.strip()) and not _known(entry, info, dataset_dir):
            parts = entry.split()
            log.info("dataset entry %r is not a file or name: read as %d entries %s", entry, len(parts), parts)
            out += [DatasetSpec.parse(p) for p in parts]
        else:
            out.append(DatasetSpec.parse(entry))
    return out


def _known(entry: str, info: Mapping[str, Any], dataset_dir: str | None) -> bool:
    try:
        target = DatasetSpec.parse(entry).target
    except DataError:  # "a.jsonl b.jsonl#3 c.jsonl": not one entry's row count
        return False
    path = Path(target).expanduser()
    return (target in info or target in DATASETS or target in builtin_info() or path.exists()
            or bool(dataset_dir and not path.is_absolute() and (Path(dataset_dir) / path).exists()))


def load_conversations(d: DataCfg, plan: tuple[Plan, Plan] | None = None
                       ) -> tuple[list[Conversation], list[Conversation], DataReport, DataReport]:
    """Read, sample, mix and split every dataset: (train, val, train report, validation report).

    A dataset listed twice is read and split once, then counted twice, so its validation rows never
    leak into training. Every sample is seeded by `dataset_seed` and the dataset's name.
    """
    train_plan, val_plan = plan or plan_sources(d)
    report, val_report = DataReport(), DataReport()
    train: list[Conversation] = []
    val: list[Conversation] = []
    pools: dict[str, list[Conversation]] = {}
    empty: list[str] = []
    for k, (spec, src) in enumerate(train_plan):
        if spec.target not in pools:
            rows, given_val, rep = read_source(src, d.model_name, d.model_author)
            report.add(rep)
            if not rows and not given_val and not rep.bad:
                empty.append(spec.target)
            if d.max_samples is not None and len(rows) > d.max_samples:
                rows = sample(rows, d.max_samples, rng_for(d.dataset_seed, "max_samples", spec.target))
            if not d.val_dataset and not given_val:
                rows, given_val = split_val(rows, d.val_size, rng_for(d.dataset_seed, "val", spec.target))
            val += given_val
            pools[spec.target] = rows
        rows = pools[spec.target]
        n = spec.count or src.num_samples
        train += sample(rows, n, rng_for(d.dataset_seed, "n", spec.target, k)) if n else rows
    if empty and len(empty) == len(pools):
        raise DataError("no training data: " + "; ".join(report.warnings or [f"{t} has no rows" for t in empty]))
    for k, (spec, src) in enumerate(val_plan):
        rows, _, rep = read_source(src, d.model_name, d.model_author)
        val_report.add(rep)
        val += sample(rows, spec.count, rng_for(d.dataset_seed, "val_n", spec.target, k)) if spec.count else rows
    if d.train_sample > 0 and len(train) != d.train_sample:
        train = sample(train, d.train_sample, rng_for(d.dataset_seed, "train_sample"))
    # from here on the report speaks of the rows training uses, not of every row read
    report.unused = max(0, report.kept - len({id(c) for c in train}))
    report.kept = len(train)
    return train, val, report, val_report


def with_system(conv: Conversation, system: str | None) -> Conversation:
    if system is None or conv.is_text or conv.system is not None:
        return conv
    return Conversation((Message("system", system),) + conv.messages, conv.tools, source=conv.source, meta=conv.meta)


# ------------------------------------------------------------------------------------------------- encoding

_WORKER: tuple[Any, Any, dict[str, Any], str | None] | None = None


def _init_worker(tokenizer: Any, template: Any, opts: dict[str, Any], system: str | None) -> None:
    global _WORKER
    _WORKER = (tokenizer, template, opts, system)


def _encode_chunk(convs: Sequence[Conversation]) -> list[Encoded | BadRow]:
    assert _WORKER is not None
    tokenizer, template, opts, system = _WORKER
    out: list[Encoded | BadRow] = []
    for conv in convs:
        try:
            out.append(encode(with_system(conv, system), template, tokenizer, **opts))
        except RowError as e:
            out.append(BadRow(conv.source, e.reason, e.detail))
    return out


def encode_rows(convs: Sequence[Conversation], cfg: RunCfg, tokenizer: Any, template: Any,
                min_parallel: int = _PARALLEL_MIN_ROWS) -> list[Encoded | BadRow]:
    """Encode rows in order, in `preprocessing_num_workers` processes; the result is the same for any count."""
    d = cfg.data
    opts = {"loss_scope": d.loss_scope, "max_length": d.max_length, "truncation": d.truncation_strategy}
    args = (tokenizer, template, opts, cfg.model.system)
    workers = d.preprocessing_num_workers
    if workers <= 1 or len(convs) < min_parallel or "fork" not in multiprocessing.get_all_start_methods():
        _init_worker(*args)
        return _encode_chunk(convs)
    size = max(1, min(1024, len(convs) // (workers * 8)))
    chunks = [convs[i:i + size] for i in range(0, len(convs), size)]
    # fork: workers inherit the tokenizer and template as they are, without pickling them
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker, initargs=args) as pool:
        return [r for part in pool.imap(_encode_chunk, chunks) for r in part]


def encode_all(convs: list[Conversation], cfg: RunCfg, tokenizer: Any,
               template: Any) -> tuple[list[Encoded], int, list[BadRow]]:
    """Encode rows (each distinct row once, however often it is repeated); bad ones come back as BadRows."""
    index: dict[int, int] = {}
    unique: list[Conversation] = []
    for c in convs:
        if id(c) not in index:
            index[id(c)] = len(unique)
            unique.append(c)
    results = encode_rows(unique, cfg, tokenizer, template)
    bad = [r for r in results if isinstance(r, BadRow)]
    out = [r for r in (results[index[id(c)]] for c in convs) if isinstance(r, Encoded)]
    return out, sum(r.truncated for r in out), bad


def _natural(b: BadRow) -> list[Any]:
    """Sort key putting file:9 before file:10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", b.location)]


def fingerprint(rows: list[Encoded]) -> str:
    """A hash of every row's ids, labels and loss weights, in order."""
    h = hashlib.sha256()
    for r in rows:
        h.update(len(r.input_ids).to_bytes(4, "little"))
        h.update(np.asarray(r.input_ids, dtype=np.int32).tobytes())
        h.update(np.asarray(r.labels, dtype=np.int32).tobytes())
        if r.weights is not None:  # rows without weights hash as before
            h.update(np.asarray(r.weights, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ checking

def enforce(report: DataReport, strategy: str, what: str = "training", max_bad_ratio: float = 1.0) -> None:
    """Apply check_dataset_strategy: stop on any bad row (error), or log them (warning) or a count (none);
    stop too when the share of bad rows passes `max_bad_ratio`. Over-length rows deleted by
    `truncation_strategy: delete` are the user's choice: always reported, never a reason to stop."""
    if report.bad and strategy == "error":
        shown = "\n".join(f"  {b}" for b in report.bad[:50])
        more = f"\n  ... and {len(report.bad) - 50} more" if len(report.bad) > 50 else ""
        raise DataError(f"{len(report.bad)} bad {what} rows (check_dataset_strategy: error):\n{shown}{more}\n"
                        f"{report.table()}\nFix these rows, or set check_dataset_strategy: warning to drop them.")
    if report.bad and strategy == "warning":
        for b in report.bad[:200]:
            log.warning("dropped %s", b)
        if len(report.bad) > 200:
            log.warning("... and %d more dropped rows", len(report.bad) - 200)
    for note in report.warnings + [deleted_note(report, what) or ""]:
        if note:
            log.warning(note)
    if report.bad or report.deleted:
        log.info("%s data: %s", what, report.summary())
    if report.bad and report.bad_ratio > max_bad_ratio:
        raise DataError(f"{len(report.bad)} of {report.total} {what} rows are bad "
                        f"({report.bad_ratio:.0%} > max_bad_ratio {max_bad_ratio:.0%}):\n{report.table()}\n"
                        f"First ones:\n" + "\n".join(f"  {b}" for b in report.bad[:10]) +
                        "\nThe format or columns are probably wrong; check them with `hone data check`, or raise "
                        "max_bad_ratio")


def _check_usable(data: PreparedData) -> None:
    if data.train:
        return
    counts = data.report.counts()
    if counts and set(counts) <= {"no_trainable_tokens", "response_cut"}:
        raise DataError("no trainable tokens: every row lost all its loss-carrying tokens (check the template, "
                        "loss_scope, the rows' train flags and max_length)")
    if data.report.deleted and not data.report.bad:
        raise DataError(f"no usable training rows: {deleted_note(data.report)}")
    raise DataError(f"no usable training rows ({data.report.summary()}); see the dropped rows above")


# --------------------------------------------------------------------------------------------------- entry

def _cache_key(cfg: RunCfg, plan: tuple[Plan, Plan], tokenizer: Any, template: Any) -> str | None:
    files: list[list[Any]] = []
    for spec, src in plan[0] + plan[1]:
        if src.fn is not None:
            return None  # a registered function's rows have no file to hash
        files.append([spec.target, repr(src.spec), src.split, src.num_samples,
                      [[str(p.resolve()), file_digest(p)] for p in src.files]])
    settings = {k: v for k, v in asdict(cfg.data).items() if k not in ("preprocessing_num_workers", "data_cache",
                                                                       "check_dataset_strategy", "max_bad_ratio")}
    return cache.make_key({"data": settings, "files": files, "system": cfg.model.system,
                           "template": cache.template_id(template), "tokenizer": cache.tokenizer_id(tokenizer)})


def collect(cfg: RunCfg, tokenizer: Any, template: Any) -> PreparedData:
    """Read and encode everything, with every bad row in the reports, without judging them (no raising)."""
    plan = plan_sources(cfg.data)
    key = _cache_key(cfg, plan, tokenizer, template) if cfg.data.data_cache else None
    hit = cache.load(key) if key else None
    if hit is not None:
        train, val, report, val_report, meta = hit
        log.info("tokenized data loaded from the cache (%d rows)", len(train))
        return PreparedData(train, val, report, meta["truncated"], meta["fingerprint"], val_report,
                            meta["eos_cut"], cached=True, prompt_cut=meta["prompt_cut"])
    train_c, val_c, report, val_report = load_conversations(cfg.data, plan)
    train, truncated, bad = encode_all(train_c, cfg, tokenizer, template)
    report.kept = len(train)
    _file_encode_failures(report, bad)
    val, _, val_bad = encode_all(val_c, cfg, tokenizer, template)
    val_report.kept = len(val)
    _file_encode_failures(val_report, val_bad)
    data = PreparedData(train, val, report, truncated, fingerprint(train), val_report,
                        sum(r.eos_cut for r in train), prompt_cut=sum(r.prompt_cut for r in train))
    if key:
        cache.save(key, train, val, report, val_report, {"truncated": truncated, "fingerprint": data.fingerprint,
                                                         "eos_cut": data.eos_cut, "prompt_cut": data.prompt_cut})
    return data


def _file_encode_failures(report: DataReport, failed: list[BadRow]) -> None:
    """Over-length rows under `truncation_strategy: delete` go to `deleted`; every other failure is bad."""
    report.bad = sorted(report.bad + [b for b in failed if b.reason != "over_length"], key=_natural)
    report.deleted = sorted(report.deleted + [b for b in failed if b.reason == "over_length"], key=_natural)


def prepare(cfg: RunCfg, tokenizer: Any, template: Any) -> PreparedData:
    """Everything between the config and the batches: read, check, encode (or load from cache), report."""
    d = cfg.data
    data = collect(cfg, tokenizer, template)
    enforce(data.report, d.check_dataset_strategy, "training", d.max_bad_ratio)
    enforce(data.val_report, d.check_dataset_strategy, "validation", d.max_bad_ratio)
    _check_usable(data)
    if data.truncated:
        log.warning("%d rows were longer than max_length %d and were cut (%s); %d of them lost the end of their "
                    "last reply, %d their whole prompt", data.truncated, d.max_length, d.truncation_strategy,
                    data.eos_cut, data.prompt_cut)
    return data
