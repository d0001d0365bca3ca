"""Fractional per-reply loss_weight → per-token weights, through encoding, the cache and both collate paths."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from hone.config import load_config
from hone.data.collate import pack_batch, pad_batch
from hone.data.conversation import Conversation, Message
from hone.data.encode import IGNORE_INDEX, encode
from hone.data.pipeline import collect
from hone.templates.hf import HFTemplate

CONV = Conversation((Message("user", "Name a primary colour."), Message("assistant", "Red.", loss_weight=0.25),
                     Message("user", "Another?"), Message("assistant", "Blue.")), source="t:1")
PLAIN = Conversation((Message("user", "Hi"), Message("assistant", "Hello there.")), source="t:2")


@pytest.fixture(scope="module")
def tpl(tokenizer):
    return HFTemplate.from_tokenizer(tokenizer)


def test_weight_sits_on_its_reply_tokens(tokenizer, tpl):
    enc = encode(CONV, tpl, tokenizer)
    assert enc.weights is not None and len(enc.weights) == len(enc.labels)
    quarter = [t for t, w in zip(enc.input_ids, enc.weights) if w == 0.25]
    first_reply = [t for t, lab, w in zip(enc.input_ids, enc.labels, enc.weights) if lab != IGNORE_INDEX]
    assert tokenizer.decode(quarter).startswith("Red.") and "Blue" not in tokenizer.decode(quarter)
    assert set(enc.weights) == {0.25, 1.0} and len(quarter) < len(first_reply)
    assert all(lab != IGNORE_INDEX for lab, w in zip(enc.labels, enc.weights) if w != 1.0)
    assert encode(PLAIN, tpl, tokenizer).weights is None
    off = Conversation((CONV.messages[0], Message("assistant", "Red.", train=False, loss_weight=0.25),
                        *CONV.messages[2:]))
    assert encode(off, tpl, tokenizer).weights is None  # a masked reply's weight changes no loss


def test_truncation_keeps_weights_aligned(tokenizer, tpl):
    full = encode(CONV, tpl, tokenizer)
    cut = encode(CONV, tpl, tokenizer, max_length=len(full.input_ids) - 3, truncation="left")
    assert cut.weights == full.weights[3:] and len(cut.weights) == len(cut.labels)


def test_collate_emits_weights_only_when_some_differ(tokenizer, tpl):
    weighted, plain = encode(CONV, tpl, tokenizer), encode(PLAIN, tpl, tokenizer)
    assert "loss_weights" not in pad_batch([plain, plain], 0) and "loss_weights" not in pack_batch([plain])
    padded = pad_batch([plain, weighted], 0)
    assert padded["loss_weights"].shape == padded["labels"].shape and padded["loss_weights"].dtype == torch.float32
    assert padded["loss_weights"][1, :len(weighted.weights)].tolist() == weighted.weights
    assert padded["loss_weights"][0].eq(1).all()
    packed = pack_batch([plain, weighted])
    assert packed["loss_weights"].shape == packed["labels"].shape
    assert packed["loss_weights"][0, len(plain.input_ids):].tolist() == weighted.weights


def test_weighted_loss_is_the_weighted_sum_of_the_models_own_losses(tokenizer, tpl, tiny_model_dir):
    """Oracle: HF's forward(labels=...) on each reply alone; the agreed rule (CE at label position t times
    loss_weights[t]) must give 0.25 x first reply's loss sum + 1 x second's."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    enc = encode(CONV, tpl, tokenizer)
    batch = pad_batch([enc], tokenizer.pad_token_id or 0)
    labels, w = batch["labels"], batch["loss_weights"]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits
        ce = F.cross_entropy(logits[0, :-1].float(), labels[0, 1:], reduction="none", ignore_index=IGNORE_INDEX)
        ours = float((ce * w[0, 1:]).sum())
        expected = 0.0
        for weight, pick in ((0.25, w[0] == 0.25), (1.0, (w[0] == 1.0) & (labels[0] != IGNORE_INDEX))):
            part = torch.where(pick, labels[0], IGNORE_INDEX)[None]
            n = int((part[0, 1:] != IGNORE_INDEX).sum())
            expected += weight * float(model(input_ids=batch["input_ids"], labels=part).loss) * n
    assert ours == pytest.approx(expected, rel=1e-5)


def test_file_weights_survive_the_cache(tokenizer, tpl, tmp_path):
    rows = [{"messages": [{"role": "user", "content": [{"type": "text", "value": "q"}], "loss_weight": 0.0},
                          {"role": "assistant", "content": [{"type": "text", "value": "a reply"}],
                           "loss_weight": 0.5}]},
            {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "plain"}]}]
    p = tmp_path / "w.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    c = load_config({"dataset": [str(p)]})
    first, second = collect(c, tokenizer, tpl), collect(c, tokenizer, tpl)
    assert not first.cached and second.cached
    assert first.train[0].weights is not None and 0.5 in first.train[0].weights and first.train[1].weights is None
    assert [r.weights for r in second.train] == [r.weights for r in first.train]
    assert second.fingerprint == first.fingerprint
