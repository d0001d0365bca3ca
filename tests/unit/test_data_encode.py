"""Loss masks and truncation, on the real SmolLM2 tokenizer and its own chat template."""
from __future__ import annotations

import pytest

from hone.data.conversation import Conversation, Message
from hone.data.encode import IGNORE_INDEX, encode
from hone.data.formats import RowError
from hone.templates.hf import HFTemplate

CONV = Conversation((Message("user", "Name a primary colour."), Message("assistant", "Red."),
                     Message("user", "Another?"), Message("assistant", "Blue.")), source="t:1")


@pytest.fixture(scope="module")
def tpl(tokenizer):
    return HFTemplate.from_tokenizer(tokenizer)


def loss_text(enc, tokenizer) -> list[str]:
    """Decoded runs of loss-carrying tokens."""
    runs, cur = [], []
    for t, lab in zip(enc.input_ids, enc.labels):
        if lab != IGNORE_INDEX:
            cur.append(t)
        elif cur:
            runs.append(tokenizer.decode(cur)), cur.clear()
    if cur:
        runs.append(tokenizer.decode(cur))
    return runs


def test_ids_match_apply_chat_template(tokenizer, tpl):
    enc = encode(CONV, tpl, tokenizer)
    ref = tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in CONV.messages],
                                        tokenize=False)
    assert enc.input_ids == tokenizer(ref, add_special_tokens=False)["input_ids"]


def test_loss_on_every_reply_by_default(tokenizer, tpl):
    runs = loss_text(encode(CONV, tpl, tokenizer), tokenizer)
    assert len(runs) == 2 and runs[0].startswith("Red.<|im_end|>") and runs[1].startswith("Blue.<|im_end|>")


def test_last_turn_only_and_prompt_too(tokenizer, tpl):
    runs = loss_text(encode(CONV, tpl, tokenizer, loss_scope="last_turn"), tokenizer)
    assert len(runs) == 1 and runs[0].startswith("Blue.")
    enc = encode(CONV, tpl, tokenizer, loss_scope="all")
    assert enc.labels == enc.input_ids


def test_per_turn_train_flag_and_zero_weight(tokenizer, tpl):
    msgs = list(CONV.messages)
    off = Conversation((msgs[0], Message("assistant", "Red.", train=False), *msgs[2:]))
    assert len(loss_text(encode(off, tpl, tokenizer), tokenizer)) == 1
    none = Conversation((msgs[0], Message("assistant", "Red.", loss_weight=0.0)))
    with pytest.raises(RowError) as e:
        encode(none, tpl, tokenizer)
    assert e.value.reason == "no_trainable_tokens"


def test_truncation_strategies(tokenizer, tpl):
    full = encode(CONV, tpl, tokenizer)
    n = len(full.input_ids)
    with pytest.raises(RowError) as e:
        encode(CONV, tpl, tokenizer, max_length=n - 1, truncation="delete")
    assert e.value.reason == "over_length" and f"{n} tokens > max_length {n - 1}" in e.value.detail
    left = encode(CONV, tpl, tokenizer, max_length=n - 5, truncation="left")
    assert left.input_ids == full.input_ids[5:] and left.truncated and not left.eos_cut
    right = encode(CONV, tpl, tokenizer, max_length=n - 2, truncation="right")
    assert right.input_ids == full.input_ids[:n - 2] and right.truncated and right.eos_cut


def test_reply_cut_away_entirely_is_reported(tokenizer, tpl):
    with pytest.raises(RowError) as e:
        encode(CONV, tpl, tokenizer, max_length=10, truncation="right")
    assert e.value.reason == "response_cut"


def test_text_rows_end_with_eos(tokenizer, tpl):
    enc = encode(Conversation(text="Plain text for pre-training."), tpl, tokenizer)
    assert enc.input_ids[-1] == tokenizer.eos_token_id and enc.labels == enc.input_ids
