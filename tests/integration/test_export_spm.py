"""GGUF export of SentencePiece (Llama-2 / Mistral style) tokenizers, against outside oracles.

Oracles: transformers' own GGUF reader (model and tokenizer), llama.cpp through llama-cpp-python (tokenizer
and forward pass; skipped where it is not installed), gguf's reader for the metadata and sentencepiece for the
real piece scores. The tokenizer is the tiny one in tests/fixtures/spm-tokenizer (see its README.md).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hone.export.gguf import write_gguf
from hone.export.tokenizer import ExportError

SPM_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "spm-tokenizer"
ADDED_SPECIAL, ADDED_PLAIN = "<|end|>", "<think>"
# English, Chinese (with characters outside the 1000 pieces: byte fallback), emoji and rare scripts (bytes),
# runs of spaces, tabs and newlines, digits, a literal byte-token spelling, nothing at all
TEXTS = ["Hello world, how are you?", "我是一个人工智能助手，由开发者训练。", "今天天气很好，我们去爬山吧！",
         "emoji 🤖 ✓ naïve Ωμέγα 𝔘 ﷽", "Convert 5 km to miles.", "multiple   spaces\tand\t\ttabs", "a\n\nb\n",
         "\nnewline first", "trailing spaces  ", "12345 + 678 = 13023?", "x <0x41> y", ""]
# sentencepiece and llama.cpp prepend '▁' even to text that starts with a space; transformers' Metaspace
# (prepend_scheme "first") does not, so these differ by exactly that one '▁'
LEADING = ["  two leading spaces", " one leading space", "   三个空格"]


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def _model_dir(path: Path, *, keep_model_file: bool) -> Path:
    """A tiny random Llama with the fixture tokenizer plus one added special and one added plain token, its
    embeddings rounded up to 1024 rows (so the GGUF vocabulary is padded)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(SPM_DIR)
    tok.add_special_tokens({"additional_special_tokens": [ADDED_SPECIAL]})
    tok.add_tokens([ADDED_PLAIN])
    tok.save_pretrained(path)
    if keep_model_file:
        shutil.copy(SPM_DIR / "tokenizer.model", path / "tokenizer.model")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["tokenizer.model", "tokenizer.json"])
def exported(request, tmp_path_factory) -> Path:
    """The tiny model written as m.gguf, scored from tokenizer.model or (without it) from tokenizer.json."""
    path = _model_dir(tmp_path_factory.mktemp("spm"), keep_model_file=request.param == "tokenizer.model")
    write_gguf(path, path / "m.gguf", "f32")
    return path


def _fields(path: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}


def test_metadata_is_a_sentencepiece_vocabulary(exported):
    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(exported)
    f = _fields(exported / "m.gguf")
    tokens, types, scores = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"], f["tokenizer.ggml.scores"]
    assert f["tokenizer.ggml.model"] == "llama" and "tokenizer.ggml.merges" not in f
    assert len(tokens) == len(types) == len(scores) == 1024
    T = gguf.TokenType
    kind = {t: types[i] for i, t in enumerate(tokens)}
    assert kind["<unk>"] == T.UNKNOWN and kind["<s>"] == T.CONTROL and kind["</s>"] == T.CONTROL
    assert kind["<0x41>"] == T.BYTE and kind["<0x00>"] == T.BYTE and kind["▁the"] == T.NORMAL
    assert kind[ADDED_SPECIAL] == T.CONTROL and kind[ADDED_PLAIN] == T.USER_DEFINED
    assert tokens[1023] == "[PAD1023]" and kind["[PAD1023]"] == T.UNUSED
    assert tokens[:len(tok)] == tok.convert_ids_to_tokens(list(range(len(tok))))
    assert f["tokenizer.ggml.add_space_prefix"] is True
    assert f["tokenizer.ggml.add_bos_token"] is True and f["tokenizer.ggml.add_eos_token"] is False
    assert (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.eos_token_id"],
            f["tokenizer.ggml.unknown_token_id"]) == (1, 2, 0)
    assert f["tokenizer.chat_template"] == tok.chat_template


