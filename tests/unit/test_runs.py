"""Run directories: one module creates, finds and reads them."""
from __future__ import annotations

import json

import pytest

from hone import runs


def _run(tmp_path, **extra):
    d = tmp_path / "run"
    d.mkdir()
    runs.write_run_info(d, {"model": "smollm2-135m", "model_dir": "/m", "template": "chatml", "system": "Be brief.",
                            "method": "lora", "global_step": 8, **extra})
    return d


def test_read_run_from_run_dir_and_checkpoint(tmp_path):
    d = _run(tmp_path, data=[{"digest": "ab"}])
    (d / "checkpoint-4").mkdir()
    for ref in (d, d / "checkpoint-4"):
        info = runs.read_run(ref)
        assert (info.run_dir, info.model, info.template, info.system, info.global_step) == \
            (d, "smollm2-135m", "chatml", "Be brief.", 8)
        assert info.extra == {"data": [{"digest": "ab"}]}


def test_not_a_run_is_one_sentence(tmp_path):
    with pytest.raises(runs.RunError, match="is not a hone run directory"):
        runs.read_run(tmp_path)
    (tmp_path / runs.RUN_INFO).write_text("{not json")
    with pytest.raises(runs.RunError, match="cannot be read"):
        runs.read_run(tmp_path)


def test_weights_dir_prefers_final_then_checkpoints(tmp_path):
    d = _run(tmp_path)
    with pytest.raises(runs.RunError, match="holds no weights"):
        runs.read_run(d).weights_dir()
    ck = d / "checkpoint-4"
    ck.mkdir()
    runs.write_run_info(d, {"model": "m", "last_checkpoint": str(ck), "best_checkpoint": str(ck)})
    assert runs.read_run(d).weights_dir() == ck
    (d / "adapter_model.safetensors").write_bytes(b"x")
    assert runs.read_run(d).weights_dir() == d
    assert runs.read_run(d).weights_dir("best") == ck


def test_write_run_info_is_atomic_and_leaves_no_temp(tmp_path):
    d = _run(tmp_path)
    assert json.loads((d / runs.RUN_INFO).read_text())["model"] == "smollm2-135m"
    assert [p.name for p in d.iterdir()] == [runs.RUN_INFO]


def test_new_and_latest_run_dirs(tmp_path):
    out = tmp_path / "out"
    assert runs.latest_run_dir(out, "org/My Model", True) is None
    a = runs.new_run_dir(out, "org/My Model", True)
    assert a.parent == out / "My-Model" and a.name.startswith("v0-")
    a.mkdir(parents=True)
    b = runs.new_run_dir(out, "org/My Model", True)
    assert b.name.startswith("v1-")
    b.mkdir()
    assert runs.latest_run_dir(out, "org/My Model", True) == b
    assert runs.new_run_dir(out, "m", False) == out


def _final(d):
    runs.write_run_info(d, {"model": "m", "layout": runs.LAYOUT})
    runs.write_final(d, lambda f: [(f / "adapter_model.safetensors").write_bytes(b"a" * 32),
                                   (f / "adapter_config.json").write_text("{}")])


def test_final_weights_carry_a_manifest_and_damage_is_named(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    _final(d)
    assert runs.read_run(d).weights_dir() == d and not (d / ".tmp-final").exists()
    (d / "adapter_model.safetensors").write_bytes(b"a" * 31 + b"b")
    with pytest.raises(runs.RunError, match=r"run is damaged: adapter_model.safetensors is damaged"):
        runs.read_run(d).weights_dir()


def test_final_weights_cut_by_a_kill_read_as_unfinished(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    ck = d / "checkpoint-4"
    ck.mkdir()
    (ck / "adapter_model.safetensors").write_bytes(b"c")
    runs.write_run_info(d, {"model": "m", "layout": runs.LAYOUT, "last_checkpoint": str(ck)})
    (d / "adapter_model.safetensors").write_bytes(b"half")  # moved in, but the manifest never followed
    assert not runs.read_run(d).finished
    assert runs.read_run(d).weights_dir() == ck
    with pytest.raises(runs.RunError, match="no complete final weights"):
        runs.verify_weights(d)


def test_metrics_rewritten_on_resume_replace_the_file_rather_than_truncate_it(tmp_path):
    from hone.training.logging import MetricsLog

    path = tmp_path / runs.METRICS_FILE
    text = "".join(json.dumps({"kind": "train", "step": s}) + "\n" for s in range(1, 7))
    path.write_text(text)
    with path.open() as reader:  # a reader (or a kill) mid-rewrite sees the old file whole, never a cut one
        MetricsLog(tmp_path, (), None, {}, resume_step=4)
        assert reader.read() == text
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3, 4]


def test_final_weights_that_do_not_fit_on_disk_are_a_clear_error(tmp_path):
    import errno
    import os

    from hone.errors import TrainingError

    d = tmp_path / "run"
    d.mkdir()

    def full(folder):
        (folder / "adapter_model.safetensors").write_bytes(b"x")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(TrainingError, match=r"could not write the final weights .*No space left"):
        runs.write_final(d, full)
    assert list(d.iterdir()) == []
