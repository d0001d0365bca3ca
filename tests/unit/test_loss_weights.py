"""Per-token loss weights: the loss sum is sum(w_t * ce_t) over labelled positions, the count is unchanged."""
from __future__ import annotations

import pytest
import torch
from families import tiny_model

from hone.data.collate import n_supervised, pad_batch
from hone.data.encode import IGNORE_INDEX, Encoded
from hone.training import loss as loss_mod
from hone.training.loss import CausalLMLoss


def _weighted_batch():
    """Row 0 holds two replies, the first weighted 0.5; row 1 holds one reply at weight 1."""
    g = torch.Generator().manual_seed(3)
    a = torch.randint(3, 49152, (16,), generator=g).tolist()
    b = torch.randint(3, 49152, (9,), generator=g).tolist()
    m = IGNORE_INDEX
    labels_a = [m] * 3 + a[3:7] + [m] * 4 + a[11:]  # reply 1: positions 3-6, reply 2: positions 11-15
    labels_b = [m] * 5 + b[5:]
    batch = pad_batch([Encoded(a, labels_a), Encoded(b, labels_b)], pad_id=2)
    weights = torch.ones(batch["labels"].shape)
    weights[0, 3:7] = 0.5
    weights[0, 0] = 7.0  # a weight on an unlabelled position counts for nothing
    return {**batch, "loss_weights": weights}


def _by_hand(model, batch):
    """sum_t w_t * -log p(label_t | tokens < t) from the model's own logits, plus its own auxiliary loss x n."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    logp = torch.log_softmax(out.logits.float(), dim=-1)
    total = torch.zeros(())
    labels, w = batch["labels"], batch["loss_weights"]
    for r in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            if labels[r, t] != IGNORE_INDEX:
                total = total - w[r, t] * logp[r, t - 1, labels[r, t]]
    if getattr(out, "aux_loss", None) is not None:
        total = total + model.config.router_aux_loss_coef * out.aux_loss * n_supervised(batch)
    return total


@pytest.mark.parametrize("model_type", ["gemma2", "mixtral"])
@pytest.mark.parametrize("full_forward", [False, True])
def test_weighted_loss_equals_hand_computation(model_type, full_forward, monkeypatch):
    model = tiny_model(model_type)
    batch = _weighted_batch()
    params = [p for p in model.parameters() if p.requires_grad]
    hand = _by_hand(model, batch)
    hand_grads = torch.autograd.grad(hand, params)
    for chunk in (loss_mod.CHUNK, 3):  # 3: the chunked path, head recomputed in backward
        monkeypatch.setattr(loss_mod, "CHUNK", chunk)
        total, n = CausalLMLoss(model, full_forward=full_forward)(**batch)
        assert n == n_supervised(batch) == 4 + 5 + 4  # the normaliser ignores the weights
        assert float(total.detach()) == pytest.approx(float(hand.detach()), rel=1e-5)
        for g, h in zip(torch.autograd.grad(total, params), hand_grads):
            assert torch.allclose(g, h, rtol=1e-4, atol=1e-6 + 1e-4 * float(h.abs().max()))


def test_unit_weights_change_nothing():
    model = tiny_model("gemma2")
    batch = _weighted_batch()
    batch["loss_weights"] = torch.ones_like(batch["loss_weights"])
    with torch.no_grad():
        weighted, _ = CausalLMLoss(model)(**batch)
        plain, _ = CausalLMLoss(model)(**{k: v for k, v in batch.items() if k != "loss_weights"})
    assert float(weighted) == pytest.approx(float(plain), rel=1e-6)
