"""The only data I/O: files and folders, saved datasets, dataset_info.json names and registered datasets."""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import yaml

from ..errors import DataError
from ..registry import Registry
from .conversation import Conversation, check_conversation
from .formats import FormatSpec, RowError, detect_format, fill_placeholders, to_conversation
from .mixing import BadRow, DataReport, DatasetSpec

EXTENSIONS = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt")

DATASETS: Registry[Callable[..., Any]] = Registry("dataset")

Row = tuple[Any, str, "RowError | None"]


def register_dataset(name: str, fn: Callable[..., Any] | None = None, *, overwrite: bool = False, **kwargs: Any):
    """Register a Python function returning rows (dicts in any supported format) under a dataset name.

    The function may return one list of rows, or a ``(train_rows, val_rows)`` pair. Usable as a decorator.
    """
    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        DATASETS.register(name, (lambda: f(**kwargs)) if kwargs else f, overwrite=overwrite)
        return f

    return deco(fn) if fn is not None else deco


# --------------------------------------------------------------------------------------------- file readers

def _json_rows(path: Path, text: str) -> Iterator[Row]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            yield None, f"{path}:{e.lineno}", RowError(
                "bad_json", f"the file is not valid JSON ({e.msg} at column {e.colno}), so none of its rows can "
                "be read; fix it, or write one JSON object per line (.jsonl) so one bad line costs one row")
            return
        for i, row in enumerate(data):
            yield row, f"{path}#{i + 1}", None
        return
    if stripped.startswith("{"):
        try:  # one object holding the whole file, or JSON lines
            data = json.loads(text)
            if isinstance(data, dict):
                yield data, f"{path}#1", None
                return
        except json.JSONDecodeError:
            pass
    yield from _jsonl_lines(path, text)


def _jsonl_lines(path: Path, text: str) -> Iterator[Row]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line), f"{path}:{n}", None
        except json.JSONDecodeError as e:
            yield None, f"{path}:{n}", RowError("bad_json", f"not valid JSON ({e.msg} at column {e.colno})")


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def _csv_rows(path: Path, text: str, delimiter: str) -> Iterator[Row]:
    """Rows located at the line where each starts (a quoted field may span lines)."""
    lines = _LINE.findall(text)  # the csv module's own line ends; str.splitlines knows more
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] | None = None
    end = 0
    for fields in reader:
        start, end = end + 1, reader.line_num
        if not fields:
            continue
        if end == len(lines) and _unclosed_quote("".join(lines[start - 1:]), delimiter):
            yield None, f"{path}:{start}", RowError(
                "bad_csv", f"a quoted field opens on this line and is never closed, so the {end - start} lines "
                "after it cannot be read as rows; close the quote (a quote inside a field is written \"\")")
            return
        if header is None:
            header = fields
            continue
        loc = f"{path}:{start}"
        if len(fields) > len(header):
            yield None, loc, RowError("bad_csv", "the row has more fields than the header")
            continue
        yield dict(zip(header, fields + [None] * (len(header) - len(fields)))), loc, None


def _unclosed_quote(segment: str, delimiter: str) -> bool:
    """The last row runs to the end of the file inside a quoted field (the csv module reads it as one field)."""
    try:
        list(csv.reader(_LINE.findall(segment), delimiter=delimiter, strict=True))
    except csv.Error as e:
        return "unexpected end of data" in str(e)
    return False


def _parquet_rows(path: Path) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow: pip install 'hone[data]'") from None
    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield row, f"{path}#{i + 1}", None


def _txt_rows(path: Path, text: str) -> Iterator[Row]:
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield {"text": line}, f"{path}:{n}", None


def is_saved_dataset(path: Path) -> bool:
    """A directory written by Hugging Face ``datasets``' ``save_to_disk``."""
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def _saved_dataset_rows(path: Path, split: str | None) -> Iterator[Row]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path} is a saved Hugging Face dataset (save_to_disk); reading it needs the `datasets` "
                        "package: pip install 'hone[data]' (or export it to .jsonl/.parquet)") from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        name = split or ("train" if "train" in ds else next(iter(ds)))
        if name not in ds:
            raise DataError(f"{path}: no split '{name}'; it has {', '.join(ds)}")
        ds = ds[name]
    for i, row in enumerate(ds):
        yield row, f"{path}#{i + 1}", None


