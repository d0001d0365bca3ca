"""RELIABILITY 24-25: files that could run code when loaded are refused (the payload never runs), and a run whose
recorded model directory now holds another model says so instead of loading it."""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from hone import runs
from hone.errors import ModelError


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_bin_weights_with_a_payload_are_refused(tiny_model_dir, tmp_path):
    import hone
    from hone.models.load import choose_precision, load_model

    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    weights = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({**weights, "extra": _Payload(str(marker))}, d / "pytorch_model.bin")
    cfg = hone.load_config({"model": str(d), "dataset": ["x.json"]})
    with pytest.raises(ModelError, match=r"refused to load its pickled weights .*could run code"):
        load_model(d, cfg.model, choose_precision("fp32"))
    assert not marker.exists()


def test_a_model_dir_that_now_holds_another_model_is_caught(tiny_model_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    run = tmp_path / "run"
    run.mkdir()
    runs.write_run_info(run, {"model": "tiny", "model_dir": str(base), "model_digest": runs.model_digest(base)})
    assert runs.read_run(run).base_model() == str(base)
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    (other / "config.json").write_text((other / "config.json").read_text().replace('"num_hidden_layers": 2',
                                                                                    '"num_hidden_layers": 3'))
    runs.write_run_info(run, {"model": "tiny", "model_dir": str(other), "model_digest": runs.model_digest(base)})
    with pytest.raises(runs.RunError, match=r"hone_run.json: model_dir .*other is not the model this run trained on"):
        runs.read_run(run).base_model()
    # a run recorded before digests were kept still loads its model directory
    runs.write_run_info(run, {"model": "tiny", "model_dir": str(other)})
    assert runs.read_run(run).base_model() == str(other)


def test_model_digest_follows_the_cache_manifest_when_there_is_one(tmp_path):
    """The model cache's manifest holds every file's sha256: digesting it sees a changed weight file cheaply."""
    from hone.integrity import write_manifest
    from hone.models.gguf import MANIFEST

    d = tmp_path / "m"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"a" * 2_000_000)
    write_manifest(d, MANIFEST)
    first = runs.model_digest(d)
    (d / "model.safetensors").write_bytes(b"b" * 2_000_000)  # same size
    write_manifest(d, MANIFEST)
    assert first.startswith("manifest:") and runs.model_digest(d) != first
