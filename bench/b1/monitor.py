"""Runs one tool's process: wall time, peak resident memory of its whole process tree, time-stamped output."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

POLL_S = 0.15


@dataclass
class Finished:
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, line) of stdout+stderr

    def first_stamp(self, needle: str) -> float | None:
        return next((t for t, line in self.lines if needle in line), None)

    def last_stamp(self, needle: str) -> float | None:
        return next((t for t, line in reversed(self.lines) if needle in line), None)


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of the process and all its descendants (those that vanish mid-walk count as 0)."""
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> Finished:
    """Runs cmd to its end, polling the tree's RSS every POLL_S seconds and copying its output to log_path."""
    lines: list[tuple[float, str]] = []
    t0 = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        child = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, errors="replace", bufsize=1)
        ps = psutil.Process(child.pid)
        peak = 0
        done = threading.Event()

        def poll() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss(ps))
                done.wait(POLL_S)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        assert child.stdout is not None
        # progress bars redraw with '\r': count each redraw as a line of its own
        for raw in child.stdout:
            now = time.monotonic() - t0
            for part in raw.rstrip("\n").split("\r"):
                if part.strip():
                    lines.append((now, part))
            log.write(raw)
            log.flush()
        rc = child.wait()
        wall = time.monotonic() - t0
        done.set()
        poller.join()
    return Finished(rc, wall, peak, lines)


def base_env(threads: int) -> dict[str, str]:
    """The environment every tool runs in: CPU only, `threads` threads, no network, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "VIRTUAL_ENV"))}
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true",
                "DISABLE_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"})
    return env
