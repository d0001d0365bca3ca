"""Shared fixtures: the real SmolLM2 tokenizer (stored in the repo) and tiny random models built from it.

Nothing here touches the network. Tests marked `gpu` skip without CUDA; tests marked `e2e` use the real
default model (pulled once into a shared cache) and are the slow ones.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
TOKENIZER_DIR = FIXTURES / "smollm2-tokenizer"
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch, request):
    """Every test gets its own HONE_HOME unless it asks for the real model cache (e2e)."""
    if "e2e" in request.keywords:
        return
    monkeypatch.setenv("HONE_HOME", str(tmp_path_factory.mktemp("hone_home")))
    # `dtype: auto` measures this CPU's bf16 speed; tests compare losses at fp32 tolerance on every machine
    monkeypatch.setenv("HONE_BF16_SPEEDUP", "1")


@pytest.fixture(autouse=True)
def _reset_hone_logger():
    """`hone.cli.main` configures the `hone` logger for a terminal; undo it so caplog sees records again."""
    yield
    import logging

    log = logging.getLogger("hone")
    log.handlers.clear()
    log.propagate = True
    log.setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def build_tiny_model_dir(path: Path, *, layers: int = 2, hidden: int = 64, seed: int = 0) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer and chat template, saved as a normal model directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    for f in TOKENIZER_DIR.iterdir():
        shutil.copy(f, path / f.name)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Path of a tiny random model directory (build once per session; treat as read-only)."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Two LoRA adapters ("a", "b") for the tiny model with random non-zero weights, so each changes its output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("tiny-adapters")
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(
            r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False))
        model.save_pretrained(root / name)
        out[name] = root / name
    return out


@pytest.fixture
def identity_file() -> Path:
    return REPO / "examples" / "data" / "identity.json"


@pytest.fixture
def tiny_cfg(tiny_model_dir, tmp_path, identity_file):
    """Keys for a seconds-long training run of the tiny model on a few identity rows."""
    return {"model": str(tiny_model_dir), "dataset": [f"{identity_file}#16"], "output_dir": str(tmp_path / "out"),
            "add_output_dir_suffix": False, "max_steps": 4, "batch_size": 2, "gradient_accumulation_steps": 2,
            "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 2, "eval_steps": 2, "report_to": ["none"],
            "plot_loss": False, "model_name": ["Sparrow"], "model_author": ["Whetstone Labs"], "lora_target": ["ALL"]}