def read_file(path: Path, split: str | None = None) -> Iterator[Row]:
    """Yield (row, location, error) for every row of a data file; a file that cannot be read is one bad row."""
    suffix = path.suffix.lower()
    try:
        if is_saved_dataset(path):
            yield from _saved_dataset_rows(path, split)
        elif suffix in (".json", ".jsonl", ".txt"):
            text = path.read_text(encoding="utf-8-sig")
            yield from (_json_rows(path, text) if suffix == ".json" else _jsonl_lines(path, text)
                        if suffix == ".jsonl" else _txt_rows(path, text))
        elif suffix in (".csv", ".tsv"):
            yield from _csv_rows(path, path.read_text(encoding="utf-8-sig"), "\t" if suffix == ".tsv" else ",")
        elif suffix == ".parquet":
            yield from _parquet_rows(path)
        else:
            raise DataError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(EXTENSIONS)}")
    except UnicodeDecodeError as e:
        yield None, str(path), RowError("unreadable_file", f"not UTF-8 text (byte {e.start}); save it as UTF-8")
    except OSError as e:
        yield None, str(path), RowError("unreadable_file", f"cannot read the file ({e.strerror or e})")
    except (csv.Error, ValueError) as e:  # malformed csv, corrupt parquet
        yield None, str(path), RowError("unreadable_file", f"cannot parse the file ({type(e).__name__}: {e})")


def data_files(path: Path) -> list[Path]:
    """The data files a path stands for: itself, or every data file in a folder (sorted)."""
    if path.is_dir() and not is_saved_dataset(path):
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
                       and not p.name.startswith(".") and p.name != "dataset_info.json")
        if not files:
            raise DataError(f"{path}: the folder holds no data files ({', '.join(EXTENSIONS)})")
        return files
    return [path]


# ------------------------------------------------------------------------------------------ dataset_info.json

