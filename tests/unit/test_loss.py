"""The loss module: the output layer runs only on labelled positions, and the full-logits path agrees."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from hone.data.collate import n_supervised, pad_batch
from hone.data.encode import IGNORE_INDEX, Encoded
from hone.training.loss import CausalLMLoss


def test_selected_head_equals_full_logits_and_masked_batch_is_zero(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    split, full = CausalLMLoss(model), CausalLMLoss(model)
    full._split = False  # the path taken by models without a separable output layer
    rows = [Encoded(list(range(5, 15)), [IGNORE_INDEX] * 4 + list(range(9, 15))), Encoded([7, 8, 9], [7, 8, 9])]
    batch = pad_batch(rows, pad_id=2)
    with torch.no_grad():
        a, n_a = split(**batch)
        b, n_b = full(**batch)
        masked = pad_batch([Encoded([5, 6, 7], [IGNORE_INDEX] * 3)], pad_id=2)
        zero, n_zero = split(**masked)
    assert n_a == n_b == n_supervised(batch) == 6 + 2  # labels shift left: a row's first label is never a target
    assert torch.allclose(a, b, atol=1e-4)
    assert float(zero) == 0.0 and n_zero == 0
