"""Checkpoints: atomic (a kill mid-save never leaves one that looks complete), found again, rotated, and
loaded without unpickling anything that could run code."""
from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from hone.errors import CheckpointError
from hone.training import checkpoint as ckpt


class _Opt:
    def state_dict(self):
        return {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}


class _Sched:
    def state_dict(self):
        return {"last_epoch": 3}


def _save(run_dir, step, weights=lambda d: (d / "adapter_model.safetensors").write_bytes(b"w" * 10), **kw):
    return ckpt.save(run_dir, step, save_weights=weights, optimizer=_Opt(), scheduler=_Sched(),
                     state={"global_step": step}, rank_rng={0: ckpt.rng_state()}, weights_only=kw.get("wo", False))


def test_save_is_complete_and_loads_back(tmp_path):
    path = _save(tmp_path, 2)
    assert path.name == "checkpoint-2" and ckpt.is_complete(path)
    assert {p.name for p in path.iterdir()} >= {ckpt.OPTIMIZER, ckpt.SCHEDULER, ckpt.RNG, ckpt.STATE, ckpt.COMPLETE}
    assert ckpt.load_state(ckpt.find(str(path), path), weights_only=False)["global_step"] == 2
    assert torch.equal(ckpt.load_tensors(path / ckpt.OPTIMIZER)["state"][0]["exp_avg"], torch.ones(3))
    assert not list(tmp_path.glob(".tmp-*"))


def test_killed_mid_save_leaves_nothing_that_looks_complete(tmp_path):
    good = _save(tmp_path, 2)
    # what a kill after the weights and before the optimizer leaves behind
    staging = tmp_path / ".tmp-checkpoint-4"
    staging.mkdir()
    (staging / "adapter_model.safetensors").write_bytes(b"partial")
    # and a folder with the final name but a manifest whose files do not match (e.g. copied half-way)
    fake = tmp_path / "checkpoint-6"
    fake.mkdir()
    (fake / ckpt.COMPLETE).write_text(json.dumps({"step": 6, "files": {"adapter_model.safetensors": 99}}))
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [2]
    assert ckpt.find("auto", tmp_path).path == good
    with pytest.raises(CheckpointError, match="no valid checkpoint at .*checkpoint-6"):
        ckpt.find(str(fake), fake)
    ckpt.sweep_staging(tmp_path)
    assert not staging.exists() and good.exists()


def test_full_disk_is_a_clear_error_and_earlier_checkpoints_stay(tmp_path):
    good = _save(tmp_path, 2)

    def full(d):
        (d / "adapter_model.safetensors").write_bytes(b"x")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(CheckpointError, match="could not write checkpoint .*checkpoint-4.*No space left.*untouched"):
        _save(tmp_path, 4, weights=full)
    assert ckpt.is_complete(good) and not (tmp_path / "checkpoint-4").exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_rotation_keeps_best_and_last_and_minus_one_keeps_all(tmp_path):
    for s in (2, 4, 6, 8):
        _save(tmp_path, s)
    ckpt.rotate(tmp_path, -1, None)
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [2, 4, 6, 8]
    ckpt.rotate(tmp_path, 2, tmp_path / "checkpoint-2")
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [2, 8]
    ckpt.rotate(tmp_path, 1, None)
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [8]


def test_missing_files_are_named(tmp_path):
    path = _save(tmp_path, 2)
    for name in (ckpt.OPTIMIZER, ckpt.SCHEDULER, ckpt.RNG):
        moved = path / name
        data = moved.read_bytes()
        moved.unlink()
        with pytest.raises(CheckpointError, match=f"missing {name}.*resume_weights_only"):
            ckpt.load_state(ckpt.Checkpoint(path, 2), weights_only=False)
        ckpt.load_state(ckpt.Checkpoint(path, 2), weights_only=True)  # weights-only resume does not need it
        moved.write_bytes(data)
    wo = _save(tmp_path, 4, wo=True)
    assert not (wo / ckpt.OPTIMIZER).exists()
    with pytest.raises(CheckpointError, match="weights only"):
        ckpt.load_state(ckpt.Checkpoint(wo, 4), weights_only=False)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "optimizer.pt"
    torch.save({"state": _Payload(str(marker))}, bad)
    with pytest.raises(CheckpointError, match="refused to load"):
        ckpt.load_tensors(bad)
    assert not marker.exists()


def test_bogus_path(tmp_path):
    with pytest.raises(CheckpointError, match="no valid checkpoint at"):
        ckpt.find(str(tmp_path / "nope"), tmp_path / "nope")
    assert ckpt.find("auto", tmp_path) is None


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no `except Exception` catches it."""


@pytest.mark.parametrize("killed_at", [0, 1])
def test_a_kill_while_replacing_a_checkpoint_loses_nothing(tmp_path, monkeypatch, killed_at):
    _save(tmp_path, 4)
    real, calls = os.rename, []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) - 1 == killed_at:
            raise _Killed
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(_Killed):
        _save(tmp_path, 4, weights=lambda d: (d / "adapter_model.safetensors").write_bytes(b"n" * 10))
    monkeypatch.setattr(os, "rename", real)
    ckpt.sweep_staging(tmp_path)  # what the next run does first
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [4]
    assert (tmp_path / "checkpoint-4" / "adapter_model.safetensors").read_bytes() in (b"w" * 10, b"n" * 10)
    assert ckpt.problems(tmp_path / "checkpoint-4", digests=True) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_sweep_recovers_a_complete_staged_checkpoint_and_drops_incomplete_ones(tmp_path):
    staged = _save(tmp_path, 4).rename(tmp_path / ".tmp-checkpoint-4")  # killed before its rename
    aside = _save(tmp_path, 6).rename(tmp_path / ".old-checkpoint-6")
    cut = tmp_path / ".tmp-checkpoint-8"
    cut.mkdir()
    (cut / "adapter_model.safetensors").write_bytes(b"partial")
    ckpt.sweep_staging(tmp_path)
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [4, 6]
    assert not staged.exists() and not aside.exists() and not cut.exists()


def test_a_damaged_file_of_the_same_size_is_named_on_resume(tmp_path):
    path = _save(tmp_path, 2)
    weights = path / "adapter_model.safetensors"
    weights.write_bytes(b"w" * 9 + b"x")  # one flipped byte: the size still matches
    assert ckpt.is_complete(path)  # listing stays cheap (sizes)
    with pytest.raises(CheckpointError, match=r"checkpoint-2 is damaged: adapter_model.safetensors is damaged"):
        ckpt.load_state(ckpt.Checkpoint(path, 2), weights_only=False)
    with pytest.raises(CheckpointError, match="adapter_model.safetensors is damaged"):
        ckpt.load_state(ckpt.Checkpoint(path, 2), weights_only=True)
    manifest = json.loads((path / ckpt.COMPLETE).read_text())
    assert len(manifest["files"]["adapter_model.safetensors"]["sha256"]) == 64


def test_checkpoints_with_a_size_only_manifest_still_load(tmp_path):
    path = _save(tmp_path, 2)
    manifest = json.loads((path / ckpt.COMPLETE).read_text())
    manifest["files"] = {f: r["size"] for f, r in manifest["files"].items()}
    (path / ckpt.COMPLETE).write_text(json.dumps(manifest))
    assert ckpt.load_state(ckpt.find("auto", tmp_path), weights_only=False)["global_step"] == 2
