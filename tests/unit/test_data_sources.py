"""Sources (every file type, folders, names, registered functions, hubs) and mixing (#N, weights, splits)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hone.config import load_config
from hone.data.pipeline import load_conversations, plan_sources
from hone.data.sources import DATASETS, register_dataset
from hone.errors import DataError

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def load(**kw):
    cfg = load_config({"dataset": [], **kw})
    return load_conversations(cfg.data)


@pytest.mark.parametrize("name,n", [("alpaca_en.json", 12), ("alpaca_en.jsonl", 12), ("alpaca_en.csv", 6),
                                    ("alpaca_en.tsv", 6), ("alpaca_en.parquet", 6), ("c4.txt", 8),
                                    ("messages.json", 6), ("query_response.jsonl", 5),
                                    ("glaive_toolcall_en.json", 6), ("tool_calls.jsonl", 2)])
def test_every_file_type_reads(name, n):
    train, val, report, _ = load(dataset=[str(DATA / name)])
    assert len(train) == n and not report.bad and not val
    assert all(c.source.startswith(str(DATA / name)) for c in train)


def test_csv_and_parquet_match_json_rows():
    j = load(dataset=[str(DATA / "alpaca_en.json")])[0][:6]
    for name in ("alpaca_en.csv", "alpaca_en.tsv", "alpaca_en.parquet"):
        assert [c.messages for c in load(dataset=[str(DATA / name)])[0]] == [c.messages for c in j]


def test_json_lines_in_a_json_file(tmp_path):
    p = tmp_path / "lines.json"
    p.write_text((DATA / "alpaca_en.jsonl").read_text())
    train, _, report, _ = load(dataset=[str(p)])
    assert len(train) == 12 and train[0].source == f"{p}:1"


def test_folder_of_files(tmp_path):
    for name in ("alpaca_en.json", "alpaca_en.csv", "c4.txt"):
        shutil.copy(DATA / name, tmp_path / name)
    train, _, report, _ = load(dataset=[str(tmp_path)])
    assert len(train) == 12 + 6 + 8 and not report.bad


def test_unreadable_file_is_reported(tmp_path):
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "\xff\xfe"}\n')
    (tmp_path / "ok.jsonl").write_text((DATA / "alpaca_en.jsonl").read_text())
    train, _, report, _ = load(dataset=[str(tmp_path)])
    assert len(train) == 12
    assert [(b.location, b.reason) for b in report.bad] == [(str(tmp_path / "bad.jsonl"), "unreadable_file")]


def test_broken_json_array_names_the_line(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('[\n{"instruction": "a", "output": "b"},\n{"instruction": "c" "output": "d"}\n]')
    _, _, report, _ = load(dataset=[str(p)])
    assert report.bad[0].location == f"{p}:3" and report.bad[0].reason == "bad_json"


def test_saved_dataset_dir_needs_datasets(tmp_path):
    d = tmp_path / "saved"
    d.mkdir()
    (d / "state.json").write_text("{}")
    (d / "dataset_info.json").write_text("{}")
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="needs the `datasets` package"):
            load(dataset=[str(d)])
    else:
        pytest.skip("datasets is installed")


def test_saved_dataset_dir_roundtrip(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = json.loads((DATA / "alpaca_en.json").read_text())
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    assert len(load(dataset=[str(tmp_path / "saved")])[0]) == len(rows)


def test_demo_sets_by_name_without_dataset_dir():
    train, _, report, _ = load(dataset=["alpaca_en_demo#5", "identity#3", "c4_demo#2", "glaive_toolcall_en_demo#2",
                                        "alpaca_zh_demo#1"], model_name=["Sparrow"], model_author=["Whetstone"])
    assert len(train) == 13
    assert train[5].messages[-1].content.count("{{") == 0 and any(c.is_text for c in train)


def test_dataset_info_columns_tags_num_samples():
    d = {"dataset_dir": str(DATA)}
    qa = load(dataset=["qa_csv"], **d)[0]
    assert qa[0].system == "You are a concise assistant." and len(qa) == 5
    chat = load(dataset=["chat_openai"], **d)[0]
    assert [m.role for m in chat[0].messages] == ["system", "user", "assistant"]
    assert all(c.is_text for c in load(dataset=["c4"], **d)[0])
    assert len(load(dataset=["alpaca_train"], **d)[0]) == 4  # num_samples
    assert len(load(dataset=["glaive"], **d)[0]) == 6


def test_custom_dataset_info_alias(tmp_path):
    cfg = load_config({"dataset": ["qa_csv"], "custom_dataset_info": str(DATA / "dataset_info.json")})
    assert len(load_conversations(cfg.data)[0]) == 5


def test_hub_names_fail_offline_clearly():
    with pytest.raises(DataError, match="hub.*cannot reach"):
        load(dataset=["hf::tatsu-lab/alpaca"])
    with pytest.raises(DataError, match="someone/some_set"):
        load(dataset=["on_hub"], dataset_dir=str(DATA))
    with pytest.raises(DataError, match="Known names:.*alpaca_en_demo"):
        load(dataset=["no_such_set"])


def test_register_dataset_function():
    rows = json.loads((DATA / "alpaca_en.json").read_text())
    register_dataset("test_reg_rows", lambda: (rows[:8], rows[8:10]), overwrite=True)
    assert "test_reg_rows" in DATASETS
    train, val, _, _ = load(dataset=["test_reg_rows"])
    assert len(train) == 8 and len(val) == 2 and train[0].source == "test_reg_rows#1"


def test_count_repeats_weighting_and_determinism():
    f = str(DATA / "alpaca_en.json")
    assert len(load(dataset=[f"{f}#5"])[0]) == 5
    big = load(dataset=[f"{f}#30"])[0]
    assert len(big) == 30 and big[:12] == big[12:24]  # whole repeats, then a sample
    twice = load(dataset=[f, f])[0]
    assert len(twice) == 24
    a = load(dataset=[f"{f}#7", str(DATA / "c4.txt")], dataset_seed=3)[0]
    b = load(dataset=[f"{f}#7", str(DATA / "c4.txt")], dataset_seed=3)[0]
    c = load(dataset=[f"{f}#7", str(DATA / "c4.txt")], dataset_seed=4)[0]
    assert a == b and a != c


def test_max_samples_and_train_sample():
    f = str(DATA / "alpaca_en.json")
    assert len(load(dataset=[f, str(DATA / "alpaca_en.csv")], max_samples=4)[0]) == 8
    assert len(load(dataset=[f], train_dataset_sample=5)[0]) == 5


def test_val_size_split_per_dataset_without_leak():
    f = str(DATA / "alpaca_en.json")
    train, val, _, _ = load(dataset=[f, f, str(DATA / "alpaca_en.csv")], dataset_test_ratio=0.25)
    assert len(val) == 3 + 2 and len(train) == 2 * 9 + 4
    assert not {id(c) for c in val} & {id(c) for c in train}


def test_val_dataset_with_count():
    f = str(DATA / "alpaca_en.json")
    train, val, _, _ = load(dataset=[f], val_dataset=[f"{DATA / 'alpaca_en.jsonl'}#4"], val_size=0.5)
    assert len(train) == 12 and len(val) == 4


def test_missing_file_fails_before_reading():
    with pytest.raises(DataError, match="neither a file nor a registered name"):
        plan_sources(load_config({"dataset": ["nope/missing.jsonl"]}).data)


def test_csv_unterminated_quote_names_the_line_it_opens(tmp_path):
    p = tmp_path / "qa.csv"
    p.write_text('instruction,output\nq1,a1\nq2,"a reply\nover two lines"\n\nq3,"never closed\nq4,a4\nq5,a5\n')
    train, _, report, _ = load(dataset=[str(p)])
    assert [c.source for c in train] == [f"{p}:2", f"{p}:3"]  # a row is located where it starts
    assert train[1].messages[-1].content == "a reply\nover two lines"
    (bad,) = report.bad
    assert bad.location == f"{p}:6" and bad.reason == "bad_csv" and "never closed" in bad.detail
    assert "2 lines after it" in bad.detail and report.kept == 2


def test_tsv_rows_keep_unicode_line_separators(tmp_path):
    p = tmp_path / "t.tsv"
    p.write_text("instruction\toutput\nq\u2028still q\ta\n", encoding="utf-8")
    train, _, report, _ = load(dataset=[str(p)])
    assert not report.bad and train[0].messages[0].content == "q\u2028still q"


def test_empty_file_is_named(tmp_path, caplog):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty.jsonl: the file is empty"):
        load(dataset=[f"{empty}#5"])
    _, _, report, _ = load(dataset=[str(empty), str(DATA / "alpaca_en.json")])
    assert report.warnings == [f"{empty}: the file is empty (no rows); check that it is the file you meant"]
    from hone.data.pipeline import enforce

    with caplog.at_level("WARNING", logger="hone"):
        enforce(report, "warning")
    assert any(str(empty) in r.message for r in caplog.records)


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlink_in_folder"])
def test_dataset_info_file_outside_its_folder_is_refused(tmp_path, how):
    outside = tmp_path / "secret.jsonl"
    outside.write_text((DATA / "alpaca_en.jsonl").read_text())
    d = tmp_path / "ds"
    d.mkdir()
    file_name = {"dotdot": "../secret.jsonl", "absolute": str(outside), "symlink": "link.jsonl",
                 "symlink_in_folder": "sub"}[how]
    if how == "symlink":
        (d / "link.jsonl").symlink_to(outside)
    if how == "symlink_in_folder":
        (d / "sub").mkdir()
        shutil.copy(DATA / "alpaca_en.jsonl", d / "sub" / "ok.jsonl")
        (d / "sub" / "z.jsonl").symlink_to(outside)
    (d / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": file_name}}))
    with pytest.raises(DataError) as e:
        load(dataset=["mine"], dataset_dir=str(d))
    assert "'mine'" in str(e.value) and f"points outside {d}" in str(e.value)


def test_dataset_info_inside_links_still_read(tmp_path):
    d = tmp_path / "ds"
    (d / "raw").mkdir(parents=True)
    shutil.copy(DATA / "alpaca_en.jsonl", d / "raw" / "a.jsonl")
    (d / "a.jsonl").symlink_to(d / "raw" / "a.jsonl")
    (d / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "a.jsonl"}}))
    assert len(load(dataset=["mine"], dataset_dir=str(d))[0]) == 12


@pytest.mark.parametrize("suffix,text,line", [
    (".yaml", "mine:\n  file_name: a.jsonl\n  columns: [prompt\nother: {}\n", 4),
    (".json", '{"mine": {"file_name": "a.jsonl",}}', 1)])
def test_dataset_info_that_does_not_parse_names_file_and_line(tmp_path, suffix, text, line):
    p = tmp_path / f"info{suffix}"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        load(dataset=["mine"], dataset_info=str(p))
    assert str(e.value).startswith(f"{p}:{line}: not valid {'YAML' if suffix == '.yaml' else 'JSON'}")
