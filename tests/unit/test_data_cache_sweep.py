"""Unfinished tokenization-cache folders left by a killed run are swept; a live writer's never are."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hone.data import cache
from hone.data.encode import Encoded
from hone.data.mixing import DataReport

SRC = Path(__file__).resolve().parents[2] / "src"

# A writer that stops inside save(), after its temporary folder exists: its row blocks on first read.
WRITER = """
import time
from hone.data import cache
from hone.data.mixing import DataReport

class Slow:
    @property
    def input_ids(self):
        time.sleep(600)

cache.save("k" * 32, [Slow()], [], DataReport(), DataReport(), {})
"""


def temp_folders() -> list[Path]:
    return sorted(cache.cache_dir().glob(".*-*"))


def wait_for_owner(timeout: float = 60.0) -> Path:
    end = time.time() + timeout
    while time.time() < end:
        for tmp in temp_folders():
            if (tmp / cache.OWNER).is_file():
                return tmp
        time.sleep(0.1)
    raise AssertionError("the writer never created its temporary folder")


@pytest.mark.skipif(os.name == "nt", reason="process liveness is told by signals")
def test_killed_writer_folder_is_swept_live_one_kept():
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, "-c", WRITER], env=env)
    try:
        tmp = wait_for_owner()
        assert cache.sweep_stale(cache.cache_dir()) == [] and tmp.is_dir()  # its writer is still running
        row = Encoded([1, 2, 3], [-100, 2, 3])
        cache.save("a" * 32, [row], [], DataReport(1), DataReport(), {})
        assert tmp.is_dir()  # another writer's save leaves it alone too
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    cache.save("b" * 32, [row], [], DataReport(1), DataReport(), {})
    assert not tmp.exists() and temp_folders() == []
    assert cache.load("b" * 32)[0] == [row] and cache.load("a" * 32)[0] == [row]


def test_folder_without_owner_goes_by_age(tmp_path):
    fresh, old = tmp_path / ".k1-abc", tmp_path / ".k2-def"
    for d in (fresh, old):
        d.mkdir()
        (d / "train.npz").write_bytes(b"partial")
    then = time.time() - cache.STALE_AFTER_S - 60
    for p in (old / "train.npz", old):
        os.utime(p, (then, then))
    (tmp_path / "0123").mkdir()  # a finished entry is never a candidate
    assert cache.sweep_stale(tmp_path) == [old]
    assert fresh.is_dir() and (tmp_path / "0123").is_dir()
