"""B1's results table: one row per tool, ratios against hone, '-' for anything a tool did not give."""
from __future__ import annotations

from typing import Any

GIB = 2 ** 30
COLUMNS = (  # (header, key, format)
    ("tool", "tool", "{}"),
    ("wall s", "wall_s", "{:.1f}"),
    ("train s", "train_s", "{:.1f}"),
    ("tokens/s", "tokens_per_s", "{:.0f}"),
    ("hone/peer tok/s", "speed_ratio", "{:.2f}x"),
    ("peak RSS GiB", "peak_rss_gib", "{:.2f}"),
    ("hone/peer RSS", "rss_ratio", "{:.2f}x"),
    ("final loss", "final_loss", "{:.4f}"),
    ("eval loss", "eval_loss", "{:.4f}"),
    ("MFU fp32", "mfu_fp32", "{:.1%}"),
    ("MFU bf16", "mfu_bf16", "{:.1%}"),
    ("mem estimate", "estimate", "{}"),
)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def add_ratios(rows: list[dict[str, Any]], base: str = "hone") -> list[dict[str, Any]]:
    """Adds tokens_per_s, speed_ratio (base tokens/s ÷ this tool's) and rss_ratio (base peak RSS ÷ this
    tool's) to every row; None where a number is missing or a run failed (its peak RSS is not the job's).
    Rows are changed in place and returned."""
    for r in rows:
        if r.get("returncode", 0) != 0:
            r["peak_rss_gib"] = None
        ok = _num(r.get("train_s")) and r["train_s"] > 0 and _num(r.get("real_tokens"))
        r["tokens_per_s"] = r["real_tokens"] / r["train_s"] if ok else None
    ref = next((r for r in rows if r.get("tool") == base), None)
    for r in rows:
        r["speed_ratio"] = r["rss_ratio"] = None
        if ref is None:
            continue
        if _num(ref.get("tokens_per_s")) and _num(r.get("tokens_per_s")) and r["tokens_per_s"] > 0:
            r["speed_ratio"] = ref["tokens_per_s"] / r["tokens_per_s"]
        if _num(ref.get("peak_rss_gib")) and _num(r.get("peak_rss_gib")) and r["peak_rss_gib"] > 0:
            r["rss_ratio"] = ref["peak_rss_gib"] / r["peak_rss_gib"]
    return rows


def cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def render(rows: list[dict[str, Any]]) -> str:
    """A Markdown table (readable as plain text too)."""
    cells = [[cell(r.get(key), fmt) for _, key, fmt in COLUMNS] for r in rows]
    heads = [h for h, _, _ in COLUMNS]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
    def line(items: list[str]) -> str:
        return "| " + " | ".join(x.ljust(w) if i == 0 else x.rjust(w)
                                 for i, (x, w) in enumerate(zip(items, widths))) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ("-" if i == 0 else ":")) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(heads), sep, *(line(c) for c in cells)])