def test_real_scores_come_from_tokenizer_model(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    path = _model_dir(tmp_path, keep_model_file=True)
    write_gguf(path, path / "m.gguf", "f32")
    sp = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))
    scores = _fields(path / "m.gguf")["tokenizer.ggml.scores"]
    assert scores[:sp.vocab_size()] == [sp.get_score(i) for i in range(sp.vocab_size())]
    assert max(scores[sp.vocab_size():]) < min(scores[:sp.vocab_size()])


def test_transformers_reads_back_equal_logits_and_token_ids(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(exported)
    gtok = AutoTokenizer.from_pretrained(exported, gguf_file="m.gguf")
    for text in TEXTS + LEADING:
        assert gtok(text)["input_ids"] == tok(text)["input_ids"], text
    m = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    g = AutoModelForCausalLM.from_pretrained(exported, gguf_file="m.gguf", dtype=torch.float32).eval()
    for text in TEXTS[:4]:
        ids = tok(text)["input_ids"]
        assert torch.allclose(_logits(g, ids), _logits(m, ids), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip("llama_cpp")


def _llama(llama_cpp, path: Path, **kw):
    return llama_cpp.Llama(str(path), verbose=False, n_threads=1, **kw)


def test_llama_cpp_tokenizes_like_transformers(exported, llama_cpp):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(exported)
    lm = _llama(llama_cpp, exported / "m.gguf", vocab_only=True)
    try:
        for text in TEXTS:
            ids = lm.tokenize(text.encode(), add_bos=True, special=False)
            assert ids == tok(text)["input_ids"], text
            assert lm.tokenize(text.encode(), add_bos=False, special=False) == tok(text, add_special_tokens=False)[
                "input_ids"], text
            assert lm.detokenize(ids) == text.encode(), text
        for text in LEADING:  # one '▁' more than transformers, as sentencepiece itself does
            ids = lm.tokenize(text.encode(), add_bos=True, special=False)
            assert ids == tok(" " + text)["input_ids"] != tok(text)["input_ids"], text
            assert lm.detokenize(ids) == text.encode(), text
    finally:
        lm.close()


@pytest.fixture(scope="module")
def many_texts() -> list[str]:
    """Every line of some fixture data and 2000 seeded random strings of mixed scripts, spaces and bytes."""
    import random

    data = Path(__file__).resolve().parents[1] / "fixtures" / "data"
    texts = [line for f in ("alpaca_en.json", "alpaca_zh.json", "c4.json", "messages.json")
             for line in (data / f).read_text(encoding="utf-8").splitlines()]
    rnd = random.Random(0)
    alphabet = "abcdeéñ的一是了我不人在他有这个上们来到时大地为子中你说    \n\t🤖✓Ω日本語한국어0123456789.,!?<>▁"
    return texts + ["".join(rnd.choices(alphabet, k=rnd.randint(1, 40))) for _ in range(2000)]


def test_transformers_gguf_tokenizer_agrees_on_many_texts(exported, many_texts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(exported)
    gtok = AutoTokenizer.from_pretrained(exported, gguf_file="m.gguf")
    for text in many_texts:
        assert gtok(text)["input_ids"] == tok(text)["input_ids"], text


def test_llama_cpp_agrees_on_many_texts(exported, many_texts, llama_cpp):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(exported)
    lm = _llama(llama_cpp, exported / "m.gguf", vocab_only=True)
    try:
        for text in many_texts:
            # a leading space (or a literal '▁') gets sentencepiece's extra '▁', as in LEADING
            want = tok((" " if text.startswith((" ", "▁")) else "") + text)["input_ids"]
            assert lm.tokenize(text.encode(), add_bos=True, special=False) == want, text
    finally:
        lm.close()


def test_llama_cpp_forward_equals_transformers(exported, llama_cpp):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(exported)
    m = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    ids = tok(TEXTS[0] + " " + TEXTS[1])["input_ids"]
    # f32 KV cache (type 0), so the only difference left is summation order: measured max |Δlogit| 3.3e-7
    lm = _llama(llama_cpp, exported / "m.gguf", n_ctx=64, n_batch=64, logits_all=True, type_k=0, type_v=0)
    try:
        lm.eval(ids)
        got = torch.from_numpy(np.array(lm.scores[:len(ids)]))
    finally:
        lm.close()
    assert torch.allclose(got, _logits(m, ids), atol=1e-4, rtol=0)


@pytest.mark.parametrize("form", ["legacy", "never"])
def test_llama_cpp_follows_the_space_prefix_form(form, tmp_path, llama_cpp):
    """Legacy Prepend+Replace normalizer (a '▁' before every text, as sentencepiece) and prepend_scheme never
    (none): llama.cpp's add_space_prefix reproduces both exactly, leading spaces and chat prompts included."""
    from transformers import AutoTokenizer

    path = _model_dir(tmp_path, keep_model_file=False)
    tj = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    if form == "legacy":
        tj["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        tj["pre_tokenizer"] = None
    else:
        tj["pre_tokenizer"]["prepend_scheme"] = "never"
    (path / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    config = json.loads((path / "tokenizer_config.json").read_text())
    # the generic class runs tokenizer.json as written; LlamaTokenizer would rebuild a Metaspace of its own
    config["tokenizer_class"] = "TokenizersBackend"
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    write_gguf(path, path / "m.gguf", "f32")
    assert _fields(path / "m.gguf")["tokenizer.ggml.add_space_prefix"] is (form == "legacy")
    tok = AutoTokenizer.from_pretrained(path)
    lm = _llama(llama_cpp, path / "m.gguf", vocab_only=True)
    try:
        for text in TEXTS + LEADING:
            assert lm.tokenize(text.encode(), add_bos=True, special=False) == tok(text)["input_ids"], text
        if form == "legacy":
            chat = tok.apply_chat_template([{"role": "user", "content": "Hi there"},
                                            {"role": "assistant", "content": "Hello!"}], tokenize=False)
            assert lm.tokenize(chat.encode(), add_bos=False, special=True) == tok(chat, add_special_tokens=False)[
                "input_ids"]
    finally:
        lm.close()


def _wordpiece(path: Path) -> None:
    from tokenizers import Tokenizer, models

    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "##s": 3}
    Tokenizer(models.WordPiece(vocab, unk_token="[UNK]")).save(str(path / "tokenizer.json"))


def _unigram(path: Path) -> None:
    from tokenizers import Tokenizer, models

    Tokenizer(models.Unigram([("<unk>", 0.0), ("▁a", -1.0), ("a", -2.0)], unk_id=0)).save(
        str(path / "tokenizer.json"))


def _split_metaspace(path: Path) -> None:
    tj = json.loads((SPM_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    tj["pre_tokenizer"]["split"] = True
    (path / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize("make, message", [
    (_wordpiece, "this one is a WordPiece model"),
    (_unigram, "this one is a Unigram model"),
    (_split_metaspace, "are not the SentencePiece '▁' metaspace llama.cpp reproduces"),
])
def test_unsupported_tokenizer_is_refused_in_one_sentence(make, message, tmp_path):
    path = _model_dir(tmp_path, keep_model_file=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (path / name).unlink()
    make(path)
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend"}))
    with pytest.raises(ExportError, match=message) as err:
        write_gguf(path, path / "m.gguf", "f32")
    assert str(path / "tokenizer.json") in str(err.value) and "convert_hf_to_gguf.py" in str(err.value)
    assert not list(path.glob("*.gguf*")) and not list(path.glob(".m.gguf*"))
