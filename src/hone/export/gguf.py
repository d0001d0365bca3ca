"""A merged Hugging Face directory → one GGUF file for llama.cpp and Ollama.

The ``gguf`` package does the format: the writer, the HF → GGUF tensor-name maps and the quantizers. What is
written here is what llama.cpp expects on top of the format: the architecture's hyperparameter keys, the Q/K
row permutation of Llama-architecture models (llama.cpp applies rope to interleaved pairs, transformers to two
halves), which tensors stay f32, and the vocabulary: byte-level BPE (tokenizer model ``gpt2``, with its merges
and pre-tokenizer name) or SentencePiece BPE with byte fallback (tokenizer model ``llama``, with piece scores
and the space-prefix flag), each with its special tokens and chat template.
"""
from __future__ import annotations

import json
import logging
import os
import re
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
    """The vocabulary, padded to the embedding size, with its specials, add-bos/eos flags and chat template."""
    import gguf
    from transformers import AutoTokenizer

    tj_path = model_dir / "tokenizer.json"
    if not tj_path.is_file():
        raise ExportError(f"{model_dir} has no tokenizer.json; save the tokenizer there with transformers, or convert "
                          "the merged directory with llama.cpp's convert_hf_to_gguf.py instead")
    tok = AutoTokenizer.from_pretrained(model_dir)
    # the pipeline transformers runs, which a tokenizer class may rebuild rather than take from tokenizer.json
    backend = getattr(tok, "backend_tokenizer", None)
    tj = json.loads(backend.to_str()) if backend is not None else {}
    model = tj.get("model", {})
    byte_level = (tj.get("decoder") or {}).get("type") == "ByteLevel"
    if model.get("type") != "BPE" or (not model.get("byte_fallback") and not byte_level):
        kind = model.get("type")
        found = ("not a fast tokenizer" if kind is None else f"a {kind} model" if kind != "BPE"
                 else "BPE with neither byte-level pieces nor byte fallback")
        raise ExportError(f"{tj_path}: GGUF export writes byte-level BPE (GPT-2 style) or SentencePiece BPE "
                          f"(Llama style, byte fallback) tokenizers, and this one is {found}; convert the merged "
                          "directory with llama.cpp's convert_hf_to_gguf.py instead")
    n_vocab = max(config["vocab_size"], len(tok.get_vocab()))
    if model.get("byte_fallback"):
        space_prefix = spm_space_prefix(tj)
        if space_prefix is None:
            raise ExportError(f"{tj_path}: its normalizer and pre-tokenizer are not the SentencePiece '▁' metaspace "
                              "llama.cpp reproduces (a Prepend+Replace normalizer, or a Metaspace pre-tokenizer "
                              "with split false), so llama.cpp would split text differently; convert the merged "
                              "directory with llama.cpp's convert_hf_to_gguf.py instead")
        tokens, scores, types = _spm_vocab(tok, tj, model_dir, n_vocab)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_add_space_prefix(space_prefix)
    else:
        pre = pre_tokenizer_name(tj)
        if pre is None:
            raise ExportError(f"{tj_path}: its pre-tokenizer is not one llama.cpp knows by name (gpt-2, smollm, "
                              "qwen2, llama-bpe), so llama.cpp would split text differently; convert the merged "
                              "directory with llama.cpp's convert_hf_to_gguf.py instead")
        tokens, types = _bpe_vocab(tok, n_vocab)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=not model.get("byte_fallback"), n_vocab=n_vocab)
    special.chat_template = tok.chat_template or None
    # what the tokenizer does, not what its config claims (a transformers 5 save keeps it in the post-processor)
    ids = tok("a")["input_ids"]
    special.add_special_token["bos"] = tok.bos_token_id is not None and ids[:1] == [tok.bos_token_id]
    special.add_special_token["eos"] = tok.eos_token_id is not None and ids[-1:] == [tok.eos_token_id]
    special.add_to_gguf(w, quiet=True)
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    eos = gen.get("eos_token_id")
    stops = eos if isinstance(eos, list) else [eos] if eos is not None else []
    eot = next((s for s in stops if s != tok.eos_token_id), None)
    if eot is not None:
        w.add_eot_token_id(int(eot))


def _bpe_vocab(tok: Any, n_vocab: int) -> tuple[list[str], list[int]]:
    """Byte-level BPE tokens in id order and their types (added tokens are control or user-defined)."""
    import gguf

    by_id = {i: t for t, i in tok.get_vocab().items()}
    added = tok.added_tokens_decoder
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
    return tokens, types


