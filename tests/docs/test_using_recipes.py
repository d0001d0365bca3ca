"""Each recipe in examples/recipes runs as documented, shortened to two steps, on the real default model.

Only the step count and the output directory are overridden. The recipes read examples/data and the shared
LLaMA-Factory demo data (../shared/data from the repository root), so the tests run from the repository root.
"""
from __future__ import annotations

import io
import json
import math
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from hone.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "examples" / "recipes"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)


def hone(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def train(recipe: str, out: Path, *extra: str) -> Path:
    """Two steps of a recipe; the run directory it printed."""
    code, stdout, stderr = hone("train", str(RECIPES / f"{recipe}.yaml"), "--max_steps", "2", "--output_dir",
                                str(out), *extra)
    assert code == 0, stderr[-2000:]
    run = Path(re.search(r"run directory: (.+)", stdout).group(1))
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if s["kind"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), steps
    assert (run / "adapter_model.safetensors").is_file()
    return run


def resolved(run: Path) -> dict:
    return yaml.safe_load((run / "hone_config.yaml").read_text())


def test_recipes_are_the_documented_ones():
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == ["llama-factory", "maica", "minicpm", "ms-swift"]


def test_maica_mixes_weighted_sets(tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared demo data ({SHARED_DATA}) is not here")
    run = train("maica", tmp_path)
    cfg = resolved(run)
    assert cfg["dataset"].count("examples/data/identity.json") == 3
    assert (cfg["lora_dropout"], cfg["lora_target"], cfg["attn_impl"]) == (0.06, ["DEFAULT"], "sdpa")
    record = json.loads((run / "hone_run.json").read_text())
    rows = {(d["dataset"], d["split"]): d["rows"] for d in record["data"]}
    assert rows[("examples/data/identity.json", "train")]["train"] == 3 * 91  # listed three times
    assert rows[("examples/data/identity_test.jsonl", "val")]["val"] == 4  # NAME#4


def test_minicpm_lora_and_its_gpu_switches(tmp_path):
    run = train("minicpm", tmp_path)
    cfg = resolved(run)
    assert (cfg["tuning"], cfg["batch_size"], cfg["eval_batch_size"], cfg["max_length"]) == ("lora", 4, 4, 256)
    assert cfg["dataset"] == ["examples/data/units_train.json"] and cfg["val_dataset"] == ["examples/data/units_dev.json"]
    import torch

    if torch.cuda.is_available():
        return
    # what the page says to switch on for a GPU stops here with a message saying why, not a traceback
    code, _, err = hone("train", str(RECIPES / "minicpm.yaml"), "--max_steps", "2", "--output_dir",
                        str(tmp_path / "ds"), "--deepspeed", "zero2_offload")
    assert code == 2 and "deepspeed needs CUDA" in err, err[-2000:]
    code, _, err = hone("train", str(RECIPES / "minicpm.yaml"), "--max_steps", "2", "--output_dir",
                        str(tmp_path / "q"), "--qlora")
    assert code == 2 and "needs a CUDA GPU" in err and "tuning: lora" in err, err[-2000:]


def test_ms_swift_sft_infer_merge(tmp_path):
    run = train("ms-swift", tmp_path)
    assert run.parent == tmp_path / "smollm2-135m" and run.name.startswith("v0-")  # ms-swift's run layout
    code, stdout, err = hone("infer", "--ckpt_dir", str(run), "--max_new_tokens", "8", "--max_samples", "2")
    assert code == 0, err[-2000:]
    preds = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all(p["reference"] for p in preds) and "rouge-l:" in stdout
    code, stdout, err = hone("export", str(run))
    assert code == 0, err[-2000:]
    merged = Path(stdout.splitlines()[0])
    assert merged == run / "merged" and (merged / "model.safetensors").is_file()
    assert "chat_template" in (merged / "tokenizer_config.json").read_text() or (merged / "chat_template.jinja").is_file()


def test_llama_factory_config_as_written(tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared demo data ({SHARED_DATA}) is not here")
    run = train("llama-factory", tmp_path)
    cfg = resolved(run)
    assert (cfg["tuning"], cfg["lora_target"], cfg["max_length"], cfg["max_samples"]) == ("lora", ["all"], 512, 60)
    assert (cfg["batch_size"], cfg["val_size"], cfg["ddp_timeout"]) == (2, 0.1, 180000000)
    record = json.loads((run / "hone_run.json").read_text())
    ((name, rows),) = [(d["dataset"], d["rows"]) for d in record["data"]]
    # max_samples keeps 60 rows; val_size takes a tenth of them; rows over cutoff_len are deleted
    assert name == "alpaca_en_demo" and 40 < rows["train"] + rows["val"] <= 60 and 3 <= rows["val"] <= 6, rows
