"""The fast training layout (rows packed end to end, a micro-batch split into forwards of at most N tokens)
gives the loss and the gradients of the model's own forward(labels=...) on the padded batch, family by family."""
from __future__ import annotations

import pytest
import torch

from families import TINY, tiny_model
from hone.data.collate import pad_batch
from hone.data.encode import IGNORE_INDEX, Encoded
from hone.models.attention import use_row_attention
from hone.models.registry import LOSS_FAMILIES
from hone.training.loss import CausalLMLoss
from hone.training.objective import SFT

LENGTHS = (9, 23, 14, 40, 30, 5)  # with a 32-token budget: [9 23] [14] [40] [30] [5], the 40 alone


def _rows(seed: int = 0) -> list[Encoded]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in LENGTHS:
        ids = torch.randint(3, 4000, (n,), generator=g).tolist()
        cut = int(torch.randint(1, n - 1, (1,), generator=g))  # a prompt, then the reply the loss is on
        rows.append(Encoded(ids, [IGNORE_INDEX] * cut + ids[cut:]))
    return rows


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("rows_attention", [False, True], ids=["mask", "rows"])
@pytest.mark.parametrize("family", sorted(TINY))
def test_split_packed_forwards_give_the_models_own_loss_and_gradients(family, rows_attention):
    rows = _rows()
    model = tiny_model(family)
    padded = pad_batch(rows, pad_id=2)
    own = model(**padded, use_cache=False)  # the oracle: the family's own loss (token mean, aux loss included)
    own.loss.backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    if rows_attention:  # what training on a CPU runs: packed rows attend one row at a time
        sdpa = model.config._attn_implementation == "sdpa"
        assert use_row_attention(model) == sdpa

    moe = LOSS_FAMILIES[family].router_aux  # the router's balancing loss is per forward: MoE stays one forward
    sft = SFT(pad_id=2, packing=True, filler=rows[0], max_tokens=0 if moe else 32)
    pieces = sft.batches(rows)
    assert len(pieces) == (1 if moe else 5)
    assert all("attention_mask" not in p for p in pieces)  # nothing computed on padding
    module = CausalLMLoss(model)
    n = sum(sft.count(p) for p in pieces)
    total = torch.zeros(())
    for p in pieces:
        part, _ = module(**p)
        (part / n).backward()
        total += part.detach()
    got = _grads(model)

    assert n == int((padded["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert float(total / n) == pytest.approx(float(own.loss.detach()), rel=1e-5)
    assert got.keys() == want.keys()
    for k in want:  # fp32 sums in another order: equal to a relative error far below any training effect
        err = float((got[k] - want[k]).norm() / want[k].norm().clamp_min(1e-12))
        assert err < 1e-5, (k, err)


def test_forwards_keep_the_rows_in_order_and_a_long_row_alone():
    rows = _rows()
    sft = SFT(pad_id=2, packing=True, filler=rows[0], max_tokens=32)
    sizes = [int(p["input_ids"].shape[1]) for p in sft.batches(rows)]
    assert sizes == [32, 14, 40, 30, 5]
    whole = SFT(pad_id=2, packing=True, filler=rows[0]).batches(rows)
    assert len(whole) == 1 and int(whole[0]["input_ids"].shape[1]) == sum(LENGTHS)
    padded = SFT(pad_id=2, packing=False, filler=rows[0], max_tokens=32).batches(rows)
    assert len(padded) == 1 and padded[0]["input_ids"].shape == (len(LENGTHS), max(LENGTHS))


class _Acc:
    def __init__(self, device: str = "cpu", deepspeed: bool = False) -> None:
        self.device = torch.device(device)
        self.state = type("S", (), {"deepspeed_plugin": object() if deepspeed else None})()


def test_the_layout_each_setting_gets():
    from hone.config import load_config
    from hone.training.loop import layout

    cfg = load_config({})
    plain = LOSS_FAMILIES["llama"]
    assert layout(cfg, plain, _Acc()) == (True, 1024)  # the default on a CPU
    assert layout(cfg, plain, _Acc("meta")) == (True, 0)  # elsewhere (a GPU): the whole micro-batch at once
    assert layout(cfg, LOSS_FAMILIES["mixtral"], _Acc()) == (True, 0)  # the router loss is per forward
    assert layout(cfg, None, _Acc()) == (False, 0)  # the model's own forward: padded
    assert layout(load_config({"max_forward_tokens": 64}), plain, _Acc()) == (True, 64)
    assert layout(load_config({"max_forward_tokens": 64}), plain, _Acc(deepspeed=True)) == (True, 0)
    assert layout(load_config({"packing": False}), plain, _Acc()) == (False, 0)
