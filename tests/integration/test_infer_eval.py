"""`hone infer` and `hone eval` in-process on a tiny run: files, metrics, the eval loss training logged, bad input."""
from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout

import pytest

from hone.cli import main
from hone.infer.metrics import bleu_rouge


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    import hone
    from pathlib import Path

    identity = Path(__file__).resolve().parents[2] / "examples" / "data" / "identity.json"
    out = tmp_path_factory.mktemp("run")
    cfg = {"model": str(tiny_model_dir), "dataset": [str(identity)], "val_size": 6, "output_dir": str(out),
           "add_output_dir_suffix": False, "max_steps": 4, "batch_size": 2, "learning_rate": 1e-2,
           "logging_steps": 1, "save_steps": 4, "eval_steps": 4, "report_to": ["none"], "plot_loss": False,
           "model_name": ["Sparrow"], "model_author": ["Whetstone Labs"], "lora_target": ["ALL"],
           "data_cache": False}
    return hone.train(cfg).run_dir


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_infer_on_the_runs_validation_split(tiny_run, tmp_path):
    target = tmp_path / "preds.jsonl"
    code, out, err = _run(["infer", "--adapter", str(tiny_run), "--output", str(target), "--max_new_tokens", "8",
                           "--show", "2"])
    assert code == 0, err
    recs = [json.loads(x) for x in target.read_text().splitlines()]
    assert len(recs) == 6
    for r in recs:
        assert r["reference"] and r["prompt"] and 0 < r["completion_tokens"] <= 8
        assert r["finish_reason"] in ("stop", "length") and r["prompt_tokens"] > 0
    assert "[2] prompt:" in out and "[3] prompt:" not in out
    want = bleu_rouge([r["prediction"] for r in recs], [r["reference"] for r in recs])
    saved = json.loads((tmp_path / "preds_metrics.json").read_text())
    assert saved == pytest.approx(want)
    assert f"bleu-4: {want['bleu-4']:.2f}" in out


def test_infer_on_a_dataset_without_references(tiny_model_dir, tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n'
                    '{"messages": [{"role": "user", "content": "who are you"}]}\n')
    target = tmp_path / "p.jsonl"
    code, out, err = _run(["infer", "--model", str(tiny_model_dir), "--dataset", str(data), "--output",
                           str(target), "--max_new_tokens", "4"])
    assert code == 0, err
    assert len(target.read_text().splitlines()) == 2
    assert "no metrics: 2 of 2 rows have no reference answer" in out


def test_eval_report(tiny_run):
    code, out, err = _run(["eval", "--adapter", str(tiny_run), "--max_new_tokens", "8", "--show", "3"])
    assert code == 0, err
    md = (tiny_run / "report.md").read_text()
    page = (tiny_run / "report.html").read_text()
    assert "| loss |" in md and "| bleu-4 |" in md and md.count("\n| ") >= 3 + 3
    assert "<svg" in page and "<polyline" in page and "src=" not in page and "href=" not in page
    # the tuned model's loss is the eval_loss training logged at its last step (same rows, same loss code)
    logged = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    eval_loss = [r["eval_loss"] for r in logged if r.get("kind") == "eval"][-1]
    numbers = json.loads((tiny_run / "report.json").read_text())
    base, tuned = numbers["base"], numbers["tuned"]
    assert tuned["loss"] == pytest.approx(eval_loss, rel=1e-4)
    assert base["loss"] != pytest.approx(tuned["loss"], rel=1e-3)
    assert tuned["perplexity"] == pytest.approx(math.exp(tuned["loss"]))
    assert f"| loss | {base['loss']:.4f} | {tuned['loss']:.4f} |" in md
    assert numbers["rows"] == 6 and set(tuned) >= {"bleu-4", "rouge-1", "rouge-2", "rouge-l"}


@pytest.mark.parametrize("argv, words", [
    (["eval"], "needs --adapter RUN_DIR"),
    (["infer"], "needs --adapter RUN_DIR"),
])
def test_bad_input_is_one_sentence(argv, words):
    code, out, err = _run(argv)
    assert code == 2 and words in err and "Traceback" not in err


def test_not_a_run_directory(tmp_path):
    code, out, err = _run(["eval", "--adapter", str(tmp_path)])
    assert code == 2 and "is not a hone run directory" in err and "Traceback" not in err


def test_eval_without_references(tiny_run, tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    code, out, err = _run(["eval", "--adapter", str(tiny_run), "--dataset", str(data)])
    assert code == 2 and "without a reference answer" in err and "Traceback" not in err
