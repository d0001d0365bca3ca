"""Bad rows reported precisely, check_dataset_strategy, the tokenization cache, workers, data check/preview."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hone.config import load_config
from hone.data.report import check_report, preview, render
from hone.data.mixing import deleted_note
from hone.data.pipeline import collect, encode_rows, load_conversations, prepare
from hone.errors import DataError
from hone.templates.hf import HFTemplate

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
BROKEN = DATA / "broken.jsonl"

OVER_LENGTH = 9  # deleted by truncation_strategy delete: reported, not a bad row
EXPECTED = {  # line → (reason, words the message must hold)
    2: ("bad_json", "not valid JSON"),
    3: ("missing_field", "no 'messages' field"),
    4: ("missing_field", "'content' is null"),
    5: ("unknown_role", "'wizard'"),
    6: ("order", "two user turns in a row"),
    7: ("system_not_first", "system message"),
    8: ("empty_reply", "is empty"),
    10: ("order", "the first turn is 'assistant'"),
}


@pytest.fixture(scope="module")
def tpl(tokenizer):
    return HFTemplate.from_tokenizer(tokenizer)


def cfg(**kw):
    return load_config({"dataset": [str(BROKEN)], "max_length": 512, "max_bad_ratio": 1.0, **kw})


def test_one_precise_message_per_bad_row(tokenizer, tpl):
    data = collect(cfg(), tokenizer, tpl)
    got = {int(b.location.rsplit(":", 1)[1]): b for b in data.report.bad}
    assert set(got) == set(EXPECTED)
    for line, (reason, words) in EXPECTED.items():
        b = got[line]
        assert b.location == f"{BROKEN}:{line}" and b.reason == reason and words in b.detail, str(b)
    assert len(data.train) == 2 and data.report.kept == 2
    assert data.report.counts() == {"bad_json": 1, "empty_reply": 1, "missing_field": 2, "order": 2,
                                    "system_not_first": 1, "unknown_role": 1}
    (deleted,) = data.report.deleted
    assert deleted.location == f"{BROKEN}:{OVER_LENGTH}" and "> max_length 512" in deleted.detail


def test_error_strategy_stops_with_every_location(tokenizer, tpl):
    with pytest.raises(DataError) as e:
        prepare(cfg(check_dataset_strategy="error"), tokenizer, tpl)
    msg = str(e.value)
    assert all(f"{BROKEN}:{line}:" in msg for line in EXPECTED) and "check_dataset_strategy: warning" in msg
    assert f"{BROKEN}:{OVER_LENGTH}:" not in msg


def test_warning_strategy_logs_each_and_goes_on(tokenizer, tpl, caplog):
    with caplog.at_level(logging.WARNING, logger="hone"):
        data = prepare(cfg(check_dataset_strategy="warning"), tokenizer, tpl)
    assert len(data.train) == 2
    assert sum("dropped" in r.message and str(BROKEN) in r.message for r in caplog.records) == len(EXPECTED)


def test_bad_share_over_threshold_stops(tokenizer, tpl):
    with pytest.raises(DataError, match="max_bad_ratio"):
        prepare(cfg(check_dataset_strategy="none", max_bad_ratio=0.5), tokenizer, tpl)


def test_no_trainable_tokens_anywhere(tokenizer, tpl, tmp_path):
    p = tmp_path / "off.jsonl"
    p.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", '
                 '"train": false}]}\n')
    with pytest.raises(DataError, match="no trainable tokens"):
        prepare(load_config({"dataset": [str(p)], "max_bad_ratio": 1.0}), tokenizer, tpl)


def test_truncated_rows_counted_with_eos_cut(tokenizer, tpl):
    data = collect(cfg(truncation_strategy="right", max_length=300), tokenizer, tpl)
    assert data.truncated >= 1 and data.eos_cut >= 1
    assert "over_length" not in data.report.counts()


def test_cache_second_run_skips_tokenizing(tokenizer, tpl):
    c = load_config({"dataset": [str(DATA / "alpaca_en.json"), str(DATA / "c4.txt")], "val_size": 0.2})
    first = prepare(c, tokenizer, tpl)
    second = prepare(c, tokenizer, tpl)
    assert not first.cached and second.cached
    assert second.fingerprint == first.fingerprint
    assert [r.input_ids for r in second.train] == [r.input_ids for r in first.train]
    assert [r.labels for r in second.val] == [r.labels for r in first.val]
    assert [r.source for r in second.train] == [r.source for r in first.train]
    other = prepare(load_config({"dataset": [str(DATA / "alpaca_en.json"), str(DATA / "c4.txt")], "val_size": 0.2,
                                 "max_length": 100, "truncation_strategy": "left"}), tokenizer, tpl)
    assert not other.cached


def test_cache_keyed_by_file_content(tokenizer, tpl, tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text((DATA / "alpaca_en.jsonl").read_text())
    c = load_config({"dataset": [str(p)]})
    prepare(c, tokenizer, tpl)
    p.write_text("\n".join((DATA / "alpaca_en.jsonl").read_text().splitlines()[:3]))
    again = prepare(c, tokenizer, tpl)
    assert not again.cached and len(again.train) == 3


def test_same_result_for_any_worker_count(tokenizer, tpl):
    c1 = load_config({"dataset": [str(DATA / "alpaca_en.json"), str(DATA / "broken.jsonl")], "max_length": 512})
    c2 = load_config({"dataset": [str(DATA / "alpaca_en.json"), str(DATA / "broken.jsonl")], "max_length": 512,
                      "preprocessing_num_workers": 2})
    convs = load_conversations(c1.data)[0]
    assert encode_rows(convs, c1, tokenizer, tpl) == encode_rows(convs, c2, tokenizer, tpl, min_parallel=0)


def test_check_report_numbers(tokenizer, tpl):
    c = load_config({"dataset": [str(DATA / "alpaca_en.json"), str(BROKEN)], "max_length": 512, "batch_size": 2,
                     "gradient_accumulation_steps": 2})
    text = check_report(c, tokenizer, tpl)
    assert "training rows     14" in text and "steps per epoch   4" in text
    assert "length histogram" in text and "loss tokens" in text and "% of all tokens" in text
    assert f"{BROKEN}:5: unknown_role" in text and "over_length" in text


def test_check_report_fails_when_training_would(tokenizer, tpl):
    with pytest.raises(DataError) as e:
        check_report(cfg(check_dataset_strategy="error"), tokenizer, tpl)
    assert "training would stop" in str(e.value) and "length histogram" in str(e.value)


def test_preview_marks_loss_tokens(tokenizer, tpl):
    c = load_config({"dataset": [str(DATA / "alpaca_en.json")]})
    plain = preview(c, n=2, tokenizer=tokenizer, template=tpl)
    assert plain.count("--- row") == 2 and "[[" in plain and "\x1b[" not in plain
    assert "<|im_start|>assistant\n[[" in plain
    coloured = preview(c, n=1, color=True, tokenizer=tokenizer, template=tpl)
    assert "\x1b[1;32m" in coloured


def test_render_is_the_full_sequence(tokenizer, tpl):
    data = collect(load_config({"dataset": [str(DATA / "alpaca_en.json")]}), tokenizer, tpl)
    enc = data.train[0]
    assert render(enc, tokenizer).replace("[[", "").replace("]]", "") == tokenizer.decode(enc.input_ids)



def test_counts_and_shares_are_of_the_rows_the_run_uses(tokenizer, tpl):
    """`NAME#N` takes 4 of the 12 rows read: kept, deleted and the deleted share are counted among those 4, and
    the other 8 are reported as not used (they were reported as kept, and shares divided by all 12)."""
    entry = f"{DATA / 'alpaca_en.json'}#4"
    whole = collect(load_config({"dataset": [entry], "max_length": 4096}), tokenizer, tpl)
    lengths = sorted(len(r.input_ids) for r in whole.train)
    c = load_config({"dataset": [entry], "max_length": lengths[1]})  # the two longest of the 4 are deleted
    rep = collect(c, tokenizer, tpl).report
    assert (rep.kept, len(rep.deleted), rep.unused, rep.total) == (2, 2, 8, 12)
    assert rep.deleted_ratio == 0.5
    text = check_report(c, tokenizer, tpl)
    assert deleted_note(rep).startswith("2 of 4 training rows are longer than max_length")
    assert f"  {'kept':<22}{2:>8}" in text and f"  {'not used':<22}{8:>8}" in text
