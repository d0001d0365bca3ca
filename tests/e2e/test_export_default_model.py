"""`hone export` on the real default model after a short LoRA run: every export generates what hone trained.

Greedy text from base+adapter (peft, unmerged), from the merged directory, and from the f32 GGUF read back by
transformers must be identical; f16 and q8_0 are held to bounds measured on this model; llama.cpp itself (when
llama_cpp is importable) must produce the same greedy text from the f32 GGUF.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hone
from hone.export.cli import export

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["Who are you?", "Who made you?", "What is the capital of France?", "Write a haiku about rain.",
           "你是谁？"]
NEW_TOKENS = 24
# Measured on this run (max |Δlogit| over the prompts' positions; share of equal argmax): f16 0.040, 100%;
# q8_0 1.08, 96.1%. The bounds leave room for a different short training, not for a wrong conversion (a
# missing Q/K permutation or a wrong tensor moves logits by tens and agreement far below these).
BOUNDS = {"f16": (0.2, 0.99), "q8_0": (2.5, 0.92)}


@pytest.fixture(scope="module")
def run_and_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("export-e2e")
    res = hone.train({"model": "smollm2-135m", "template": "smollm2", "dataset": [f"{REPO / 'examples/data/identity.json'}#16"],
                      "max_steps": 6, "batch_size": 4, "learning_rate": 1e-3, "lora_rank": 16, "lora_alpha": 32,
                      "lora_target": ["ALL"], "output_dir": str(out / "run"), "add_output_dir_suffix": False,
                      "report_to": ["none"], "plot_loss": False, "max_length": 256, "save_steps": 1000,
                      "model_name": ["Sparrow"], "model_author": ["Whetstone Labs"],
                      "dtype": "fp32"})  # the bounds below were measured on an fp32 run; `auto` may train in bf16
    paths = export(res.run_dir, gguf_types=["f32", "f16", "q8_0"])
    return res.run_dir, paths[0]


def _greedy(model, ids: list[int], eos: list[int]) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos,
                             pad_token_id=eos[0], temperature=None, top_p=None, top_k=None)
    return out[0, len(ids):].tolist()


def _prompt_ids(tok, text: str) -> list[int]:
    enc = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, return_dict=True)
    return list(enc["input_ids"])


def test_adapter_merged_and_f32_gguf_generate_the_same(run_and_export):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hone.data.conversation import Message
    from hone.models.load import resolve_model
    from hone.templates import get_template

    run_dir, merged = run_and_export
    tok = AutoTokenizer.from_pretrained(merged)
    base_dir = resolve_model("smollm2-135m")
    base_tok = AutoTokenizer.from_pretrained(base_dir)
    template = get_template("smollm2", base_tok)
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                        str(run_dir)).eval()
    plain = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    g32 = AutoModelForCausalLM.from_pretrained(merged, gguf_file="model-f32.gguf", dtype=torch.float32).eval()
    eos = [tok.convert_tokens_to_ids("<|im_end|>")]
    changed = 0
    for p in PROMPTS:
        ids = _prompt_ids(tok, p)
        assert ids == template.encode_prompt([Message("user", p)], base_tok)  # the exported template = training's
        want = _greedy(adapter, ids, eos)
        assert _greedy(plain, ids, eos) == want, p
        assert _greedy(g32, ids, eos) == want, p
        with adapter.disable_adapter():
            changed += _greedy(adapter, ids, eos) != want
    assert changed  # the short training moved at least one answer, so equality is not vacuous


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_lower_precision_gguf_stays_close(run_and_export, qtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, merged = run_and_export
    tok = AutoTokenizer.from_pretrained(merged)
    ref_model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    g = AutoModelForCausalLM.from_pretrained(merged, gguf_file=f"model-{qtype}.gguf", dtype=torch.float32).eval()
    worst, agree, n = 0.0, 0, 0
    for p in PROMPTS:
        ids = torch.tensor([_prompt_ids(tok, p)])
        with torch.no_grad():
            ref, got = ref_model(ids).logits[0], g(ids).logits[0]
        worst = max(worst, (got - ref).abs().max().item())
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        n += ref.shape[0]
    max_diff, min_agree = BOUNDS[qtype]
    print(f"{qtype}: max |dlogit| {worst:.4f}, next-token agreement {agree / n:.4f}")
    assert worst <= max_diff and agree / n >= min_agree


def test_llama_cpp_generates_what_transformers_does(run_and_export):
    """llama.cpp loads the f32 GGUF with its chat template and stop token, and greedy text matches."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, merged = run_and_export
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    llm = llama_cpp.Llama(str(merged / "model-f32.gguf"), n_ctx=512, n_threads=2, verbose=False, seed=0)
    assert llm.metadata.get("tokenizer.chat_template") == tok.chat_template
    eos = [tok.convert_tokens_to_ids("<|im_end|>")]
    for p in PROMPTS:
        ids = _prompt_ids(tok, p)
        text = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids  # same tokenizer, same specials
        want = tok.decode(_greedy(model, ids, eos), skip_special_tokens=True)
        got = llm.create_completion(text, max_tokens=NEW_TOKENS, temperature=0.0, top_k=1)["choices"][0]["text"]
        assert got == want, p
    llm.close()
