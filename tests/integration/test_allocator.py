"""`hone train` starts itself again with a better allocator preloaded, and says so in its first lines."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
import torch
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


_SUBNORMALS = "int((torch.full((1 << 22,), 1e-39) * 1.0 != 0).sum())"  # nonzero where a thread keeps subnormals


@pytest.mark.skipif(torch.cuda.is_available(), reason="set on CPU-only machines")
def test_train_flushes_subnormals_in_every_thread(tiny_cfg, tmp_path):
    """`hone train` sets flush-to-zero before torch's thread pool starts, so its worker threads flush too: a
    multi-threaded multiply of subnormals gives zeros everywhere after the run (in a fresh process without it,
    not). Called in-process, `train` flushes on its own thread and gives the caller's setting back."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**tiny_cfg, "max_steps": 1, "save_strategy": "no", "eval_strategy": "no"}))
    script = (f"import sys, torch\nfrom hone import cli\nsys.argv = ['hone', 'train', {str(path)!r}]\n"
              f"torch.set_num_threads(2)\nrc = cli.entry()\nprint('RESULT', rc, {_SUBNORMALS})\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HONE_ALLOCATOR": "system"})  # no restart: this process reports
    assert "RESULT 0 0" in run.stdout, run.stderr[-2000:]
    plain = subprocess.run([sys.executable, "-c", f"import torch\ntorch.set_num_threads(2)\nprint({_SUBNORMALS})"],
                           capture_output=True, text=True, timeout=120)
    assert plain.stdout.strip() == str(1 << 22)

    from hone.training.loop import flush_denormals

    tiny = torch.tensor([1e-39])
    with flush_denormals():
        assert float(tiny * 1.0) == 0.0
    assert float(tiny * 1.0) != 0.0
