"""`hone data check` / `hone data preview` from the command line, on a tokenizer-only model folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hone.cli import main

TESTS = Path(__file__).resolve().parents[1]
DATA = TESTS / "fixtures" / "data"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The SmolLM2 tokenizer plus a config.json: all `data check` reads (no weights are loaded)."""
    d = tmp_path_factory.mktemp("tok-model")
    for f in (TESTS / "fixtures" / "smollm2-tokenizer").iterdir():
        shutil.copy(f, d / f.name)
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return d


def test_data_check_cli(model_dir, capsys):
    rc = main(["data", "check", "--model", str(model_dir), "--dataset", str(DATA / "alpaca_en.json"),
               str(DATA / "alpaca_en.json"), "--max_length", "512", "--val_size", "0.25"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "training rows     18" in out and "validation rows   3" in out and "steps per epoch   18" in out


def test_data_check_cli_exit_code_on_error_strategy(model_dir, capsys):
    rc = main(["data", "check", "--model", str(model_dir), "--dataset", str(DATA / "broken.jsonl"),
               "--max_length", "512", "--check_dataset_strategy", "error"])
    err = capsys.readouterr().err
    assert rc != 0 and f"{DATA / 'broken.jsonl'}:2: bad_json" in err


def test_data_preview_cli_plain_markers_when_piped(model_dir, capsys):
    rc = main(["data", "preview", "--model", str(model_dir), "--dataset", "identity#2", "--model_name", "Sparrow",
               "-n", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("--- row") == 2 and "[[" in out and "\x1b[" not in out and "Sparrow" in out


def test_python_api_matches_the_cli(tiny_model_dir, identity_file):
    import hone

    keys = {"model": str(tiny_model_dir), "dataset": [f"{identity_file}#4"], "model_name": ["Sparrow"]}
    assert "training rows" in hone.check_data(keys)
    assert "[[" in hone.preview_data(keys, n=1)


def test_data_check_reads_llamafactory_content_parts(model_dir, capsys):
    """LLaMA-Factory's own demo rows (text, reasoning and tool_call parts, loss_weight): no bad row."""
    rc = main(["data", "check", "--model", str(model_dir), "--dataset", str(DATA / "lf_v1_sft_demo.jsonl"),
               str(DATA / "lf_reason_tool_use_demo.jsonl"), "--max_length", "4096",
               "--check_dataset_strategy", "error", "--model_name", "Sparrow", "--model_author", "Lab"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    table = out.split("dropped by reason:\n", 1)[1]
    assert "training rows     5" in out and table.split() == ["kept", "5"] and "dropped training rows" not in out
