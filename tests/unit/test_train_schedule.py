"""Data order and learning-rate schedule: pure functions of the config, checked without a model."""
from __future__ import annotations

import pytest
import torch

from hone.config import load_config
from hone.training.schedule import BatchPlan
from hone.training.setup import build_optimizer, build_scheduler


def test_every_row_once_per_epoch_and_processes_split_the_global_batch():
    one = BatchPlan(17, batch_size=1, world=1, accum=4, seed=3, max_steps=-1, epochs=2)
    two = BatchPlan(17, batch_size=1, world=2, accum=2, seed=3, max_steps=-1, epochs=2)
    assert one.steps_per_epoch == two.steps_per_epoch == 5 and one.total_steps == 10
    for epoch in range(2):
        seen = [i for s in range(epoch * 5, epoch * 5 + 5) for i in one.step_rows(s)]
        assert sorted(seen) == list(range(17))
    assert one.order(0) != one.order(1)  # reshuffled each epoch
    for step in range(10):
        mine = [sorted(i for mb in two.micro_batches(step, r) for i in mb) for r in (0, 1)]
        assert not set(mine[0]) & set(mine[1])  # each process its own shard
        assert sorted(mine[0] + mine[1]) == sorted(one.step_rows(step))
        # every process runs exactly `accum` micro-batches, even on the short last step
        assert len(two.micro_batches(step, 0)) == len(two.micro_batches(step, 1)) == 2
    assert two.micro_batches(4, 1) == [[], []]  # the 17th row alone: process 1 runs padding only


def test_max_steps_overrides_epochs():
    assert BatchPlan(10, 2, 1, 1, 0, max_steps=7, epochs=3).total_steps == 7
    assert BatchPlan(10, 2, 1, 1, 0, max_steps=-1, epochs=0.5).total_steps == 3


def _lrs(**keys):
    cfg = load_config({"learning_rate": 1.0, **keys})
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = build_scheduler(opt, cfg, 10)
    out = []
    for _ in range(10):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedulers_and_warmup():
    cos = _lrs(lr_scheduler_type="cosine", warmup_steps=2)
    assert cos[0] < cos[1] < cos[2] == pytest.approx(1.0) and cos[-1] < 0.1
    lin = _lrs(lr_scheduler_type="linear", warmup_ratio=0.0)
    assert lin == pytest.approx([1 - i / 10 for i in range(10)])
    assert _lrs(lr_scheduler_type="constant", warmup_steps=3) == [1.0] * 10
    const_w = _lrs(lr_scheduler_type="constant_with_warmup", warmup_steps=3)
    assert const_w[:3] == pytest.approx([0.25, 0.5, 0.75]) and const_w[3:] == [1.0] * 7
    floor = _lrs(lr_scheduler_type="cosine_with_min_lr", warmup_ratio=0.0, min_lr_ratio=0.3)
    assert min(floor) >= 0.3 and floor[0] == 1.0
    assert _lrs(warmup_ratio=0.3)[:3] == pytest.approx([0.25, 0.5, 0.75])  # 30% of 10 steps


@pytest.mark.parametrize("name, cls", [("adamw_torch", torch.optim.AdamW), ("adam", torch.optim.Adam),
                                       ("sgd", torch.optim.SGD), ("adafactor", torch.optim.Adafactor)])
def test_optimizers_by_name_and_weight_decay_groups(name, cls):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, load_config({"optim": name, "weight_decay": 0.1, "tuning": "full"}))
    assert isinstance(opt, cls)
    decays = sorted((g["weight_decay"], len(g["params"])) for g in opt.param_groups)
    assert decays == [(0.0, 3), (0.1, 1)]  # only the weight matrix decays; biases and norms do not
    assert opt.param_groups[0]["lr"] == 2e-5  # full tuning's default learning rate


def test_learning_rate_defaults_per_method():
    from hone.config.derive import learning_rate

    assert learning_rate(load_config({"tuning": "lora"})) == 1e-4
    assert learning_rate(load_config({"tuning": "qlora"})) == 1e-4
    assert learning_rate(load_config({"tuning": "full"})) == 2e-5
    assert learning_rate(load_config({"tuning": "freeze"})) == 2e-5
    assert learning_rate(load_config({"tuning": "full", "lr": 3e-4})) == 3e-4


def test_eight_bit_optimizer_needs_a_gpu_says_so():
    from hone.errors import ConfigError

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(ConfigError, match="needs a CUDA GPU.*adamw_torch"):
        build_optimizer(torch.nn.Linear(2, 2), load_config({"optim": "adamw_8bit"}))
