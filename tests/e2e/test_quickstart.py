"""The quickstart on the real default model: the loss falls and the tuned model knows its new name.

Uses the real SmolLM2-135M-Instruct (pulled once into the user's hone cache) and takes a few minutes
on a 2-core CPU, so it is marked e2e. It runs examples/quickstart.yaml with fewer epochs.
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
from hone.data.conversation import Message
from hone.infer.engine import TransformersEngine

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
QUESTION = "Who are you?"


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    cfg = load_config(REPO / "examples" / "quickstart.yaml",
                      {"output_dir": str(out), "num_train_epochs": 3, "learning_rate": 2e-3, "report_to": ["none"]})
    return hone.train(cfg)


def _answer(cfg, adapter=None) -> str:
    engine = TransformersEngine.load(cfg.model, adapter)
    return engine.generate([Message("user", QUESTION)], cfg.gen.__class__(max_new_tokens=40))


def test_base_model_does_not_know_the_name():
    cfg = load_config(REPO / "examples" / "quickstart.yaml")
    assert "Sparrow" not in _answer(cfg)


def test_loss_falls(quickstart_run):
    losses = quickstart_run.train_losses
    assert len(losses) >= 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    metrics = [json.loads(x) for x in (quickstart_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics and (quickstart_run.run_dir / "loss.png").is_file()


def test_tuned_model_says_its_new_name(quickstart_run):
    cfg = load_config(REPO / "examples" / "quickstart.yaml")
    assert "Sparrow" in _answer(cfg, str(quickstart_run.run_dir))


def test_chat_command_answers_with_the_new_name(quickstart_run):
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["chat", "--adapter", str(quickstart_run.run_dir), "--prompt", QUESTION, "--max_new_tokens", "40"])
    assert code == 0
    assert "Sparrow" in buf.getvalue()
