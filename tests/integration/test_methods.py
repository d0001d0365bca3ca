"""Every method trains through the same loop on CPU, and the loop's knobs do what they say."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

import hone
from hone.errors import TrainingError


def _records(run_dir, kind="train"):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(x)["kind"] == kind]


@pytest.mark.parametrize("keys, saved", [
    ({"tuning": "lora", "use_dora": True, "use_rslora": True}, "adapter_model.safetensors"),
    ({"tuning": "full", "gradient_checkpointing": True}, "model.safetensors"),
    ({"tuning": "freeze", "freeze_trainable_layers": 1, "neftune_alpha": 5.0}, "model.safetensors"),
])
def test_each_method_trains(tiny_cfg, tiny_model_dir, keys, saved):
    res = hone.train({**tiny_cfg, **keys, "max_steps": 2, "save_steps": 2})
    losses = [r["loss"] for r in _records(res.run_dir)]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert (res.run_dir / saved).is_file() and (res.run_dir / "checkpoint-2" / saved).is_file()
    if keys["tuning"] == "freeze":  # layer 0 is bit-identical to the base model, layer 1 moved
        before = load_file(tiny_model_dir / "model.safetensors")
        after = load_file(res.run_dir / "model.safetensors")
        w = "model.layers.{}.self_attn.q_proj.weight"
        assert torch.equal(before[w.format(0)], after[w.format(0)])
        assert not torch.equal(before[w.format(1)], after[w.format(1)])


def test_accumulation_is_exact(tiny_cfg, identity_file, tmp_path):
    """batch 4 x accumulation 1 == batch 1 x accumulation 4 == batch 2 x accumulation 2 (variable lengths)."""
    base = {**tiny_cfg, "dataset": [f"{identity_file}#12"], "max_steps": 3, "lora_dropout": 0.0, "save_steps": 100}
    runs = [hone.train({**base, "batch_size": b, "gradient_accumulation_steps": g, "output_dir": str(tmp_path / f"{b}")})
            for b, g in ((4, 1), (1, 4), (2, 2))]
    ref = runs[0]
    ref_w = load_file(ref.run_dir / "adapter_model.safetensors")
    for r in runs[1:]:
        assert r.train_losses == pytest.approx(ref.train_losses, abs=1e-5)
        w = load_file(r.run_dir / "adapter_model.safetensors")
        assert max(float((w[k] - ref_w[k]).abs().max()) for k in w) < 1e-5


def test_seed_reproduces_and_changes_the_run(tiny_cfg, tmp_path):
    a = hone.train({**tiny_cfg, "max_steps": 2, "output_dir": str(tmp_path / "a")})
    b = hone.train({**tiny_cfg, "max_steps": 2, "output_dir": str(tmp_path / "b")})
    c = hone.train({**tiny_cfg, "max_steps": 2, "seed": 7, "output_dir": str(tmp_path / "c")})
    assert a.train_losses == b.train_losses
    assert a.train_losses != c.train_losses


def test_checkpoints_eval_logging_and_outputs(tiny_cfg, identity_file, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hone")
    cfg = {**tiny_cfg, "val_dataset": [f"{identity_file}#4"], "max_steps": 6, "eval_steps": 2, "save_steps": None,
           "save_total_limit": 2, "logging_steps": 3, "plot_loss": True, "report_to": ["tensorboard"],
           "add_output_dir_suffix": True, "max_grad_norm": 0.5}
    res = hone.train(cfg)
    assert res.run_dir.parent.name == "tiny-llama0" and res.run_dir.name.startswith("v0-")
    evals = _records(res.run_dir, "eval")
    assert [e["step"] for e in evals] == [2, 4, 6] and all(e["eval_ppl"] > 1 for e in evals)
    ckpts = sorted(p.name for p in res.run_dir.glob("checkpoint-*"))  # save_steps follows eval_steps
    best_step = min(evals, key=lambda e: e["eval_loss"])["step"]
    assert f"checkpoint-{best_step}" in ckpts and "checkpoint-6" in ckpts and len(ckpts) <= 2
    assert res.best_checkpoint == res.run_dir / f"checkpoint-{best_step}"
    assert json.loads((res.run_dir / "hone_run.json").read_text())["best_checkpoint"] == str(res.best_checkpoint)
    assert (res.run_dir / "loss.png").stat().st_size > 1000
    assert list((res.run_dir / "runs").glob("events.out.tfevents.*"))
    train = _records(res.run_dir)
    assert all(r["grad_norm"] > 0 and r["tokens_per_s"] > 0 and "memory_gb" in r for r in train)
    lines = [m for m in caplog.messages if m.startswith("[")]
    assert len(lines) == 2 and "grad norm" in lines[0] and "ETA" in lines[0]  # logging_steps 3 of 6 steps
    again = hone.train({**cfg, "max_steps": 1, "val_dataset": []})
    assert again.run_dir.name.startswith("v1-")  # a second run never overwrites the first


def test_save_total_limit_minus_one_only_save_model_and_early_stopping(tiny_cfg, identity_file, monkeypatch):
    from hone.training import loop

    worse = iter([1.0, 1.5, 2.0, 2.5, 3.0, 3.5])  # eval loss that only gets worse after the first evaluation
    real_evaluate = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: next(worse))
    res = hone.train({**tiny_cfg, "max_steps": 6, "save_steps": 2, "save_total_limit": -1, "only_save_model": True,
                      "val_dataset": [f"{identity_file}#2"], "eval_steps": 1, "early_stopping_patience": 2})
    ckpts = sorted(res.run_dir.glob("checkpoint-*"))
    assert ckpts and all(not (c / "optimizer.pt").exists() for c in ckpts)
    assert res.global_step == 3  # best at step 1, then two worse evaluations: patience 2 stops at step 3
    assert res.best_checkpoint is not None
    monkeypatch.setattr(loop, "evaluate", real_evaluate)
    all_kept = hone.train({**tiny_cfg, "max_steps": 6, "save_steps": 2, "save_total_limit": -1,
                           "output_dir": tiny_cfg["output_dir"] + "2"})
    assert sorted(p.name for p in all_kept.run_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4",
                                                                             "checkpoint-6"]


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_cfg):
    with pytest.raises(TrainingError, match=r"not finite at step (\d+)"):
        hone.train({**tiny_cfg, "max_steps": 12, "save_steps": 1, "learning_rate": 1e9, "max_grad_norm": 0,
                    "optim": "sgd", "warmup_ratio": 0, "lr_scheduler_type": "constant"})
    run = tiny_cfg["output_dir"]
    from hone.training import checkpoint as ckpt
    from pathlib import Path

    good = ckpt.list_checkpoints(Path(run))
    assert good, "no checkpoint was written before the loss went bad"
    last = load_file(good[-1].path / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in last.values())
    recs = _records(Path(run))
    assert recs[-1].get("skipped") and not torch.isfinite(torch.tensor(recs[-1]["loss"]))
    assert max(c.step for c in good) < recs[-1]["step"]


@pytest.mark.gpu
def test_qlora_trains_on_a_gpu(tiny_cfg):
    res = hone.train({**tiny_cfg, "tuning": "qlora", "max_steps": 2})
    assert res.global_step == 2 and (res.run_dir / "adapter_model.safetensors").is_file()
