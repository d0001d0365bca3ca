"""Rows over max_length: deleting them is a policy (reported, never "bad"); cutting them is counted."""
from __future__ import annotations

import json
import logging

import pytest

from hone.config import load_config
from hone.data.conversation import Conversation, Message
from hone.data.encode import encode
from hone.data.pipeline import collect, prepare
from hone.data.report import check_report
from hone.templates.hf import HFTemplate


@pytest.fixture(scope="module")
def tpl(tokenizer):
    return HFTemplate.from_tokenizer(tokenizer)


def chinese_chat(path, n_rows: int, n_long: int):
    """Chinese chat rows; the first `n_long` far longer than 512 tokens."""
    rows = []
    for i in range(n_rows):
        reply = ("这是一段很长的回答，用来测试超长的样本。" * (60 if i < n_long else 1)) + str(i)
        rows.append({"messages": [{"role": "user", "content": f"第{i}个问题是什么？"},
                                  {"role": "assistant", "content": reply}]})
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_deleted_rows_do_not_stop_an_error_strategy_run(tokenizer, tpl, tmp_path):
    p = chinese_chat(tmp_path / "tool_zh.jsonl", 30, 4)
    c = load_config({"dataset": [str(p)], "max_length": 512, "truncation_strategy": "delete",
                     "check_dataset_strategy": "error"})
    data = prepare(c, tokenizer, tpl)
    assert len(data.train) == 26 and not data.report.bad and len(data.report.deleted) == 4
    assert [b.location for b in data.report.deleted] == [f"{p}:{n}" for n in (1, 2, 3, 4)]
    text = check_report(c, tokenizer, tpl)
    assert "deleted rows      4" in text and f"{p}:1: over_length" in text and "MOST" not in text


def test_most_rows_deleted_is_loud_with_the_fix_but_not_bad(tokenizer, tpl, tmp_path, caplog):
    """MiniCPM's `--model_max_length 512` on long Chinese chat: 72% of rows over the limit."""
    p = chinese_chat(tmp_path / "chat_zh.jsonl", 25, 18)
    keys = {"dataset": [str(p)], "model_max_length": 512, "max_bad_ratio": 0.5}
    with caplog.at_level(logging.WARNING, logger="hone"):
        data = prepare(load_config(keys), tokenizer, tpl)
    assert len(data.train) == 7 and data.report.bad_ratio == 0.0 and data.report.deleted_ratio == 18 / 25
    loud = [r.message for r in caplog.records if "MOST TRAINING ROWS WERE DELETED" in r.message]
    assert len(loud) == 1 and "18 of 25" in loud[0] and "truncation_strategy: right" in loud[0]
    assert "raise max_length" in loud[0]
    text = check_report(load_config(keys), tokenizer, tpl)
    assert "MOST TRAINING ROWS WERE DELETED" in text and "max_bad_ratio" not in text


def test_bad_rows_still_count_against_max_bad_ratio_beside_deleted_ones(tokenizer, tpl, tmp_path):
    p = chinese_chat(tmp_path / "mixed.jsonl", 10, 5)
    with p.open("a", encoding="utf-8") as fh:
        fh.write("not json\n" * 6)
    from hone.errors import DataError

    with pytest.raises(DataError, match="6 of 16 training rows are bad"):
        prepare(load_config({"dataset": [str(p)], "max_length": 512, "max_bad_ratio": 0.3}), tokenizer, tpl)


def test_left_cut_of_the_whole_prompt_is_counted(tokenizer, tpl, tmp_path):
    conv = Conversation((Message("system", "You are terse."), Message("user", "Name a colour."),
                         Message("assistant", "Red is a colour, and so is blue, and green.")))
    full = encode(conv, tpl, tokenizer)
    first_reply = next(i for i, t in enumerate(full.labels) if t != -100)
    kept = encode(conv, tpl, tokenizer, max_length=len(full.input_ids) - first_reply + 2, truncation="left")
    assert kept.truncated and not kept.prompt_cut  # two prompt tokens survive
    cut = encode(conv, tpl, tokenizer, max_length=len(full.input_ids) - first_reply - 2, truncation="left")
    assert cut.truncated and cut.prompt_cut
    p = tmp_path / "c.jsonl"
    row = {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name one."},
                        {"role": "assistant", "content": "Red " * 60}]}
    p.write_text(json.dumps(row) + "\n" + json.dumps({"messages": row["messages"][:2] + [
        {"role": "assistant", "content": "Red."}]}) + "\n")
    c = load_config({"dataset": [str(p)], "max_length": 40, "truncation_strategy": "left"})
    data = collect(c, tokenizer, tpl)
    assert data.truncated == 1 and data.prompt_cut == 1
    assert "1 their whole prompt" in check_report(c, tokenizer, tpl)


def test_every_row_deleted_stops_with_the_fix(tokenizer, tpl, tmp_path):
    from hone.errors import DataError

    p = chinese_chat(tmp_path / "long.jsonl", 3, 3)
    with pytest.raises(DataError) as e:
        prepare(load_config({"dataset": [str(p)], "max_length": 128}), tokenizer, tpl)
    assert "no usable training rows" in str(e.value) and "truncation_strategy: right" in str(e.value)
    c = load_config({"dataset": [str(p)], "max_length": 128, "truncation_strategy": "right"})
    assert len(prepare(c, tokenizer, tpl).train) == 3
