"""Training runs each model family's own objective: hone's first logged loss is the model's own forward loss."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from families import save_tiny
from transformers import AutoModelForCausalLM

import hone
from hone.data.collate import pad_batch
from hone.data.pipeline import prepare
from hone.errors import ModelError
from hone.models.load import load_tokenizer
from hone.templates import get_template


def _keys(model_dir, identity_file, out):
    return {"model": str(model_dir), "dataset": [f"{identity_file}#8"], "output_dir": str(out),
            "add_output_dir_suffix": False, "max_steps": 1, "batch_size": 3, "gradient_accumulation_steps": 1,
            "lora_dropout": 0.0, "save_strategy": "no", "report_to": ["none"], "plot_loss": False,
            "model_name": ["Sparrow"], "model_author": ["Whetstone Labs"]}


def _first_loss_and_oracle(keys):
    """hone's first logged loss, and the model's own forward(labels=...) loss on the rows of that step."""
    res = hone.train(keys)
    recs = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in recs if r["kind"] == "train")
    assert first["step"] == 1
    cfg = hone.load_config(keys)
    model_dir = Path(cfg.model.model)
    tok = load_tokenizer(model_dir, cfg.model)
    data = prepare(cfg, tok, get_template(cfg.model.template, tok))
    batch = pad_batch([data.train[i] for i in first["rows"]], tok.pad_token_id)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()  # LoRA starts at zero: step 1 is the base model
    with torch.no_grad():
        own = model(**batch, use_cache=False).loss
    return first["loss"], float(own)


def test_gemma2_trains_with_default_settings_on_its_own_loss(identity_file, tmp_path):
    model_dir = save_tiny("gemma2", tmp_path / "gemma2")
    loss, own = _first_loss_and_oracle(_keys(model_dir, identity_file, tmp_path / "out"))
    assert loss == pytest.approx(own, rel=1e-5)


def test_unknown_family_is_refused_by_name_and_full_forward_trains_on_its_own_loss(identity_file, tmp_path):
    model_dir = save_tiny("stablelm", tmp_path / "stablelm")
    keys = _keys(model_dir, identity_file, tmp_path / "out")
    with pytest.raises(ModelError, match=r"model type 'stablelm'.*full_forward_loss: true"):
        hone.train(keys)
    loss, own = _first_loss_and_oracle({**keys, "full_forward_loss": True})
    assert loss == pytest.approx(own, rel=1e-5)
