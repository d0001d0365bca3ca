"""The only data I/O: files and folders, named datasets, `#N` sampling, mixing and validation splits."""
from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..errors import DataError
from ..registry import Registry
from .conversation import Conversation, check_conversation
from .formats import FormatSpec, RowError, fill_placeholders, to_conversation

EXTENSIONS = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt")

DATASETS: Registry[Callable[..., Any]] = Registry("dataset")


def register_dataset(name: str, fn: Callable[..., Any] | None = None, *, overwrite: bool = False, **kwargs: Any):
    """Register a Python function returning rows (dicts in any supported format) under a dataset name.

    The function may return one list of rows, or a ``(train_rows, val_rows)`` pair. Usable as a decorator.
    """
    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        DATASETS.register(name, (lambda: f(**kwargs)) if kwargs else f, overwrite=overwrite)
        return f

    return deco(fn) if fn is not None else deco


@dataclass(frozen=True)
class BadRow:
    location: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}: {self.detail}"


@dataclass
class DataReport:
    """Rows kept and dropped, by reason, with every bad row's location."""

    kept: int = 0
    bad: list[BadRow] = field(default_factory=list)

    def add(self, other: "DataReport") -> None:
        self.kept += other.kept
        self.bad += other.bad

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for b in self.bad:
            out[b.reason] = out.get(b.reason, 0) + 1
        return out

    def summary(self) -> str:
        parts = [f"{self.kept} rows kept"]
        parts += [f"{n} dropped ({r})" for r, n in sorted(self.counts().items())]
        return ", ".join(parts)


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of `dataset`: a path or name, an optional row count (`#N`) and hub prefix."""

    target: str
    count: int | None = None
    hub: str | None = None

    @classmethod
    def parse(cls, text: str) -> "DatasetSpec":
        s = text.strip()
        hub = None
        for prefix in ("hf::", "ms::", "HF::", "MS::"):
            if s.startswith(prefix):
                hub, s = prefix[:2].lower(), s[len(prefix):]
        count = None
        if "#" in s:
            base, _, n = s.rpartition("#")
            try:
                count = int(n)
            except ValueError:
                raise DataError(f"dataset '{text}': the part after '#' must be a row count, got '{n}'") from None
            if count < 1:
                raise DataError(f"dataset '{text}': the row count after '#' must be >= 1")
            s = base
        return cls(s, count, hub)


# --------------------------------------------------------------------------------------------- file readers

def _json_rows(path: Path) -> Iterator[tuple[Any, str, RowError | None]]:
    text = path.read_text(encoding="utf-8-sig")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno}); fix the file or "
                            "write one JSON object per line (.jsonl)") from None
        for i, row in enumerate(data):
            yield row, f"{path}#{i + 1}", None
        return
    if stripped.startswith("{"):
        try:  # one object holding the whole dataset, or JSON lines
            data = json.loads(text)
            if isinstance(data, dict):
                yield data, f"{path}#1", None
                return
        except json.JSONDecodeError:
            pass
    yield from _jsonl_lines(path, text)


def _jsonl_lines(path: Path, text: str) -> Iterator[tuple[Any, str, RowError | None]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line), f"{path}:{n}", None
        except json.JSONDecodeError as e:
            yield None, f"{path}:{n}", RowError("bad_json", f"not valid JSON ({e.msg} at column {e.colno})")


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[Any, str, RowError | None]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        for row in reader:
            loc = f"{path}:{reader.line_num}"
            if None in row:
                yield None, loc, RowError("bad_csv", "the row has more fields than the header")
                continue
            yield {k: v for k, v in row.items() if k is not None}, loc, None


def _parquet_rows(path: Path) -> Iterator[tuple[Any, str, RowError | None]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow: pip install 'hone[data]'") from None
    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield row, f"{path}#{i + 1}", None


def _txt_rows(path: Path) -> Iterator[tuple[Any, str, RowError | None]]:
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            yield {"text": line}, f"{path}:{n}", None


def read_file(path: Path) -> Iterator[tuple[Any, str, RowError | None]]:
    """Yield (row, location, error) for every row of a data file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            yield from _json_rows(path)
        elif suffix == ".jsonl":
            yield from _jsonl_lines(path, path.read_text(encoding="utf-8-sig"))
        elif suffix in (".csv", ".tsv"):
            yield from _csv_rows(path, "\t" if suffix == ".tsv" else ",")
        elif suffix == ".parquet":
            yield from _parquet_rows(path)
        elif suffix == ".txt":
            yield from _txt_rows(path)
        else:
            raise DataError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(EXTENSIONS)}")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror})") from None


def data_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
                       and not p.name.startswith(".") and p.name != "dataset_info.json")
        if not files:
            raise DataError(f"{path}: the folder holds no data files ({', '.join(EXTENSIONS)})")
        return files
    return [path]


# ------------------------------------------------------------------------------------------ dataset_info.json

