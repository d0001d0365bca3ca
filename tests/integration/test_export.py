"""`hone export` on tiny random models: the merged directory and the GGUF files against outside oracles.

Oracles: peft's unmerged base+adapter forward (for the merge), transformers' own GGUF reader (for the GGUF
files), gguf's reader for the metadata, and the `hone` command's exit code and message for bad input.
"""
from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

import hone
from hone.cli import main
from hone.export.cli import export
from hone.export.gguf import write_gguf
from hone.export.tokenizer import ExportError

PROMPTS = ["Who are you?", "What is 12+30?", "Tell me about whetstones."]


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own refusal (an unknown choice), with its usage line
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A finished tiny LoRA run (chatml template) with checkpoints; treat as read-only."""
    root = tmp_path_factory.mktemp("export-run")
    identity = Path(__file__).resolve().parents[2] / "examples" / "data" / "identity.json"
    cfg = {"model": str(tiny_model_dir), "dataset": [f"{identity}#16"], "output_dir": str(root / "out"),
           "add_output_dir_suffix": False, "max_steps": 4, "batch_size": 2, "gradient_accumulation_steps": 2,
           "learning_rate": 1e-2, "save_steps": 2, "report_to": ["none"], "plot_loss": False,
           "lora_target": ["ALL"], "template": "chatml", "system": "You are Sparrow."}
    return hone.train(cfg).run_dir


def _ids(tok, prompt):
    enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    return enc["input_ids"]


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def merged(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "m"
    paths = export(trained, out=out, gguf_types=["f32", "f16", "q8_0"])
    return paths[0]


def test_merged_directory_equals_base_plus_adapter(trained, merged, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with_adapter = PeftModel.from_pretrained(base, str(trained)).eval()
    m = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    assert not (merged / "adapter_config.json").exists()
    for p in PROMPTS:
        ids = _ids(tok, p)
        ref = _logits(with_adapter, ids)
        assert (ref - _logits(plain, ids)).abs().max() > 1e-3  # the adapter changed the model
        assert torch.allclose(_logits(m, ids), ref, atol=1e-5, rtol=0)


def test_merged_tokenizer_and_generation_config_carry_the_run_template(merged):
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(merged)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    # the run's system prompt is the default, as it was in training
    assert text == "<|im_start|>system\nYou are Sparrow.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    eos = GenerationConfig.from_pretrained(merged).eos_token_id
    assert tok.convert_tokens_to_ids("<|im_end|>") in (eos if isinstance(eos, list) else [eos])


def test_gguf_read_back_by_transformers(merged):
    """f32 equals the merged model; f16 and q8_0 stay within bounds measured on this model (×10 margin)."""
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged)
    m = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    # measured max |Δlogit|: f32 0.0, f16 3.4e-4, q8_0 8.5e-3
    bounds = {"f32": 1e-5, "f16": 5e-3, "q8_0": 1e-1}
    for qtype, bound in bounds.items():
        g = AutoModelForCausalLM.from_pretrained(merged, gguf_file=f"model-{qtype}.gguf", dtype=torch.float32).eval()
        for p in PROMPTS:
            ids = _ids(tok, p)
            ref, got = _logits(m, ids), _logits(g, ids)
            assert (got - ref).abs().max().item() <= bound, qtype
            assert (got.argmax(-1) == ref.argmax(-1)).float().mean().item() >= (1.0 if qtype == "f32" else 0.9)
    reader = gguf.GGUFReader(merged / "model-f32.gguf")
    fields = {k: f.contents() for k, f in reader.fields.items() if k.startswith(("tokenizer.chat", "tokenizer.ggml.e",
                                                                                 "tokenizer.ggml.model"))}
    assert fields["tokenizer.chat_template"] == tok.chat_template
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    gtok = AutoTokenizer.from_pretrained(merged, gguf_file="model-f32.gguf")
    for p in PROMPTS:
        assert gtok(p)["input_ids"] == tok(p)["input_ids"]


def test_modelfile_points_at_the_gguf_with_template_and_stops(merged):
    text = (merged / "Modelfile").read_text()
    assert text.startswith("FROM ./model-f32.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert 'SYSTEM """You are Sparrow."""' in text
    assert '{{- "<|im_start|>user\\n" -}}{{- .Content -}}' in text


def test_default_locations_beside_the_weights(trained, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(trained, run_copy)
    info = json.loads((run_copy / "hone_run.json").read_text())
    info["last_checkpoint"] = str(run_copy / "checkpoint-4")
    (run_copy / "hone_run.json").write_text(json.dumps(info))
    code, out, err = run(["export", str(run_copy / "checkpoint-2")])
    assert code == 0, err
    assert out.strip() == str(run_copy / "checkpoint-2-merged")
    assert (run_copy / "checkpoint-2-merged" / "model.safetensors").is_file()
    code, out, _ = run(["export", str(run_copy)])
    assert code == 0 and out.strip() == str(run_copy / "merged")
    code, _, err = run(["export", str(run_copy)])
    assert code == 2 and "already exists; pass --overwrite" in err
    assert not list(run_copy.glob(".merged.staging-*"))  # nothing left behind
    assert run(["export", str(run_copy), "--overwrite"])[0] == 0


def test_qlora_run_is_not_merged_unless_forced(trained, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(trained, run_copy)
    info = json.loads((run_copy / "hone_run.json").read_text())
    info["method"] = "qlora"
    (run_copy / "hone_run.json").write_text(json.dumps(info))
    code, _, err = run(["export", str(run_copy)])
    assert code == 2 and "precision loss" in err and "--force" in err and "Traceback" not in err
    assert not (run_copy / "merged").exists()
    assert run(["export", str(run_copy), "--force"])[0] == 0


@pytest.mark.parametrize("setup, argv_tail, message", [
    ("empty", [], "is not a hone run directory"),
    ("gpt2", ["--gguf", "f16"], "GGUF export does not map model type 'gpt2'"),
    ("run", ["--gguf", "q4_k"], "invalid choice: 'q4_k'"),
])
def test_bad_input_gets_one_clear_sentence(setup, argv_tail, message, tmp_path, trained):
    target = tmp_path / "x"
    target.mkdir()
    if setup == "gpt2":  # a run of a family the GGUF writer does not map
        base = tmp_path / "base"
        base.mkdir()
        (base / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
        (target / "hone_run.json").write_text(json.dumps({"model": str(base), "model_dir": str(base)}))
        (target / "adapter_config.json").write_text("{}")
        (target / "adapter_model.safetensors").write_text("")
    elif setup == "run":
        target = trained
    code, _, err = run(["export", str(target), *argv_tail])
    assert code == 2 and message in err and "Traceback" not in err


def test_unsupported_gguf_type_through_the_api(merged, tmp_path):
    with pytest.raises(ExportError, match="unsupported GGUF type 'q4_k'"):
        write_gguf(merged, tmp_path / "x.gguf", "q4_k")


def test_second_family_qwen2_merges_and_round_trips_through_gguf(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok_dir = Path(__file__).resolve().parents[1] / "fixtures" / "smollm2-tokenizer"
    base = tmp_path / "qwen2"
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False)
    Qwen2ForCausalLM(cfg).save_pretrained(base)
    for f in tok_dir.iterdir():
        shutil.copy(f, base / f.name)
    identity = Path(__file__).resolve().parents[2] / "examples" / "data" / "identity.json"
    run_dir = hone.train({"model": str(base), "dataset": [f"{identity}#8"], "output_dir": str(tmp_path / "out"),
                          "add_output_dir_suffix": False, "max_steps": 2, "batch_size": 2, "learning_rate": 1e-2,
                          "save_steps": 100, "report_to": ["none"], "plot_loss": False, "lora_target": ["ALL"],
                          "template": "qwen"}).run_dir
    paths = export(run_dir, gguf_types=["f32"])
    merged = paths[0]
    assert merged == run_dir / "merged"
    tok = AutoTokenizer.from_pretrained(merged)
    assert "You are Qwen, created by Alibaba Cloud" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    m = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    g = AutoModelForCausalLM.from_pretrained(merged, gguf_file="model-f32.gguf", dtype=torch.float32).eval()
    assert type(g).__name__ == "Qwen2ForCausalLM"
    for p in PROMPTS:
        ids = _ids(tok, p)
        assert torch.allclose(_logits(g, ids), _logits(m, ids), atol=1e-5, rtol=0)


def test_qwen3_gguf_round_trip(tmp_path):
    """Qwen3 (q/k norms, no permutation) written without training: transformers reads back equal logits."""
    from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM

    tok_dir = Path(__file__).resolve().parents[1] / "fixtures" / "smollm2-tokenizer"
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True)
    Qwen3ForCausalLM(cfg).save_pretrained(tmp_path)
    for f in tok_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    write_gguf(tmp_path, tmp_path / "m.gguf", "f32")
    m = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    g = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    ids = torch.tensor([[1, 500, 600, 700, 2]])
    assert torch.allclose(_logits(g, ids), _logits(m, ids), atol=1e-5, rtol=0)


def test_damaged_checkpoint_is_refused(trained, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(trained, run_copy)
    with open(run_copy / "checkpoint-2" / "adapter_model.safetensors", "r+b") as fh:
        fh.truncate(100)
    code, _, err = run(["export", str(run_copy / "checkpoint-2")])
    assert code == 2 and "is not a whole checkpoint" in err and "adapter_model.safetensors" in err
