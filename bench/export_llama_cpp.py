"""Run an exported GGUF in llama.cpp next to the merged model in transformers, and compare greedy text.

    pip install llama-cpp-python          # builds llama.cpp from source where no wheel fits (minutes)
    hone export output/quickstart --gguf f32 q8_0
    python bench/export_llama_cpp.py output/quickstart/merged model-f32.gguf "Who are you?" "你是谁？"

The prompt is rendered with the exported tokenizer's chat template (the one the run trained with) and given to
both as text; llama.cpp stops at the GGUF's end-of-generation tokens.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged, gguf_name, prompts = Path(argv[0]), argv[1], argv[2:] or ["Who are you?"]
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    llm = Llama(str(merged / gguf_name), n_ctx=1024, verbose=False, seed=0)
    eos = model.generation_config.eos_token_id
    for p in prompts:
        text = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=64, do_sample=False, eos_token_id=eos)
        hf = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        t1 = time.perf_counter()
        cpp = llm.create_completion(text, max_tokens=64, temperature=0.0, top_k=1)["choices"][0]["text"]
        t2 = time.perf_counter()
        print(f"### {p}\ntransformers ({t1 - t0:.1f}s): {hf!r}\nllama.cpp    ({t2 - t1:.1f}s): {cpp!r}\n"
              f"same: {hf == cpp}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
