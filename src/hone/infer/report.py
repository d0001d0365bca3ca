"""`hone eval --adapter RUN`: did the fine-tune help? Base model and tuned model on the same rows.

Loss and perplexity come from the training code's own loss (so the tuned number is the run's eval_loss),
generation metrics from ``hone infer``'s predictions; ``report.md``, a standalone ``report.html`` (loss
curve drawn inline) and the numbers as ``report.json`` are written into the run directory.
"""
from __future__ import annotations

import html
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

from .. import atomic
from ..config import RunCfg
from ..errors import DataError
from ..runs import CONFIG_FILE, RunInfo
from .batch import load_conversations_for, metrics_of, predict, rows_from
from .engine import BASE

log = logging.getLogger("hone")


@dataclass
class Side:
    """One model's results: mean token loss, perplexity, generation metrics and its predictions."""

    loss: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def perplexity(self) -> float | None:
        return math.exp(self.loss) if self.loss is not None and self.loss < 700 else None


@dataclass
class EvalResult:
    base: Side
    tuned: Side
    data_name: str
    rows: int
    markdown: Path
    html: Path


def token_loss(engine: Any, rows: Sequence[Any], adapter: str | None, batch_size: int,
               full_forward: bool = False) -> float:
    """Mean loss per supervised token, exactly as training's evaluation computes it (the same objective)."""
    import torch
    from accelerate import Accelerator

    from ..training.loop import evaluate
    from ..training.objective import SFT

    rows = list(rows)
    objective = SFT(engine.tokenizer.pad_token_id, False, rows[0], full_forward)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    with engine.lock, engine.using(adapter):
        value = evaluate(objective.loss_module(engine.model), objective, rows, acc, batch_size)
    engine.model.eval()  # evaluate() leaves the module in training mode
    return value


def run_eval(cfg: RunCfg, engine: Any, run: RunInfo, *, dataset_given: bool, show: int = 5,
             out: TextIO | None = None) -> EvalResult:
    """Compare the base model and the run's tuned model on the validation split (or a given dataset)."""
    from ..data.pipeline import encode_all

    out = out or sys.stdout
    convs, name = load_conversations_for(cfg, run, dataset_given)
    rows = rows_from(convs)
    if not rows:
        raise DataError(f"{name} has no rows to evaluate")
    tuned_name = engine.default_adapter
    if tuned_name is None:
        raise DataError(f"{run.run_dir} holds full-model weights, not an adapter; `hone eval` compares an adapter "
                        "with its base model")
    missing = [r.source or str(i + 1) for i, r in enumerate(rows) if r.reference is None]
    if missing:
        raise DataError(f"{name} has rows without a reference answer ({missing[0]}, {len(missing)} in all); "
                        "`hone eval` compares answers with references, so give rows that end with an assistant "
                        "reply (or use `hone infer` for predictions alone)")
    trained = run.config() if (run.run_dir / CONFIG_FILE).is_file() else cfg
    encoded, _, bad = encode_all(convs, trained, engine.tokenizer, engine.template)
    bs = trained.train.eval_batch_size or trained.train.batch_size
    losses = {}
    if encoded:
        for side, adapter in (("base", None), ("tuned", tuned_name)):
            losses[side] = token_loss(engine, encoded, adapter, bs, trained.model.full_forward_loss)
    if bad:
        log.warning("%d of %d rows could not be encoded for the loss (%s); the loss covers the rest", len(bad),
                    len(convs), bad[0].reason)
    sides = {}
    for side, adapter in (("base", BASE), ("tuned", tuned_name)):
        log.info("generating with the %s model", side)
        records = predict(engine, rows, cfg, adapter)
        has_refs = all(r["reference"] is not None for r in records)
        sides[side] = Side(losses.get(side), metrics_of(records) if has_refs else {}, records)
    md = run.run_dir / "report.md"
    md.write_text(markdown(run, name, len(rows), sides["base"], sides["tuned"], show), encoding="utf-8")
    page = run.run_dir / "report.html"
    page.write_text(html_page(run, name, len(rows), sides["base"], sides["tuned"], show), encoding="utf-8")
    numbers = {side: {"loss": v.loss, "perplexity": v.perplexity, **v.metrics} for side, v in sides.items()}
    atomic.write_json(run.run_dir / "report.json", {"data": name, "rows": len(rows), **numbers})
    out.write(summary_table(sides["base"], sides["tuned"]) + f"\nreport: {md}\n        {page}\n")
    return EvalResult(sides["base"], sides["tuned"], name, len(rows), md, page)


def _rows_of_numbers(base: Side, tuned: Side) -> list[tuple[str, str, str]]:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}" if v < 1000 else f"{v:.4g}"

    out = [("loss", f(base.loss), f(tuned.loss)), ("perplexity", f(base.perplexity), f(tuned.perplexity))]
    for k in base.metrics:
        out.append((k, f(base.metrics[k]), f(tuned.metrics.get(k))))
    return out


