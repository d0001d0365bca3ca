"""`hone data check` and `hone data preview`: what the data looks like to the model, before training."""
from __future__ import annotations

import math
from typing import Any, Sequence

from ..errors import DataError
from .encode import IGNORE_INDEX, Encoded
from .mixing import deleted_note
from .pipeline import PreparedData, collect, enforce

LOSS_ON, LOSS_OFF = "\x1b[1;32m", "\x1b[0m"
MARK_ON, MARK_OFF = "[[", "]]"


def _load(cfg: Any, tokenizer: Any, template: Any) -> tuple[Any, Any]:
    """The run's tokenizer and template, without loading the model's weights."""
    if tokenizer is None:
        from ..models.load import load_tokenizer, resolve_model

        model_dir = resolve_model(cfg.model.model, revision=cfg.model.model_revision, token=cfg.model.hub_token)
        tokenizer = load_tokenizer(model_dir, cfg.model)
    if template is None:
        from ..templates.base import get_template

        template = get_template(cfg.model.template, tokenizer)
    return tokenizer, template


def histogram(lengths: Sequence[int], bins: int = 8, width: int = 40) -> list[str]:
    """Text bars of a length distribution in equal-width bins."""
    if not lengths:
        return ["  (no rows)"]
    top = max(lengths)
    step = max(1, math.ceil((top + 1) / bins))
    counts = [0] * bins
    for n in lengths:
        counts[min(n // step, bins - 1)] += 1
    peak = max(counts)
    return [f"  {i * step:>6}-{(i + 1) * step - 1:<6} {c:>7}  {'#' * max(1 if c else 0, round(width * c / peak))}"
            for i, c in enumerate(counts)]


def stats(rows: Sequence[Encoded]) -> dict[str, Any]:
    """Rows, tokens, supervised share and length percentiles of encoded rows."""
    lengths = sorted(len(r.input_ids) for r in rows)
    tokens = sum(lengths)
    supervised = sum(r.n_supervised for r in rows)

    def pct(p: float) -> int:
        return lengths[min(len(lengths) - 1, int(p * len(lengths)))] if lengths else 0

    return {"rows": len(rows), "tokens": tokens, "supervised": supervised,
            "loss_share": supervised / tokens if tokens else 0.0, "mean": tokens / len(rows) if rows else 0.0,
            "p50": pct(0.5), "p95": pct(0.95), "max": lengths[-1] if lengths else 0, "lengths": lengths}


def steps_per_epoch(cfg: Any, s: dict[str, Any]) -> tuple[int, str]:
    """Optimizer steps per epoch on one device, and how they were counted."""
    t = cfg.train
    per_step = t.batch_size * t.gradient_accumulation_steps
    rows = s["rows"]  # packing lays a step's rows out differently; it trains on as many rows per step
    how = f"{rows} rows / (batch_size {t.batch_size} x gradient_accumulation_steps {t.gradient_accumulation_steps})"
    return math.ceil(rows / per_step), how + ", one device"


def _bad_lines(title: str, rows: Sequence[Any], limit: int = 50) -> list[str]:
    if not rows:
        return []
    out = [f"{title}:"] + [f"  {b}" for b in rows[:limit]]
    if len(rows) > limit:
        out.append(f"  ... and {len(rows) - limit} more")
    return out


def format_check(cfg: Any, data: PreparedData) -> str:
    """The `hone data check` text for prepared data."""
    s = stats(data.train)
    v = stats(data.val)
    steps, how = steps_per_epoch(cfg, s)
    lines = [f"training rows     {s['rows']}" + (" (from the tokenization cache)" if data.cached else ""),
             f"validation rows   {v['rows']}",
             f"tokens            {s['tokens']} (mean {s['mean']:.0f}, median {s['p50']}, p95 {s['p95']}, max "
             f"{s['max']} per row; max_length {cfg.data.max_length})",
             f"loss tokens       {s['supervised']} ({s['loss_share']:.1%} of all tokens; loss_scope "
             f"{cfg.data.loss_scope})",
             f"truncated rows    {data.truncated} ({data.eos_cut} lost the end of their last reply, "
             f"{data.prompt_cut} their whole prompt; truncation_strategy {cfg.data.truncation_strategy})",
             f"deleted rows      {len(data.report.deleted)} (longer than max_length, truncation_strategy delete)",
             f"steps per epoch   {steps} ({how})",
             "", "length histogram (tokens per row):", *histogram(s["lengths"]),
             "", "rows read, kept and dropped by reason:", data.report.table()]
    if data.val_report.bad:
        lines += ["", "validation rows read, kept and dropped by reason:", data.val_report.table()]
    for title, rows in (("dropped training rows", data.report.bad), ("dropped validation rows", data.val_report.bad),
                        ("deleted over-length training rows", data.report.deleted),
                        ("deleted over-length validation rows", data.val_report.deleted)):
        bad = _bad_lines(title, rows)
        lines += [""] + bad if bad else []
    notes = data.report.warnings + data.val_report.warnings
    notes += [n for n in (deleted_note(data.report), deleted_note(data.val_report, "validation")) if n]
    return "\n".join(lines + ([""] + notes if notes else []))


def check_report(cfg: Any, tokenizer: Any = None, template: Any = None) -> str:
    """Statistics and every bad row of a config's data; raises DataError (report included) when training would
    stop on this data."""
    tokenizer, template = _load(cfg, tokenizer, template)
    data = collect(cfg, tokenizer, template)
    text = format_check(cfg, data)
    d = cfg.data
    strategy = "none" if d.check_dataset_strategy == "warning" else d.check_dataset_strategy  # listed above
    try:
        enforce(data.report, strategy, "training", d.max_bad_ratio)
        enforce(data.val_report, strategy, "validation", d.max_bad_ratio)
    except DataError as e:
        raise DataError(f"{text}\n\ntraining would stop on this data:\n{e}") from None
    if not data.train:
        raise DataError(f"{text}\n\nno usable training rows")
    return text


def render(enc: Encoded, tokenizer: Any, color: bool = False) -> str:
    """A row's text exactly as the model sees it, the tokens that carry loss marked (colour or [[ ]])."""
    on, off = (LOSS_ON, LOSS_OFF) if color else (MARK_ON, MARK_OFF)
    out: list[str] = []
    start = 0
    ids, labels = enc.input_ids, enc.labels
    for i in range(1, len(ids) + 1):
        if i == len(ids) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            text = tokenizer.decode(ids[start:i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            out.append(f"{on}{text}{off}" if labels[start] != IGNORE_INDEX else text)
            start = i
    return "".join(out)


def preview(cfg: Any, n: int = 3, color: bool = False, tokenizer: Any = None, template: Any = None) -> str:
    """The first ``n`` training rows rendered as the model sees them, with their loss tokens marked."""
    tokenizer, template = _load(cfg, tokenizer, template)
    data = collect(cfg, tokenizer, template)
    legend = f"{LOSS_ON}green{LOSS_OFF}" if color else f"{MARK_ON} {MARK_OFF}"
    parts = [f"{len(data.train)} training rows; tokens in {legend} carry loss"]
    for k, enc in enumerate(data.train[:n], 1):
        head = f"--- row {k}: {enc.source} ({len(enc.input_ids)} tokens, {enc.n_supervised} with loss" + \
               (", truncated" if enc.truncated else "") + ") ---"
        parts += ["", head, render(enc, tokenizer, color)]
    if data.report.bad:
        parts += ["", f"{len(data.report.bad)} rows were dropped; `hone data check` lists them"]
    if data.report.deleted:
        parts += ["", f"{len(data.report.deleted)} rows longer than max_length were deleted (truncation_strategy "
                  "delete); `hone data check` lists them"]
    return "\n".join(parts)
