"""A merged Hugging Face directory → one GGUF file for llama.cpp and Ollama.

The ``gguf`` package does the format: the writer, the HF → GGUF tensor-name maps and the quantizers. What is
written here is what llama.cpp expects on top of the format: the architecture's hyperparameter keys, the Q/K
row permutation of Llama-architecture models (llama.cpp applies rope to interleaved pairs, transformers to two
halves), which tensors stay f32, and a byte-level BPE vocabulary (tokenizer model ``gpt2``) with its merges,
pre-tokenizer name, special tokens and chat template.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .tokenizer import ExportError

log = logging.getLogger("hone")


@dataclass(frozen=True)
class Family:
    arch: str
    """The gguf.MODEL_ARCH member name."""
    permute_qk: bool
    """Llama-architecture rope in llama.cpp: q/k rows interleaved per head (the reverse of what transformers
    undoes when it reads the file)."""


FAMILIES: dict[str, Family] = {
    "llama": Family("LLAMA", True),
    "mistral": Family("LLAMA", True),
    "qwen2": Family("QWEN2", False),
    "qwen3": Family("QWEN3", False),
}
GGUF_TYPES = ("f32", "f16", "q8_0")

# tokenizer.json pre-tokenizer → llama.cpp's pre-tokenizer name (tokenizer.ggml.pre); each regex set is the one
# llama.cpp applies for that name.
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
                r"\s+(?!\S)|\s+")
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")


def pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str | None:
    """llama.cpp's name for this byte-level BPE pre-tokenizer, or None when it is not one llama.cpp knows."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        return {_QWEN2_SPLIT: "qwen2", _LLAMA3_SPLIT: "llama-bpe"}.get(regex)
    return None


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of each head from [first half | second half] to interleaved pairs (llama.cpp's rope layout)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def family_of(config: dict[str, Any], model_dir: Path) -> Family:
    mt = config.get("model_type", "")
    if mt not in FAMILIES:
        raise ExportError(f"{model_dir}: GGUF export does not map model type '{mt}' (supported: "
                          f"{', '.join(FAMILIES)}); the merged Hugging Face directory is still usable, and "
                          "llama.cpp's convert_hf_to_gguf.py may convert it")
    return FAMILIES[mt]


def write_gguf(model_dir: Path, out: Path, qtype: str) -> Path:
    """Write the model in ``model_dir`` as ``out`` (f32, f16 or q8_0), atomically (temp file, then rename)."""
    import gguf

    if qtype not in GGUF_TYPES:
        raise ExportError(f"unsupported GGUF type '{qtype}'; choose one of {', '.join(GGUF_TYPES)}")
    config = json.loads((model_dir / "config.json").read_text())
    fam = family_of(config, model_dir)
    arch = getattr(gguf.MODEL_ARCH, fam.arch)
    tmp = out.with_name(f".{out.name}.partial")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
    try:
        _hparams(writer, config, qtype, model_dir)
        _vocab(writer, model_dir, config)
        _tensors(writer, model_dir, config, arch, fam, qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("GGUF (%s) written to %s", qtype, out)
    return out


def _hparams(w: Any, c: dict[str, Any], qtype: str, model_dir: Path) -> None:
    import gguf

    n_head = c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // n_head
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    if rope.get("rope_type", "default") not in ("default", None):
        raise ExportError(f"{model_dir}: rope scaling '{rope['rope_type']}' is not written to GGUF yet; export the "
                          "Hugging Face directory and convert it with llama.cpp's convert_hf_to_gguf.py")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(model_dir.name)
    w.add_context_length(c.get("max_position_embeddings", 2048))
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(c.get("num_key_value_heads") or n_head)
    w.add_rope_dimension_count(head_dim)
    if head_dim != c["hidden_size"] // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_freq_base(float(rope.get("rope_theta") or c.get("rope_theta") or 10000.0))
    w.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-6)))
    w.add_vocab_size(c["vocab_size"])
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[qtype]
    w.add_file_type(ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _vocab(w: Any, model_dir: Path, config: dict[str, Any]) -> None:
    """Byte-level BPE vocabulary, padded to the embedding size, with merges, specials and chat template."""
    import gguf
    from transformers import AutoTokenizer

    tj_path = model_dir / "tokenizer.json"
    tj = json.loads(tj_path.read_text(encoding="utf-8")) if tj_path.is_file() else {}
    model = tj.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback") or (tj.get("decoder") or {}).get("type") != "ByteLevel":
        raise ExportError(f"{model_dir}: GGUF export writes byte-level BPE tokenizers (GPT-2 style tokenizer.json); "
                          "this tokenizer is not one. Convert the merged directory with llama.cpp's "
                          "convert_hf_to_gguf.py instead")
    pre = pre_tokenizer_name(tj)
    if pre is None:
        raise ExportError(f"{tj_path}: its pre-tokenizer is not one llama.cpp knows by name (gpt-2, smollm, qwen2, "
                          "llama-bpe), so llama.cpp would split text differently; convert the merged directory "
                          "with llama.cpp's convert_hf_to_gguf.py instead")
    tok = AutoTokenizer.from_pretrained(model_dir)
    by_id = {i: t for t, i in tok.get_vocab().items()}
    added = tok.added_tokens_decoder
    n_vocab = max(config["vocab_size"], len(by_id))
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n_vocab)
    special.chat_template = tok.chat_template or None
    special.add_special_token["bos"] = bool(tok("a")["input_ids"][:1] == [tok.bos_token_id]) \
        if tok.bos_token_id is not None else False
    special.add_to_gguf(w, quiet=True)
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    eos = gen.get("eos_token_id")
    stops = eos if isinstance(eos, list) else [eos] if eos is not None else []
    eot = next((s for s in stops if s != tok.eos_token_id), None)
    if eot is not None:
        w.add_eot_token_id(int(eot))


def _tensors(w: Any, model_dir: Path, c: dict[str, Any], arch: Any, fam: Family, qtype: str) -> None:
    import gguf
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(arch, c["num_hidden_layers"])
    n_head = c["num_attention_heads"]
    n_kv = c.get("num_key_value_heads") or n_head
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir} holds no .safetensors weights; export the merged directory first")
    for f in files:
        with safe_open(f, framework="pt") as st:
            for hf_name in st.keys():
                if hf_name == "lm_head.weight" and c.get("tie_word_embeddings"):
                    continue  # llama.cpp reuses token_embd when output.weight is absent
                if hf_name.endswith("rotary_emb.inv_freq"):
                    continue
                name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise ExportError(f"{f.name}: no GGUF name for tensor {hf_name} (model type "
                                      f"{c.get('model_type')}); this model's layout is not supported")
                data = st.get_tensor(hf_name).float().numpy()
                if fam.permute_qk and hf_name.endswith("q_proj.weight"):
                    data = permute(data, n_head)
                elif fam.permute_qk and hf_name.endswith("k_proj.weight"):
                    data = permute(data, n_kv)
                _add(w, name, data, qtype)


def _add(w: Any, name: str, data: np.ndarray, qtype: str) -> None:
    """Matrices in the chosen type; vectors (norms, biases) stay f32, as llama.cpp's kernels expect."""
    import gguf

    if data.ndim < 2 or qtype == "f32":
        w.add_tensor(name, data.astype(np.float32))
    elif qtype == "f16" or data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]:
        w.add_tensor(name, data.astype(np.float16))
    else:
        q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
