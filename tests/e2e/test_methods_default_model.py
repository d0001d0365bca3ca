"""Every tuning method trains the real default model on a CPU (a few steps each; QLoRA needs CUDA)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hone
from hone.errors import ModelError

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _keys(tmp_path, **extra):
    return {"model": "smollm2-135m", "dataset": [f"{REPO / 'examples/data/identity.json'}#8"], "max_steps": 2,
            "batch_size": 2, "gradient_accumulation_steps": 2, "output_dir": str(tmp_path), "report_to": ["none"],
            "plot_loss": False, "add_output_dir_suffix": False, "max_length": 256, "save_steps": 2,
            "model_name": ["Sparrow"], "model_author": ["Whetstone Labs"], **extra}


@pytest.mark.parametrize("extra, weights", [
    ({"tuning": "lora", "use_dora": True, "lora_target": ["ALL"]}, "adapter_model.safetensors"),
    ({"tuning": "full", "gradient_checkpointing": True}, "model.safetensors"),
    ({"tuning": "freeze", "freeze_trainable_layers": 2}, "model.safetensors"),
])
def test_method_trains_default_model(tmp_path, extra, weights):
    res = hone.train(_keys(tmp_path, **extra))
    assert res.global_step == 2
    assert all(torch.isfinite(torch.tensor(x)) for x in res.train_losses)
    assert (res.run_dir / weights).is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_qlora_on_cpu_says_what_to_use_instead(tmp_path):
    with pytest.raises(ModelError, match="QLoRA.*needs a CUDA GPU.*use tuning: lora"):
        hone.train(_keys(tmp_path, tuning="qlora"))
