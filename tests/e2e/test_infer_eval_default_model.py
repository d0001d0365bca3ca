"""`hone infer` and `hone eval` on the real default model after a short quickstart-like training.

The tuned model should know its new name on the held-out identity questions: its loss falls below the base
model's and its BLEU/ROUGE against the references rise.
"""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import hone
from hone.cli import main
from hone.config import load_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart-eval")
    cfg = load_config(REPO / "examples" / "quickstart.yaml",
                      {"output_dir": str(out), "num_train_epochs": 3, "learning_rate": 2e-3, "report_to": ["none"],
                       "val_size": 8, "eval_steps": 10})
    return hone.train(cfg).run_dir


def test_infer_prints_metrics_on_the_validation_split(run_dir):
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["infer", "--adapter", str(run_dir), "--max_new_tokens", "48"])
    assert code == 0
    recs = [json.loads(x) for x in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(recs) == 8
    metrics = json.loads((run_dir / "predictions_metrics.json").read_text())
    assert set(metrics) == {"bleu-4", "rouge-1", "rouge-2", "rouge-l"}
    assert "rouge-l:" in buf.getvalue()
    assert sum("Sparrow" in r["prediction"] or "小雀" in r["prediction"] for r in recs) >= 4


def test_eval_report_shows_the_tune_helped(run_dir):
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["eval", "--adapter", str(run_dir), "--max_new_tokens", "48"])
    assert code == 0
    numbers = json.loads((run_dir / "report.json").read_text())
    base, tuned = numbers["base"], numbers["tuned"]
    assert tuned["loss"] < 0.5 * base["loss"], numbers
    assert tuned["rouge-l"] > base["rouge-l"] and tuned["bleu-4"] > base["bleu-4"], numbers
    page = (run_dir / "report.html").read_text()
    assert "<svg" in page and "Sparrow" in page
    assert (run_dir / "report.md").is_file()