def load_dataset_info(path: Path) -> dict[str, dict[str, Any]]:
    """Dataset names → entries of a LLaMA-Factory style dataset_info.json (or YAML), with their base folder."""
    if not path.is_file():
        raise DataError(f"dataset info file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        info = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise DataError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    if not isinstance(info, dict) or not all(isinstance(v, dict) for v in info.values()):
        raise DataError(f"{path}: must map dataset names to objects with a 'file_name'")
    return {k: {**v, "_base": str(path.parent)} for k, v in info.items()}


def builtin_info() -> dict[str, dict[str, Any]]:
    """The demo datasets shipped with hone (alpaca_en_demo, identity, ...), usable by name."""
    base = Path(str(resources.files("hone").joinpath("resources", "datasets")))
    return load_dataset_info(base / "dataset_info.json") if (base / "dataset_info.json").is_file() else {}


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
    """Turn a dataset entry into a Source: a registered function, a dataset_info name, a path, or a demo set."""
    if spec.hub:
        raise DataError(f"dataset '{spec.hub}::{spec.target}' is on a hub, and this machine cannot reach it: "
                        "download it and pass the local file instead")
    if spec.target in DATASETS:
        return Source(spec.target, fn=DATASETS.get(spec.target), spec=FormatSpec(fmt))
    if spec.target in info:
        return _from_info(spec.target, info[spec.target], fmt)
    path = Path(spec.target).expanduser()
    if not path.is_absolute() and dataset_dir and not path.exists():
        path = Path(dataset_dir) / path
    if path.exists():
        return Source(spec.target, tuple(data_files(path)), FormatSpec(fmt))
    builtin = builtin_info()
    if spec.target in builtin:
        return _from_info(spec.target, builtin[spec.target], fmt)
    known = sorted(set(info) | set(DATASETS) | set(builtin))
    raise DataError(f"dataset '{spec.target}' is neither a file nor a registered name. Known names: "
                    f"{', '.join(known)}. Check the path, or set dataset_dir to the folder holding its "
                    "dataset_info.json")


def _entry_format(entry: Mapping[str, Any], fmt: str) -> str:
    formatting = entry.get("formatting") or fmt
    formatting = {"openai": "messages"}.get(formatting, formatting)
    tags = entry.get("tags") or {}
    if formatting == "sharegpt" and tags.get("role_tag") == "role":
        return "messages"
    columns = set(entry.get("columns") or {})
    if formatting == "auto" and columns and columns <= {"prompt"}:
        return "text"  # LLaMA-Factory's pre-training entries map only `prompt`
    return formatting


def _from_info(name: str, entry: Mapping[str, Any], fmt: str) -> Source:
    base = Path(entry["_base"])
    if "file_name" not in entry:
        hub = next((entry[k] for k in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url") if k in entry), None)
        if hub:
            raise DataError(f"dataset '{name}' lives on a hub ({hub}), which this machine cannot reach: download "
                            "it and point 'file_name' at the local copy")
        raise DataError(f"dataset '{name}' in {base / 'dataset_info.json'} has no 'file_name'")
    if entry.get("ranking"):
        raise DataError(f"dataset '{name}' is a ranking (preference) set; hone trains SFT, which needs one "
                        "reply per prompt")
    file_name = entry["file_name"]
    if not isinstance(file_name, str) or not file_name.strip():
        raise DataError(f"dataset '{name}': file_name must be a path inside {base}, got {file_name!r}")
    path = base / file_name
    _inside(name, file_name, path, base)
    if not path.exists():
        raise DataError(f"dataset '{name}': file {path} does not exist")
    files = data_files(path)
    for f in files:  # a folder's files too: one may be a link out of it
        _inside(name, file_name, f, base)
    spec = FormatSpec(_entry_format(entry, fmt), dict(entry.get("columns") or {}), dict(entry.get("tags") or {}))
    return Source(name, tuple(files), spec, split=entry.get("split"), num_samples=entry.get("num_samples"))


def _inside(name: str, file_name: str, path: Path, base: Path) -> None:
    """Refuse a dataset_info entry whose file lies outside its folder (`..`, an absolute path, a symlink out):
    a downloaded dataset folder must not make hone read other files of this machine."""
    real = path.resolve()
    if not real.is_relative_to(base.resolve()):
        raise DataError(f"dataset '{name}': file_name '{file_name}' points outside {base} (to {real}); dataset_info "
                        "entries may only name files inside their own folder (copy the data there)")


# ---------------------------------------------------------------------------------------------- loading

def read_source(src: Source, name: tuple[str, ...] = (), author: tuple[str, ...] = ()
                ) -> tuple[list[Conversation], list[Conversation], DataReport]:
    """Read every row of a source into Conversations; bad rows go into the report, never silently away."""
    report = DataReport()
    train: list[Conversation] = []
    val: list[Conversation] = []
    if src.fn is not None:
        out = src.fn()
        parts = out if isinstance(out, tuple) and len(out) == 2 else (out, [])
        for target, rows in zip((train, val), parts):
            located = [(row, f"{src.name}#{i + 1}", None) for i, row in enumerate(rows)]
            _convert(located, src.spec, target, report, name, author)
        return train, val, report
    for path in src.files:
        rows = list(read_file(path, src.split))
        if not rows:
            report.warnings.append(f"{path}: the file is empty (no rows); check that it is the file you meant")
        _convert(rows, src.spec, train, report, name, author)
    return train, val, report


def file_format(rows: list[Row], spec: FormatSpec) -> FormatSpec:
    """Pin `auto` to one format for a whole file, from its first rows that tell, so every row is read alike."""
    if spec.format != "auto":
        return spec
    for row, _, err in rows[:1000]:
        if err is None and isinstance(row, Mapping):
            try:
                return replace(spec, format=detect_format(row, spec))
            except RowError:
                continue
    return spec


def _convert(rows: list[Row], spec: FormatSpec, target: list[Conversation], report: DataReport,
             name: tuple[str, ...], author: tuple[str, ...]) -> None:
    spec = file_format(rows, spec)
    for row, loc, err in rows:
        if err is not None:
            report.bad.append(BadRow(loc, err.reason, err.detail))
            continue
        try:
            conv = to_conversation(row, spec, loc)
        except RowError as e:
            report.bad.append(BadRow(loc, e.reason, e.detail))
            continue
        why = check_conversation(conv)
        if why is not None:
            reason, _, detail = why.partition(": ")
            report.bad.append(BadRow(loc, reason, detail))
            continue
        target.append(fill_placeholders(conv, name, author))
        report.kept += 1