def summary_table(base: Side, tuned: Side) -> str:
    lines = [f"{'':<12}{'base':>12}{'tuned':>12}"]
    lines += [f"{k:<12}{b:>12}{t:>12}" for k, b, t in _rows_of_numbers(base, tuned)]
    return "\n".join(lines)


def _cell(s: str | None, limit: int = 300) -> str:
    s = (s or "").strip()
    s = s if len(s) <= limit else s[:limit - 1] + "…"
    return s.replace("|", "\\|").replace("\n", "<br>")


def markdown(run: RunInfo, data: str, n: int, base: Side, tuned: Side, show: int) -> str:
    parts = [f"# Did the fine-tune help? {run.run_dir.name}", "",
             f"Base model `{run.model}`, tuned with {run.method} ({run.global_step} steps); {n} rows of {data}.", "",
             "| | base | tuned |", "|---|---:|---:|"]
    parts += [f"| {k} | {b} | {t} |" for k, b, t in _rows_of_numbers(base, tuned)]
    parts += ["", "Loss is the mean over answer tokens (training's eval_loss); BLEU-4 and ROUGE are ×100.", ""]
    if (run.run_dir / "loss.png").is_file():
        parts += ["![loss curve](loss.png)", ""]
    parts += ["## Examples", "", "| prompt | reference | base | tuned |", "|---|---|---|---|"]
    for b, t in list(zip(base.records, tuned.records))[:show]:
        parts.append(f"| {_cell(b['prompt'])} | {_cell(b['reference'])} | {_cell(b['prediction'])} | "
                     f"{_cell(t['prediction'])} |")
    return "\n".join(parts) + "\n"


def loss_svg(records: Sequence[dict[str, Any]], width: int = 640, height: int = 300) -> str:
    """The run's training (and eval) loss per step as an inline SVG; empty when nothing was logged."""
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"
             and isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("kind") == "eval"
             and isinstance(r.get("eval_loss"), (int, float)) and math.isfinite(r["eval_loss"])]
    pts = train + evals
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    pad = 40

    def xy(s: float, v: float) -> str:
        x = pad + (s - x0) / ((x1 - x0) or 1) * (width - 2 * pad)
        y = height - pad - (v - y0) / ((y1 - y0) or 1) * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    body = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="loss curve"><rect width="100%" height="100%" fill="#fff"/>',
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>',
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>',
            f'<text x="{pad}" y="{pad - 8}" font-size="12">{y1:.3f}</text>',
            f'<text x="{pad}" y="{height - pad + 16}" font-size="12">{y0:.3f} @ step {x0}</text>',
            f'<text x="{width - pad}" y="{height - pad + 16}" font-size="12" text-anchor="end">step {x1}</text>']
    if train:
        body.append(f'<polyline fill="none" stroke="#3367d6" stroke-width="1.5" '
                    f'points="{" ".join(xy(s, v) for s, v in train)}"><title>train loss</title></polyline>')
    for s, v in evals:
        x, y = xy(s, v).split(",")
        body.append(f'<circle cx="{x}" cy="{y}" r="4" fill="#d93025"><title>eval loss {v:.4f} at step {s}'
                    f'</title></circle>')
    body.append('</svg>')
    return "".join(body)


def html_page(run: RunInfo, data: str, n: int, base: Side, tuned: Side, show: int) -> str:
    e = html.escape
    numbers = "".join(f"<tr><th>{e(k)}</th><td>{e(b)}</td><td>{e(t)}</td></tr>" for k, b, t in
                      _rows_of_numbers(base, tuned))
    examples = "".join(
        f"<tr><td>{e(b['prompt'])}</td><td>{e(b['reference'] or '')}</td><td>{e(b['prediction'])}</td>"
        f"<td>{e(t['prediction'])}</td></tr>" for b, t in list(zip(base.records, tuned.records))[:show])
    svg = loss_svg(run.metrics())
    curve = f"<h2>Loss curve</h2>{svg}<p class=note>blue: training loss; red: eval loss</p>" if svg else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hone eval: {e(run.run_dir.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;
white-space:pre-wrap}}.note{{color:#666;font-size:90%}}</style></head><body>
<h1>Did the fine-tune help? {e(run.run_dir.name)}</h1>
<p>Base model <code>{e(run.model)}</code>, tuned with {e(run.method)} ({run.global_step} steps); {n} rows of
{e(data)}.</p>
<table><tr><th></th><th>base</th><th>tuned</th></tr>{numbers}</table>
<p class=note>Loss is the mean over answer tokens (training's eval_loss); BLEU-4 and ROUGE are ×100.</p>
{curve}
<h2>Examples</h2>
<table><tr><th>prompt</th><th>reference</th><th>base</th><th>tuned</th></tr>{examples}</table>
</body></html>
"""