def spm_space_prefix(tokenizer_json: dict[str, Any]) -> bool | None:
    """Whether this SentencePiece-style tokenizer prepends '▁' (llama.cpp's add_space_prefix), or None when its
    normalizer/pre-tokenizer is not the plain '▁' metaspace that llama.cpp's SentencePiece tokenizer reproduces."""
    norm = tokenizer_json.get("normalizer") or {}
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if norm and not pre:  # legacy: Prepend("▁") + Replace(" ", "▁") on the whole text
        steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm]
        *head, last = steps or [{}]
        if last.get("type") != "Replace" or last.get("pattern") != {"String": " "} or last.get("content") != "▁":
            return None
        if not head:
            return False
        if len(head) == 1 and head[0].get("type") == "Prepend" and head[0].get("prepend") == "▁":
            return True
        return None
    if pre and not norm and pre.get("type") == "Metaspace" and pre.get("replacement") == "▁" \
            and pre.get("split") is False:
        scheme = pre.get("prepend_scheme", "always" if pre.get("add_prefix_space", True) else "never")
        # "first" is written as true: llama.cpp then prepends after special tokens in the text too, as "always"
        return {"first": True, "always": True, "never": False}.get(scheme)
    return None


_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


def _spm_vocab(tok: Any, tj: dict[str, Any], model_dir: Path, n_vocab: int
               ) -> tuple[list[str], list[float], list[int]]:
    """SentencePiece tokens in id order with scores and types.

    llama.cpp's SentencePiece tokenizer merges, again and again, the adjacent pair whose concatenation scores
    highest. The real piece scores come from tokenizer.model; without it they are derived from tokenizer.json's
    merges so that this reproduces the BPE merge order.
    """
    import gguf

    T = gguf.TokenType
    missing = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in tj["model"]["vocab"]]
    if missing:
        raise ExportError(f"{model_dir / 'tokenizer.json'}: byte fallback is on but byte tokens such as "
                          f"{missing[0]} are missing, and llama.cpp needs all 256; convert the merged directory "
                          "with llama.cpp's convert_hf_to_gguf.py instead")
    by_id = {i: t for t, i in tok.get_vocab().items()}
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(n_vocab)]
    scores: list[float]
    types: list[int]
    pieces = _sentencepiece_pieces(model_dir / "tokenizer.model", tokens)
    if pieces is not None:
        scores, types = pieces
        floor = min(scores, default=0.0) - 1.0  # added tokens and padding: below every piece
        scores += [floor - i for i in range(n_vocab - len(scores))]
    else:
        merges = [m.split(" ") if isinstance(m, str) else m for m in tj["model"].get("merges", [])]
        rank: dict[str, int] = {}
        for r, (a, b) in enumerate(merges):
            rank.setdefault(a + b, r)
        # a merge's product outranks everything merged later; tokens made by no merge (characters, bytes,
        # specials, padding) sit below all of them, and characters and bytes never compete at all, since no
        # pair of symbols concatenates to one
        scores = [-float(rank[t]) if t in rank else -float(len(merges) + i) for i, t in enumerate(tokens)]
        types = [T.BYTE if _BYTE_TOKEN.fullmatch(t) else T.NORMAL for t in tokens]
    types += [T.NORMAL] * (n_vocab - len(types))
    for i in range(n_vocab):
        if i not in by_id:
            types[i] = T.UNUSED
    for i, added in tok.added_tokens_decoder.items():
        types[i] = T.CONTROL if added.special else T.USER_DEFINED
    if tok.unk_token_id is not None:
        types[tok.unk_token_id] = T.UNKNOWN
    return tokens, scores, types


def _sentencepiece_pieces(path: Path, tokens: list[str]) -> tuple[list[float], list[int]] | None:
    """Scores and types of the pieces in tokenizer.model, or None when it is absent, sentencepiece is not
    installed, or its pieces are not the tokenizer's."""
    import gguf

    if not path.is_file():
        return None
    try:
        import sentencepiece
    except ImportError:
        log.info("sentencepiece is not installed; GGUF token scores are derived from tokenizer.json's merges")
        return None
    try:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        log.warning("%s is unreadable (%s); GGUF token scores are derived from tokenizer.json's merges", path, e)
        return None
    n = sp.vocab_size()
    if n > len(tokens) or any(sp.id_to_piece(i) != tokens[i] for i in range(n)):
        log.warning("%s does not hold the tokenizer's pieces; GGUF token scores are derived from its merges", path)
        return None
    T = gguf.TokenType
    types = [T.UNKNOWN if sp.is_unknown(i) else T.CONTROL if sp.is_control(i) else T.UNUSED if sp.is_unused(i)
             else T.BYTE if sp.is_byte(i) else T.NORMAL for i in range(n)]
    return [sp.get_score(i) for i in range(n)], types


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
