"""`hone train` starts itself again with a better allocator preloaded, and says so in its first lines."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
import yaml

from hone import allocator


def _train(cfg: dict, tmp_path, **env: str) -> subprocess.CompletedProcess:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**cfg, "max_steps": 1, "save_strategy": "no", "eval_strategy": "no"}))
    return subprocess.run([sys.executable, "-m", "hone", "train", str(path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_train_restarts_itself_with_the_library_preloaded(tiny_cfg, tmp_path):
    libc = sorted(glob.glob("/lib/*/libc.so.6") + glob.glob("/usr/lib/*/libc.so.6") + glob.glob("/lib64/libc.so.6"))
    if not libc:
        pytest.skip("no libc.so.6 to preload")
    # preloading the C library itself changes nothing but proves the restart: the new process names it
    proc = _train(tiny_cfg, tmp_path, HONE_ALLOCATOR=libc[0])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "memory allocator: libc.so.6" in proc.stderr

    kept = _train({**tiny_cfg, "output_dir": str(tmp_path / "kept")}, tmp_path, HONE_ALLOCATOR="system")
    assert kept.returncode == 0, kept.stderr[-2000:]
    assert "memory allocator: the C library's" in kept.stderr


def test_the_choice_follows_hone_allocator(monkeypatch, tmp_path):
    monkeypatch.setenv("HONE_ALLOCATOR", "system")
    assert allocator.find() is None
    monkeypatch.setenv("HONE_ALLOCATOR", str(tmp_path / "missing.so"))
    assert allocator.find() is None
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    monkeypatch.setenv("HONE_ALLOCATOR", str(lib))
    assert allocator.find() == (lib if sys.platform.startswith("linux") else None)


def test_the_api_never_restarts_the_calling_process(tiny_cfg, tmp_path, monkeypatch):
    from hone.cli import main

    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("the caller's process was replaced"))
    assert main(["train", "--model", tiny_cfg["model"], "--dataset", tiny_cfg["dataset"][0],
                          "--output_dir", str(tmp_path / "o"), "--max_steps", "1", "--lora_target", "ALL",
                          "--report_to", "none", "--plot_loss", "false", "--model_name", "Sparrow",
                          "--model_author", "Whetstone Labs"]) == 0
