"""A run records what repeating it needs (data digests and row counts, template and model digests, library
versions), and a resume or a rerun from its hone_config.yaml lists what differs."""
from __future__ import annotations

import importlib.metadata
import json
import shutil

import hone
from hone import runs
from hone.integrity import file_digest


def test_record_and_the_differences_a_resume_or_rerun_reports(tiny_cfg, tiny_model_dir, identity_file, tmp_path,
                                                             caplog):
    data = tmp_path / "identity.json"
    shutil.copy(identity_file, data)
    cfg = {**tiny_cfg, "dataset": [f"{data}#16"], "save_total_limit": -1}
    first = hone.train(cfg)
    rec = json.loads((first.run_dir / runs.RUN_INFO).read_text())
    assert rec["versions"]["torch"] == importlib.metadata.version("torch")
    assert set(rec["versions"]) == {"hone", "torch", "transformers", "peft", "accelerate"}
    assert rec["model_digest"] == runs.model_digest(tiny_model_dir)
    (entry,) = rec["data"]
    assert entry["dataset"] == str(data) and entry["files"] == {str(data): file_digest(data)}
    assert entry["rows"]["train"] + entry["rows"]["val"] >= 16 and entry["rows"]["train"] > 0
    assert len(rec["template_digest"]) == 64

    # a resume under other library versions than the checkpoint's run: a warning lists them
    rec["versions"]["torch"] = "0.0-old"
    (first.run_dir / runs.RUN_INFO).write_text(json.dumps(rec))
    caplog.clear()
    hone.train({**cfg, "resume_from_checkpoint": str(first.run_dir / "checkpoint-2")})
    assert "differs from its record" in caplog.text and "torch 0.0-old then" in caplog.text

    # a rerun from the saved config, after the data file changed: named as such
    rows = json.loads(data.read_text())
    data.write_text(json.dumps(rows[::-1], ensure_ascii=False))
    caplog.clear()
    hone.train(str(first.run_dir / runs.CONFIG_FILE), output_dir=str(tmp_path / "again"), max_steps=1,
               resume_from_checkpoint="")
    assert f"train dataset {data}: its files' content changed" in caplog.text
    assert "torch" not in caplog.text.split("differs from its record")[1]  # the resume rewrote the record


def test_row_counts_of_jsonl_and_json_sources(tmp_path):
    """Rows of a .jsonl file carry `file:LINE`, of a .json file `file#N`; both count toward their file."""
    from types import SimpleNamespace

    from hone.config import load_config
    from hone.training.record import data_sources

    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    lines, array = tmp_path / "a.jsonl", tmp_path / "b.json"
    lines.write_text("\n".join(json.dumps(row) for _ in range(3)) + "\n")
    array.write_text(json.dumps([row, row]))
    cfg = load_config({"dataset": [str(array)], "val_dataset": [str(lines)]})
    data = SimpleNamespace(train=[SimpleNamespace(source=f"{array}#{i}") for i in (1, 2)],
                           val=[SimpleNamespace(source=f"{lines}:{i}") for i in (1, 2, 3)])
    train, val = data_sources(cfg, data)
    assert train["rows"] == {"train": 2, "val": 0} and val["rows"] == {"train": 0, "val": 3}


def test_a_dataset_listed_twice_is_one_record_naming_both_entries(tmp_path):
    from types import SimpleNamespace

    from hone.config import load_config
    from hone.training.record import data_sources

    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    array = tmp_path / "b.json"
    array.write_text(json.dumps([row] * 4))
    cfg = load_config({"dataset": [f"{array}#6", str(array)], "val_dataset": [str(array)]})
    data = SimpleNamespace(train=[SimpleNamespace(source=f"{array}#{i % 4 + 1}") for i in range(10)],
                           val=[SimpleNamespace(source=f"{array}#{i}") for i in (1, 2, 3, 4)])
    train, val = data_sources(cfg, data)
    assert (train["split"], train["entries"], train["rows"]) == ("train", [f"{array}#6", str(array)],
                                                                 {"train": 10, "val": 4})
    assert (val["split"], val["entries"]) == ("val", [str(array)])
