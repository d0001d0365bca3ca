"""hone's loss equals each covered family's own forward(labels=...) loss, and its gradients, on the fast path.

The oracle is the model's own forward: softcapping, logit scaling and router auxiliary losses included.
Every model type in LOSS_FAMILIES must have a tiny model here, so a family cannot be covered untested.
"""
from __future__ import annotations

import pytest
import torch
from families import TINY, tiny_model

from hone.data.collate import pack_batch, pad_batch
from hone.data.encode import IGNORE_INDEX, Encoded
from hone.errors import ModelError
from hone.models.registry import LOSS_FAMILIES
from hone.training import loss as loss_mod
from hone.training.loss import CausalLMLoss, selected_loss


def _rows(seed: int = 0) -> list[Encoded]:
    """Rows of different lengths (so the batch pads) whose labels are partly masked, as prompts are."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n, masked in ((11, 4), (7, 2), (14, 9)):
        ids = torch.randint(3, 49152, (n,), generator=g).tolist()
        rows.append(Encoded(ids, [IGNORE_INDEX] * masked + ids[masked:]))
    return rows


def _oracle(model, batch):
    """The model's own mean loss over the batch's labelled positions, and its gradients."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                position_ids=batch.get("position_ids"), labels=batch["labels"], use_cache=False)
    return out.loss.detach(), torch.autograd.grad(out.loss, params)


def _hone(module, model, batch):
    params = [p for p in model.parameters() if p.requires_grad]
    total, n = module(**batch)
    return (total / n).detach(), torch.autograd.grad(total / n, params)


def _assert_same(ours, oracle):
    (loss, grads), (ref, ref_grads) = ours, oracle
    assert float(loss) == pytest.approx(float(ref), rel=1e-5, abs=1e-5)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-4, atol=1e-6 + 1e-4 * float(r.abs().max())), float((g - r).abs().max())


def test_every_covered_family_has_a_tiny_model_in_this_test():
    assert set(LOSS_FAMILIES) == set(TINY)


@pytest.mark.parametrize("model_type", sorted(LOSS_FAMILIES))
def test_loss_and_gradients_equal_the_models_own(model_type, monkeypatch):
    model = tiny_model(model_type)
    assert model.config.model_type == model_type
    batch = pad_batch(_rows(), pad_id=2)
    oracle = _oracle(model, batch)
    _assert_same(_hone(CausalLMLoss(model), model, batch), oracle)
    monkeypatch.setattr(loss_mod, "CHUNK", 5)  # the chunked path recomputes the head (and its op) in backward
    _assert_same(_hone(CausalLMLoss(model), model, batch), oracle)
    family = LOSS_FAMILIES[model_type]
    if family.logits != "plain" or family.router_aux:  # the extras bite: lm_head alone would be wrong here
        with torch.no_grad():
            hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            plain, n = selected_loss(model.get_output_embeddings(), hidden.last_hidden_state, batch["labels"])
        assert abs(float(plain) / n - float(oracle[0])) > 1e-2


@pytest.mark.parametrize("model_type", ["gemma3_text", "qwen2_moe"])
def test_packed_batch_equals_the_models_own(model_type):
    model = tiny_model(model_type)
    batch = pack_batch(_rows(1))
    _assert_same(_hone(CausalLMLoss(model), model, batch), _oracle(model, batch))


def test_unknown_model_type_is_refused_by_name_and_full_forward_matches():
    model = tiny_model("stablelm")
    with pytest.raises(ModelError, match=r"model type 'stablelm'.*gemma2.*full_forward_loss: true"):
        CausalLMLoss(model)
    batch = pad_batch(_rows(), pad_id=2)
    _assert_same(_hone(CausalLMLoss(model, full_forward=True), model, batch), _oracle(model, batch))


@pytest.mark.parametrize("model_type", ["gemma2", "mixtral"])
def test_full_forward_matches_on_covered_families(model_type):
    model = tiny_model(model_type)
    batch = pad_batch(_rows(), pad_id=2)
    _assert_same(_hone(CausalLMLoss(model, full_forward=True), model, batch), _oracle(model, batch))


def test_readme_lists_the_covered_families():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    listed = readme.split("This fast path covers")[1].split("Any other model type")[0]
    assert {t.strip(" .\n") for t in listed.split(":", 1)[1].split(",")} == set(LOSS_FAMILIES)
