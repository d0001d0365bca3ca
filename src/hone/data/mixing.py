"""Pure bookkeeping for data: dataset entries (`name#N`), bad-row reports, sampling and validation splits."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Sequence, TypeVar

from ..errors import DataError

T = TypeVar("T")

REASONS = {
    "bad_json": "invalid JSON",
    "unreadable_file": "file cannot be read",
    "missing_field": "a required field is missing or null",
    "unknown_format": "the row matches no known format",
    "unknown_role": "a message has an unknown role",
    "order": "turns out of order",
    "system_not_first": "a system message after the first turn",
    "empty_reply": "an empty assistant reply",
    "no_reply": "no assistant reply to learn from",
    "over_length": "longer than max_length (truncation_strategy delete)",
    "response_cut": "truncation would cut away every reply token",
    "no_trainable_tokens": "no token carries loss",
    "bad_content": "content that is not text (or text parts)",
    "bad_tool_call": "a tool call without a function name",
    "bad_weight": "a loss_weight that is not a number >= 0",
    "bad_messages": "messages that are not a list of objects",
    "bad_csv": "a CSV row that does not match its header",
}


@dataclass(frozen=True)
class BadRow:
    """One row that was not trained on: where it is (``file:line`` or ``file#row``), why, and what to fix."""

    location: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}: {self.detail}"


@dataclass
class DataReport:
    """Rows kept and dropped, by reason, with every bad row's location.

    Rows over max_length under ``truncation_strategy: delete`` are the user's own policy, not bad data:
    they are listed in ``deleted``, counted apart, and never stop a run.
    """

    kept: int = 0
    """Rows read and parsed; once the split is chosen, the rows it uses (a repeated row counted each time)."""
    bad: list[BadRow] = field(default_factory=list)
    deleted: list[BadRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Problems with whole files or entries (an empty file), shown with the report."""
    unused: int = 0
    """Good rows read that this split does not use: held out for validation, or not drawn by `NAME#N`,
    max_samples or train_sample."""

    def add(self, other: "DataReport") -> None:
        self.kept += other.kept
        self.bad += other.bad
        self.deleted += other.deleted
        self.warnings += other.warnings
        self.unused += other.unused

    def counts(self) -> dict[str, int]:
        """Dropped (bad) rows per reason code."""
        out: dict[str, int] = {}
        for b in self.bad:
            out[b.reason] = out.get(b.reason, 0) + 1
        return dict(sorted(out.items()))

    @property
    def total(self) -> int:
        """All rows read (rows used more than once counted each time)."""
        return self.kept + len(self.bad) + len(self.deleted) + self.unused

    @property
    def bad_ratio(self) -> float:
        """The share of bad rows among all rows read (deleted over-length rows are not bad)."""
        return len(self.bad) / self.total if self.total else 0.0

    @property
    def selected(self) -> int:
        """The rows this split took to train on, before over-length ones were deleted."""
        return self.kept + len(self.deleted)

    @property
    def deleted_ratio(self) -> float:
        """The share of the split's rows deleted as over-length (rows it never took do not count)."""
        return len(self.deleted) / self.selected if self.selected else 0.0

    def summary(self) -> str:
        parts = [f"{self.kept} rows kept"]
        if self.deleted:
            parts.append(f"{len(self.deleted)} deleted as longer than max_length (truncation_strategy delete)")
        parts += [f"{n} dropped ({r})" for r, n in self.counts().items()]
        return ", ".join(parts)

    def table(self) -> str:
        """A count table: kept, deleted over-length rows, then dropped rows per reason."""
        lines = [f"  {'kept':<22}{self.kept:>8}"]
        if self.unused:
            lines.append(f"  {'not used':<22}{self.unused:>8}  held out for validation, or not drawn by NAME#N, "
                         "max_samples or train_sample")
        if self.deleted:
            lines.append(f"  {'deleted (over_length)':<22}{len(self.deleted):>8}  {REASONS['over_length']}, "
                         "by your policy")
        for reason, n in self.counts().items():
            lines.append(f"  {reason:<22}{n:>8}  {REASONS.get(reason, '')}")
        return "\n".join(lines)


def deleted_note(report: DataReport, what: str = "training") -> str | None:
    """What deleting over-length rows cost, loud with the fix when it took most of the data; None when none."""
    if not report.deleted:
        return None
    lengths = [int(m.group(1)) for b in report.deleted if (m := re.match(r"(\d+) tokens", b.detail))]
    longest = f" (the longest has {max(lengths)} tokens)" if lengths else ""
    text = (f"{len(report.deleted)} of {report.selected} {what} rows are longer than max_length and were deleted "
            f"(truncation_strategy delete){longest}")
    if report.deleted_ratio > 0.5:
        return (f"MOST {what.upper()} ROWS WERE DELETED: {text}; only {report.kept} remain. To train on them, set "
                "truncation_strategy: right (or left) to cut them instead, or raise max_length.")
    return text


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of `dataset`: a path or name, an optional row count (`#N`) and hub prefix."""

    target: str
    count: int | None = None
    hub: str | None = None

    @classmethod
    def parse(cls, text: str) -> "DatasetSpec":
        s = str(text).strip()
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


def sample(rows: Sequence[T], n: int, rng: random.Random) -> list[T]:
    """N rows: a seeded sample when N is smaller, whole repeats plus a sample when larger (order kept)."""
    if not rows:
        return []
    whole, rest = divmod(n, len(rows))
    picked = sorted(rng.sample(range(len(rows)), rest))
    return list(rows) * whole + [rows[i] for i in picked]


def split_val(rows: Sequence[T], val_size: float, rng: random.Random) -> tuple[list[T], list[T]]:
    """Split a share (< 1) or a number (>= 1) of rows off for validation, seeded; order is kept in both."""
    if val_size <= 0 or len(rows) < 2:
        return list(rows), []
    n_val = int(round(val_size * len(rows))) if val_size < 1 else int(val_size)
    n_val = max(1, min(n_val, len(rows) - 1))
    val_idx = set(rng.sample(range(len(rows)), n_val))
    return [r for i, r in enumerate(rows) if i not in val_idx], [rows[i] for i in sorted(val_idx)]


def rng_for(seed: int, *parts: object) -> random.Random:
    """A generator seeded by the data seed and a name, so one dataset's sample does not move when another is
    added to the mix."""
    return random.Random(":".join([str(seed), *map(str, parts)]))
