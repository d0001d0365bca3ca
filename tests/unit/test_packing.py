"""Packing several rows into one sequence gives the same loss as padding them (attention stays per row)."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from hone.data.collate import pack_batch, pad_batch
from hone.data.encode import IGNORE_INDEX, Encoded
from hone.training.loss import CausalLMLoss


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_padded_loss(tiny_model_dir, attn):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn).eval()
    loss = CausalLMLoss(model)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in (7, 12, 5):
        ids = torch.randint(3, 1000, (n,), generator=g).tolist()
        labels = [IGNORE_INDEX] * 2 + ids[2:]
        rows.append(Encoded(ids, labels))
    with torch.no_grad():
        padded, n_pad = loss(**pad_batch(rows, pad_id=2))
        packed, n_pack = loss(**pack_batch(rows))
    assert n_pad == n_pack
    assert torch.allclose(padded, packed, atol=1e-4), (float(padded), float(packed))


def test_training_with_packing_matches_padding(tiny_cfg, tmp_path):
    import hone

    keys = {**tiny_cfg, "max_steps": 2, "save_strategy": "no", "lora_dropout": 0.0}
    padded = hone.train({**keys, "output_dir": str(tmp_path / "pad"), "packing": False})
    packed = hone.train({**keys, "output_dir": str(tmp_path / "pack"), "packing": True,
                         "max_forward_tokens": 100_000})
    split = hone.train({**keys, "output_dir": str(tmp_path / "split"), "packing": True, "max_forward_tokens": 24})
    assert packed.train_losses == pytest.approx(padded.train_losses, abs=1e-4)
    assert split.train_losses == pytest.approx(padded.train_losses, abs=1e-4)