def load_dataset_info(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"dataset info file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        info = json.loads(text) if path.suffix == ".json" else __import__("yaml").safe_load(text)
    except (json.JSONDecodeError, ValueError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: must map dataset names to entries")
    if isinstance(info, dict) and all(isinstance(v, dict) for v in info.values()):
        return {k: {**v, "_base": str(path.parent)} for k, v in info.items()}
    raise DataError(f"{path}: every entry must be an object with a 'file_name'")


@dataclass(frozen=True)
class Source:
    """A resolved dataset: where its rows come from and how to read them."""

    name: str
    files: tuple[Path, ...] = ()
    spec: FormatSpec = FormatSpec()
    fn: Callable[..., Any] | None = None
    split: str | None = None
    num_samples: int | None = None


def resolve(spec: DatasetSpec, info: Mapping[str, Mapping[str, Any]], fmt: str, dataset_dir: str | None) -> Source:
    """Turn a dataset entry into a Source (a registered function, a dataset_info name, or a path)."""
    if spec.hub:
        raise DataError(f"dataset '{spec.hub}::{spec.target}' is on a hub, and this machine cannot reach it: "
                        "download it and pass the local file instead")
    if spec.target in DATASETS:
        return Source(spec.target, fn=DATASETS.get(spec.target), spec=FormatSpec(fmt))
    if spec.target in info:
        return _from_info(spec.target, info[spec.target], fmt)
    path = Path(spec.target)
    if not path.is_absolute() and dataset_dir and not path.exists():
        path = Path(dataset_dir) / path
    if path.exists():
        return Source(spec.target, tuple(data_files(path)), FormatSpec(fmt))
    known = sorted(set(info) | set(DATASETS))
    hint = f" Registered names: {', '.join(known)}." if known else ""
    raise DataError(f"dataset '{spec.target}' is neither a file nor a registered name.{hint} Check the path, or "
                    "set dataset_dir to the folder holding its dataset_info.json")


def _from_info(name: str, entry: Mapping[str, Any], fmt: str) -> Source:
    base = Path(entry["_base"])
    for hub_key in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url"):
        if hub_key in entry and "file_name" not in entry:
            raise DataError(f"dataset '{name}' lives on a hub ({entry[hub_key]}), which this machine cannot "
                            "reach: download it and point 'file_name' at the local copy")
    if "file_name" not in entry:
        raise DataError(f"dataset '{name}' in {base / 'dataset_info.json'} has no 'file_name'")
    path = (base / entry["file_name"]).resolve()
    if not path.is_relative_to(base.resolve()):
        raise DataError(f"dataset '{name}': file_name '{entry['file_name']}' points outside {base}; keep data "
                        "files inside the dataset folder")
    if not path.exists():
        raise DataError(f"dataset '{name}': file {path} does not exist")
    formatting = entry.get("formatting", "alpaca" if fmt == "auto" else fmt)
    formatting = {"openai": "messages"}.get(formatting, formatting)
    columns = dict(entry.get("columns") or {})
    if entry.get("ranking"):
        raise DataError(f"dataset '{name}' is a ranking (preference) set; hone trains SFT, which needs one "
                        "reply per prompt")
    if formatting == "sharegpt" and "tags" in entry and entry["tags"].get("role_tag") == "role":
        formatting = "messages"
    return Source(name, tuple(data_files(path)), FormatSpec(formatting, columns, dict(entry.get("tags") or {})),
                  split=entry.get("split"), num_samples=entry.get("num_samples"))


# ---------------------------------------------------------------------------------------------- loading

def read_source(src: Source, name: tuple[str, ...] = (), author: tuple[str, ...] = ()) -> tuple[list[Conversation], list[Conversation], DataReport]:
    """Read every row of a source into Conversations; bad rows go into the report, never silently away."""
    report = DataReport()
    train: list[Conversation] = []
    val: list[Conversation] = []
    if src.fn is not None:
        out = src.fn()
        parts = out if isinstance(out, tuple) and len(out) == 2 else (out, [])
        for target, rows in zip((train, val), parts):
            for i, row in enumerate(rows):
                _add(target, row, f"{src.name}#{i + 1}", src.spec, report, name, author)
        return train, val, report
    for path in src.files:
        fmt_spec = src.spec
        for row, loc, err in read_file(path):
            if err is not None:
                report.bad.append(BadRow(loc, err.reason, err.detail))
                continue
            _add(train, row, loc, fmt_spec, report, name, author)
    return train, val, report


def _add(target: list[Conversation], row: Any, loc: str, spec: FormatSpec, report: DataReport,
         name: tuple[str, ...], author: tuple[str, ...]) -> None:
    try:
        conv = to_conversation(row, spec, loc)
    except RowError as e:
        report.bad.append(BadRow(loc, e.reason, e.detail))
        return
    why = check_conversation(conv)
    if why is not None:
        reason, _, detail = why.partition(": ")
        report.bad.append(BadRow(loc, reason, detail))
        return
    target.append(fill_placeholders(conv, name, author))
    report.kept += 1


def sample(rows: list[Conversation], n: int, rng: random.Random) -> list[Conversation]:
    """N rows: a seeded sample when N is smaller, whole repeats plus a sample when larger."""
    if not rows:
        return []
    whole, rest = divmod(n, len(rows))
    return rows * whole + rng.sample(rows, rest)


def split_val(rows: list[Conversation], val_size: float, rng: random.Random) -> tuple[list[Conversation], list[Conversation]]:
    if val_size <= 0 or len(rows) < 2:
        return rows, []
    n_val = int(round(val_size * len(rows))) if val_size < 1 else int(val_size)
    n_val = max(1, min(n_val, len(rows) - 1))
    idx = list(range(len(rows)))
    rng.shuffle(idx)
    val_idx = set(idx[:n_val])
    return [r for i, r in enumerate(rows) if i not in val_idx], [rows[i] for i in sorted(val_idx)]
