"""The SFT objective: the batches, token counts and loss module the training loop asks for."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from hone.data.encode import IGNORE_INDEX, Encoded
from hone.training.objective import SFT


def _rows():
    return [Encoded(list(range(5, 15)), [IGNORE_INDEX] * 4 + list(range(9, 15))), Encoded([7, 8, 9], [7, 8, 9])]


def test_packing_applies_to_training_batches_only():
    sft = SFT(pad_id=2, packing=True, filler=_rows()[0])
    train, val = sft.batch(_rows()), sft.batch(_rows(), train=False)
    assert train["input_ids"].shape == (1, 13) and "position_ids" in train
    assert val["input_ids"].shape == (2, 10) and "attention_mask" in val
    assert sft.count(train) == 6 + 2 == sft.count(val)  # packing masks each row's first label, as padding does


def test_a_process_without_rows_gets_a_zero_loss_that_reaches_every_weight(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sft = SFT(pad_id=2, packing=False, filler=_rows()[0])
    batch = sft.batch([])
    assert sft.count(batch) == 0
    total, n = sft.loss_module(model)(**batch)
    total.backward()
    assert float(total.detach()) == 0.0 and n == 0
    assert all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in model.parameters())
