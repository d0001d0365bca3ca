"""Resume refuses what it cannot do exactly, and says why: changed settings, missing files, finished runs,
bogus paths, pickles; and a LoRA resume really starts from the checkpoint's adapter."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file

import hone
from hone.errors import CheckpointError, TrainingError


@pytest.fixture
def done(tiny_cfg):
    """A 4-step run with checkpoints at 2 and 4."""
    return hone.train({**tiny_cfg, "save_total_limit": -1})


def test_changed_settings_are_listed(tiny_cfg, done):
    ck = str(done.run_dir / "checkpoint-2")
    with pytest.raises(CheckpointError, match=r"(?s)batch_size: 2 -> 1.*gradient_accumulation_steps: 2 -> 4"):
        hone.train({**tiny_cfg, "resume_from_checkpoint": ck, "batch_size": 1, "gradient_accumulation_steps": 4})
    with pytest.raises(CheckpointError, match=r"(?s)training data.*max_steps: 4 -> 6"):
        hone.train({**tiny_cfg, "resume_from_checkpoint": ck, "max_steps": 6,
                    "dataset": [tiny_cfg["dataset"][0].replace("#16", "#15")]})
    res = hone.train({**tiny_cfg, "resume_from_checkpoint": ck, "max_steps": 6, "resume_ignore_changes": True})
    assert res.global_step == 6


def test_finished_run_says_so(tiny_cfg, done):
    with pytest.raises(CheckpointError, match="finished run.*nothing left to train"):
        hone.train({**tiny_cfg, "resume_from_checkpoint": "auto"})


def test_missing_optimizer_named_unless_weights_only(tiny_cfg, done, caplog):
    ck = done.run_dir / "checkpoint-2"
    (ck / "optimizer.pt").unlink()
    with pytest.raises(CheckpointError, match="missing optimizer.pt.*resume_weights_only"):
        hone.train({**tiny_cfg, "resume_from_checkpoint": str(ck)})
    res = hone.train({**tiny_cfg, "resume_from_checkpoint": str(ck), "resume_weights_only": True})
    assert res.global_step == 4 and "learning-rate schedule (warmup runs again)" in caplog.text


@pytest.mark.parametrize("name", ["optimizer.pt", "rng_state.pt"])
def test_pickle_in_resume_state_is_refused_on_resume(tiny_cfg, done, tmp_path, name):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    from hone.integrity import file_digest

    ck = done.run_dir / "checkpoint-2"
    torch.save({"state": Payload()}, ck / name)
    # the manifest is rewritten to match, as someone planting the file would: the loader itself must refuse it
    manifest = json.loads((ck / "COMPLETE").read_text())
    manifest["files"][name] = {"size": (ck / name).stat().st_size, "sha256": file_digest(ck / name)}
    (ck / "COMPLETE").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=f"{name}: refused to load"):
        hone.train({**tiny_cfg, "resume_from_checkpoint": str(ck)})
    assert not marker.exists()


def test_lora_resume_starts_from_the_checkpoint(tiny_cfg, done):
    ck = done.run_dir / "checkpoint-2"
    saved = load_file(ck / "adapter_model.safetensors")
    res = hone.train({**tiny_cfg, "resume_from_checkpoint": str(ck), "resume_weights_only": True, "max_steps": 1,
                      "save_steps": 1, "learning_rate": 1e-12, "output_dir": tiny_cfg["output_dir"] + "w"})
    # weights-only resume begins a new schedule from the checkpoint's adapter (the run dir is the checkpoint's)
    after = load_file(res.run_dir / "adapter_model.safetensors")
    assert all(torch.allclose(after[k], saved[k], atol=1e-6) for k in saved)
    assert res.train_losses[0] < done.train_losses[0]  # not the untrained model's loss


def test_bogus_paths_and_auto_on_empty(tiny_cfg, tmp_path):
    with pytest.raises(CheckpointError, match="no valid checkpoint at"):
        hone.train({**tiny_cfg, "resume_from_checkpoint": str(tmp_path / "nowhere")})
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        hone.train({**tiny_cfg, "resume_from_checkpoint": "true"})
    res = hone.train({**tiny_cfg, "resume_from_checkpoint": "auto", "max_steps": 1})
    assert res.global_step == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_dir(tiny_cfg, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(TrainingError, match="cannot write to the output directory"):
        hone.train({**tiny_cfg, "output_dir": str(ro / "x")})


def test_output_dir_that_cannot_be_created(tiny_cfg, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(TrainingError, match="cannot write to the output directory"):
        hone.train({**tiny_cfg, "output_dir": str(blocker / "out")})


def test_fresh_run_does_not_mix_with_an_earlier_one(tiny_cfg):
    first = hone.train({**tiny_cfg, "max_steps": 2, "save_steps": 2})
    with pytest.raises(TrainingError, match="already holds a run.*resume_from_checkpoint: auto.*overwrite_output_dir"):
        hone.train({**tiny_cfg, "max_steps": 2})
    assert (first.run_dir / "checkpoint-2" / "COMPLETE").is_file()  # the refusal touched nothing
    again = hone.train({**tiny_cfg, "max_steps": 3, "save_steps": 3, "overwrite_output_dir": True})
    assert sorted(p.name for p in again.run_dir.glob("checkpoint-*")) == ["checkpoint-3"]
    recs = [json.loads(x) for x in (again.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2, 3]  # no record of the replaced run
    assert [r["kind"] for r in recs] == ["estimate", "train", "train", "train", "summary"]


def test_lora_resume_restores_the_adapter_bit_for_bit_and_the_trainable_flags(tiny_cfg, done, tiny_model_dir):
    """Resume loads through the same calls as the loop: the adapter equals the checkpoint's exactly, base weights
    stay frozen, and the first resumed loss is the uninterrupted run's (not the untrained model's)."""
    from peft import get_peft_model_state_dict

    from hone.config.derive import quant_bits
    from hone.models.adapters import make_trainable
    from hone.models.load import choose_precision, load_model
    from hone.training.state import load_weights

    ck = done.run_dir / "checkpoint-2"
    cfg = hone.load_config({**tiny_cfg, "resume_from_checkpoint": str(ck)})
    model = make_trainable(load_model(tiny_model_dir, cfg.model, choose_precision("fp32"), quant_bits=quant_bits(cfg)),
                           cfg)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    load_weights(model, ck)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert all(("lora_" in n) == flag for n, flag in before.items())
    saved, loaded = load_file(ck / "adapter_model.safetensors"), get_peft_model_state_dict(model)
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k].cpu()) for k in saved)

    resumed = hone.train({**tiny_cfg, "resume_from_checkpoint": str(ck), "save_total_limit": -1})
    after = [json.loads(x) for x in (done.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in after if r["kind"] == "train"}
    # the resumed run rewrote steps 3-4 of the same run directory: they equal the uninterrupted run's
    assert [losses[3], losses[4]] == pytest.approx(done.train_losses[2:], abs=1e-6)
    assert resumed.train_losses == pytest.approx(done.train_losses, abs=1e-6)
