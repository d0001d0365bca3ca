"""The loss module: the output layer runs only on labelled positions, and the full-logits path agrees."""
from __future__ import annotations

import pytest
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("weighted", [False, True])
def test_blockwise_cross_entropy_equals_torch_on_upcast_logits(monkeypatch, dtype, weighted):
    """The output layer's loss, computed a block of rows at a time, against F.cross_entropy of the whole
    upcast logits matrix (what transformers' loss does): sum and gradient, with blocks that do not divide the
    rows evenly."""
    import torch.nn.functional as F

    from hone.training import loss as loss_mod

    monkeypatch.setattr(loss_mod, "CE_BLOCK", 3 * 1000)  # 3 rows of a 1000-wide vocab per block
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(10, 1000, generator=g) * 4).to(dtype)
    target = torch.randint(0, 1000, (10,), generator=g)
    weight = torch.rand(10, generator=g) if weighted else None
    mine, ref = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    got = loss_mod._CrossEntropy.apply(mine, target, weight)
    terms = F.cross_entropy(ref.float(), target, reduction="none")
    want = (terms * weight).sum() if weighted else terms.sum()
    (got * 0.5).backward()
    (want * 0.5).backward()
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    assert mine.grad.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-3}
    torch.testing.assert_close(mine.grad.float(), ref.grad.float(), **tol)
