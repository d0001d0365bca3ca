"""Where metrics go: the console (a progress line), metrics.jsonl, TensorBoard, wandb, and loss.png."""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from .. import atomic

log = logging.getLogger("hone")


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """One updating line on a terminal (a plain log line every `logging_steps` otherwise)."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True) -> None:
        self.total, self.start = total, start
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.t0 = time.monotonic()

    def eta(self, step: int) -> float:
        done = step - self.start
        if done <= 0:
            return float("nan")
        return (time.monotonic() - self.t0) / done * (self.total - step)

    def update(self, step: int, metrics: dict[str, Any], force: bool = False) -> None:
        if not self.enabled:
            return
        bar_w = 24
        frac = step / max(1, self.total)
        bar = "#" * int(bar_w * frac) + "-" * (bar_w - int(bar_w * frac))
        eta = self.eta(step)
        parts = [f"step {step}/{self.total}", f"loss {metrics.get('loss', float('nan')):.4f}",
                 f"lr {metrics.get('lr', 0):.2e}"]
        if metrics.get("grad_norm") is not None:
            parts.append(f"grad norm {metrics['grad_norm']:.3f}")
        if "tokens_per_s" in metrics:
            parts.append(f"{metrics['tokens_per_s']:.0f} tok/s")
        if metrics.get("memory_gb"):
            parts.append(f"mem {metrics['memory_gb']:.2f} GB")
        parts.append(f"ETA {_fmt_time(eta) if math.isfinite(eta) else '?'}")
        line = f"[{bar}] " + " | ".join(parts)
        if self.tty:
            sys.stderr.write("\r" + line + " " * 4)
            sys.stderr.flush()
        elif force:
            log.info(line)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


class MetricsLog:
    """metrics.jsonl plus TensorBoard / wandb when asked for and installed."""

    def __init__(self, run_dir: Path, report_to: tuple[str, ...], logging_dir: str | None,
                 config: dict[str, Any], enabled: bool = True, resume_step: int | None = None) -> None:
        """``resume_step``: drop records past it, which a killed run wrote after its last checkpoint."""
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        if resume_step is not None:
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            atomic.write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        if "tensorboard" in report_to:
            if importlib.util.find_spec("tensorboard") is not None:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(logging_dir or str(run_dir / "runs"))
            else:
                log.info("tensorboard is not installed; metrics go to metrics.jsonl (pip install 'hone[tensorboard]')")
        if "wandb" in report_to:
            if importlib.util.find_spec("wandb") is not None:
                import wandb

                self.wandb = wandb.init(project="hone", dir=str(run_dir), config=config)
            else:
                log.warning("report_to wandb: wandb is not installed (pip install 'hone[wandb]'); skipped")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        step = record.get("step", 0)
        scalars = {k: v for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step",)}
        if self.tb is not None:
            prefix = "eval/" if record.get("kind") == "eval" else "train/"
            for k, v in scalars.items():
                self.tb.add_scalar(prefix + k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log({("eval/" if record.get("kind") == "eval" else "train/") + k: v
                            for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return out


def plot_loss(run_dir: Path) -> Path | None:
    """loss.png: training loss per step (and its moving average) with eval loss points."""
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and math.isfinite(r.get("loss", float("nan")))]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        xs, ys = zip(*train)
        ax.plot(xs, ys, color="#9ab", linewidth=1, label="train loss")
        if len(ys) >= 5:
            w = max(2, len(ys) // 10)
            smooth = [sum(ys[max(0, i - w + 1):i + 1]) / len(ys[max(0, i - w + 1):i + 1]) for i in range(len(ys))]
            ax.plot(xs, smooth, color="#1f5f9f", linewidth=2, label="train loss (moving average)")
    if evals:
        xs, ys = zip(*evals)
        ax.plot(xs, ys, "o-", color="#d0582a", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = run_dir / "loss.png"
    fig.savefig(out)
    plt.close(fig)
    return out
