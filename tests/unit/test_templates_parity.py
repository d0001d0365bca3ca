"""Every built-in renders what its family's published template renders, and `auto` trains on every one.

The published templates are stored in tests/fixtures/chat_templates (provenance in the README there). Each is
loaded into a copy of the SmolLM2 tokenizer with that model's bos/eos and marker tokens added as special
tokens, and rendered through ``tokenizer.apply_chat_template`` (transformers' sandboxed Jinja): that is the
oracle. Checked per reply: the generation prompt (string and ids), the reply as the template renders it when
it is generated (string, and the ids that carry loss), and, where the template renders history unchanged,
the whole conversation (string and ids). Ids are on this vocabulary, not each model's own.
"""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import pytest

from hone.data.conversation import Conversation, Message, ToolCall
from hone.data.encode import IGNORE_INDEX, encode
from hone.templates import get_template

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TPL_DIR = FIXTURES / "chat_templates"
SHARED_GLAIVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "glaive_toolcall_en_demo.json"

_L3 = ("<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>")
_PHI = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
_DS = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>")
# stored template -> (file, bos, eos, extra special tokens, accepts a system message)
REAL: dict[str, tuple[str, str | None, str | None, tuple[str, ...], bool]] = {
    "chatml": ("chatml.jinja", None, None, (), True),
    "smollm2": ("../smollm2-tokenizer/chat_template.jinja", None, None, (), True),
    "qwen": ("qwen2.5.jinja", None, None, (), True),
    "qwen3": ("qwen3.jinja", None, None, (), True),
    "yi": ("yi.jinja", "<|startoftext|>", "<|im_end|>", (), True),
    "internlm2": ("internlm2.jinja", "<s>", "</s>", (), True),
    "llama2": ("llama2.jinja", "<s>", "</s>", (), True),
    "llama3": ("llama3.jinja", "<|begin_of_text|>", "<|eot_id|>", _L3, True),
    "llama3.1": ("llama3.1.jinja", "<|begin_of_text|>", "<|eot_id|>", _L3, True),
    "llama3.2": ("llama3.2.jinja", "<|begin_of_text|>", "<|eot_id|>", _L3, True),
    "mistral-v1": ("mistral-v1.jinja", "<s>", "</s>", (), True),
    "mistral-v3": ("mistral-v3.jinja", "<s>", "</s>", (), True),
    "mistral-nemo": ("mistral-nemo.jinja", "<s>", "</s>", (), True),
    "gemma": ("gemma.jinja", "<bos>", "<eos>", ("<start_of_turn>", "<end_of_turn>"), False),
    "gemma2": ("gemma2.jinja", "<bos>", "<eos>", ("<start_of_turn>", "<end_of_turn>"), False),
    "phi3-mini": ("phi3-mini.jinja", "<s>", "<|endoftext|>", _PHI, True),
    "phi3.5": ("phi3.5.jinja", "<s>", "<|endoftext|>", _PHI, True),
    "deepseek": ("deepseek.jinja", _DS[0], _DS[1], (), True),
    "deepseek-r1-distill": ("deepseek-r1-distill.jinja", _DS[0], _DS[1], ("<｜User｜>", "<｜Assistant｜>"), True),
    "chatglm3": ("chatglm3.jinja", None, "</s>", ("[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>"),
                 True),
    "minicpm": ("minicpm.jinja", None, "</s>", ("<用户>", "<AI>"), True),
}
# built-in -> the stored templates it reproduces
FAMILY = {"chatml": ["chatml"], "smollm2": ["smollm2"], "qwen": ["qwen"], "qwen3": ["qwen3"], "yi": ["yi"],
          "internlm2": ["internlm2"], "llama2": ["llama2"], "llama3": ["llama3"], "llama3_1": ["llama3.1"],
          "llama3_2": ["llama3.2"], "mistral": ["mistral-v1"], "mistral_v3": ["mistral-v3"],
          "mistral_nemo": ["mistral-nemo"], "gemma": ["gemma", "gemma2"], "phi3": ["phi3-mini"],
          "phi3_5": ["phi3.5"], "deepseek": ["deepseek"], "chatglm3": ["chatglm3"], "minicpm": ["minicpm"]}
# formats whose template writes no end after a reply: the built-in ends each reply with eos so it learns to stop
EOS_ADDED = {"chatglm3", "minicpm"}

SYSTEM = Message("system", "You are a terse assistant.")
T1 = [Message("user", "Hello, who are you?"), Message("assistant", "I am a helpful bot.")]
T2 = [Message("user", "What is 2+2? Answer in one word."), Message("assistant", "Four.")]
T3 = [Message("user", "And 3+3?"), Message("assistant", "Six.")]
SPACED = [Message("user", "  padded question \n"), Message("assistant", " padded answer  \n"),
          Message("user", "\tsecond "), Message("assistant", "  last ")]
CONVERSATIONS = {"one": T1, "one_system": [SYSTEM] + T1, "three": T1 + T2 + T3, "three_system": [SYSTEM] + T1 + T2 + T3,
                 "spaced": SPACED, "spaced_system": [Message("system", " padded system \n")] + SPACED,
                 "empty_system": [Message("system", "")] + T1}


@lru_cache(maxsize=None)
def real_tokenizer(name: str):
    """The SmolLM2 tokenizer carrying the stored template ``name`` and that model's special tokens."""
    from transformers import AutoTokenizer

    fixture, bos, eos, extra, _ = REAL[name]
    tok = AutoTokenizer.from_pretrained(FIXTURES / "smollm2-tokenizer")
    tok.add_special_tokens({k: v for k, v in (("bos_token", bos), ("eos_token", eos)) if v})
    if extra:
        tok.add_tokens(list(extra), special_tokens=True)
    tok.chat_template = (TPL_DIR / fixture).read_text(encoding="utf-8")
    return tok


def dicts(messages):
    from hone.templates.hf import message_dict

    return [message_dict(m) for m in messages]


def real_text(name: str, messages, gen: bool = False, tools=None) -> str:
    return real_tokenizer(name).apply_chat_template(dicts(messages), tools=tools, tokenize=False,
                                                    add_generation_prompt=gen)


def real_ids(name: str, messages, gen: bool = False, tools=None) -> list[int]:
    out = real_tokenizer(name).apply_chat_template(dicts(messages), tools=tools, tokenize=True,
                                                   add_generation_prompt=gen)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def real_turn(name: str, messages, i: int, tools=None) -> tuple[str, str]:
    """(prompt, reply) at message ``i`` as the stored template renders them when that reply is generated.

    Text the template writes only after a conversation's last message (Phi-3's end-of-text) is no reply.
    """
    before, upto = real_text(name, messages[:i], True, tools), real_text(name, messages[:i + 1], False, tools)
    ongoing = real_text(name, messages[:i + 1], True, tools)
    end = next((k for k, (a, b) in enumerate(zip(upto, ongoing)) if a != b), min(len(upto), len(ongoing)))
    if "<" in upto[:end] and ">" not in upto[upto.rindex("<", 0, end):end]:
        end = upto.rindex("<", 0, end)  # "<|endoftext|>" and "<|assistant|>" part after "<|"
    upto = upto[:end]
    if upto.startswith(before):
        return before, upto[len(before):]
    history = real_text(name, messages[:i], False, tools)
    if upto.startswith(history):  # the generation prompt opens a block a finished reply lacks (R1's <think>)
        k = len(history)
        while k < len(upto) and k < len(before) and before[k] == upto[k]:
            k += 1
        return upto[:k], upto[k:]
    # the finished rendering moved the system prompt away: the reply follows the last user turn's end
    end = before[before.rindex(messages[i - 1].content):]
    return before, upto[upto.rindex(end) + len(end):]


def real_reply(name: str, messages, i: int) -> str:
    return real_turn(name, messages, i)[1]


def renders_history_unchanged(name: str, messages) -> bool:
    texts = [real_text(name, messages[:i], gen=True) + real_reply(name, messages, i)
             for i, m in enumerate(messages) if m.role == "assistant"]
    full = real_text(name, messages)
    return all(full.startswith(t) for t in texts)


def seams_hold(tok, texts) -> bool:
    """Whether tokenizing the pieces apart gives the ids of tokenizing them together on this vocabulary.

    Where it does not (SmolLM2 merges the "\\n" ending a prompt with a reply's leading space), ids cannot
    match a whole-string tokenization without letting one token straddle prompt and reply.
    """
    ids = [i for x in texts for i in tok(x, add_special_tokens=False)["input_ids"]]
    return ids == tok("".join(texts), add_special_tokens=False)["input_ids"]


def cases(conversations=CONVERSATIONS):
    for builtin, reals in FAMILY.items():
        for real in reals:
            for conv in conversations:
                if REAL[real][4] or "system" not in conv:
                    yield builtin, real, conv


def _conv(messages, tools=()):
    return Conversation(tuple(messages), tools=tuple(tools))


@pytest.mark.parametrize("builtin,real,conv", list(cases()))
def test_builtin_matches_published_template(builtin, real, conv):
    """Strings and ids: generation prompts, replies, and the whole row where history is not rewritten."""
    messages, tok = CONVERSATIONS[conv], real_tokenizer(real)
    t = get_template(builtin, tok)
    turns = t.pieces(messages)
    eos = tok.eos_token if real in EOS_ADDED else ""
    k = 0
    for i, m in enumerate(messages):
        if m.role != "assistant":
            continue
        assert t.render(turns[k][1], tok) == real_reply(real, messages, i) + eos
        ours = t.encode_prompt(messages[:i], tok)
        if eos:  # history replies carry the eos the built-in adds
            ours = [x for x in ours if x != tok.eos_token_id]
        assert ours == real_ids(real, messages[:i], gen=True)
        k += 1
    if renders_history_unchanged(real, messages):
        ours = "".join(t.render(p, tok) + t.render(r, tok) for p, r in turns)
        assert (ours.replace(eos, "") if eos else ours) == real_text(real, messages)
        if not eos and seams_hold(tok, [t.render(x, tok) for turn in turns for x in turn]):
            assert [i for p, r in t.encode_turns(_conv(messages), tok) for i in p + r] == real_ids(real, messages)


@pytest.mark.parametrize("builtin,real,conv", list(cases()))
def test_labels_cover_exactly_the_replies(builtin, real, conv):
    """The ids carrying loss decode to the replies (with their end-of-turn), nothing else."""
    messages, tok = CONVERSATIONS[conv], real_tokenizer(real)
    enc = encode(_conv(messages), get_template(builtin, tok), tok)
    eos = tok.eos_token if real in EOS_ADDED else ""
    replies = [real_reply(real, messages, i) + eos for i, m in enumerate(messages) if m.role == "assistant"]
    runs, run = [], []
    for tid, lab in zip(enc.input_ids, enc.labels):
        if lab != IGNORE_INDEX:
            assert lab == tid
            run.append(tid)
        elif run:
            runs.append(run)
            run = []
    runs += [run] if run else []
    assert [tok.decode(r) for r in runs] == replies
    assert runs == [tok(r, add_special_tokens=False)["input_ids"] for r in replies]


AUTO_CONVERSATIONS = {k: v for k, v in CONVERSATIONS.items() if k in ("three", "three_system", "spaced")}


@pytest.mark.parametrize("real,conv", [(r, c) for r in REAL for c in AUTO_CONVERSATIONS
                                       if REAL[r][4] or "system" not in c])
def test_auto_trains_multi_turn_rows_on_every_template(real, conv):
    """`auto`: each reply is learned as the template renders it when generated; prompts are never learned."""
    messages, tok = AUTO_CONVERSATIONS[conv], real_tokenizer(real)
    turns = get_template("auto", tok).encode_turns(_conv(messages), tok)
    replies = [real_reply(real, messages, i) for i, m in enumerate(messages) if m.role == "assistant"]
    assert [tok.decode(r) for _, r in turns if r] == replies
    first = next(i for i, m in enumerate(messages) if m.role == "assistant")
    assert tok.decode(turns[0][0]) == real_turn(real, messages, first)[0]
    if renders_history_unchanged(real, messages):
        assert tok.decode([i for p, r in turns for i in p + r]) == real_text(real, messages)
        if seams_hold(tok, [tok.decode(x) for turn in turns for x in turn]):
            assert [i for p, r in turns for i in p + r] == real_ids(real, messages)


def test_systemless_templates_refuse_a_system_prompt_and_gemma_folds_it_like_gemma3():
    for name in ("gemma", "gemma2"):
        with pytest.raises(Exception, match="System role not supported"):
            real_text(name, CONVERSATIONS["one_system"])
    tok = real_tokenizer("gemma")
    t = get_template("gemma", tok)
    text = "".join(t.render(p, tok) + t.render(r, tok) for p, r in t.pieces(CONVERSATIONS["one_system"]))
    assert text.startswith("<bos><start_of_turn>user\nYou are a terse assistant.\n\nHello, who are you?<end_of_turn>")


# ---- reasoning (Qwen3 and DeepSeek-R1 rewrite history) -------------------------------------------------------

THINKING = [Message("user", "Q1"), Message("assistant", "<think>\nstep one\n</think>\n\nA1"),
            Message("user", "Q2"), Message("assistant", "<think>\nstep two\n</think>\n\nA2"),
            Message("user", "Q3"), Message("assistant", "A3")]
CALL = (ToolCall("get_weather", {"city": "Oslo"}),)
TOOL_ROUND = [Message("user", "Weather in Oslo?"),
              Message("assistant", "<think>\nI should call the tool.\n</think>\n\n", tool_calls=CALL),
              Message("tool", '{"temp": 3}'),
              Message("assistant", "<think>\nIt is cold.\n</think>\n\nIt is 3 degrees."),
              Message("user", "Thanks"), Message("assistant", "You're welcome.")]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.mark.parametrize("template", ["auto", "qwen3"])
@pytest.mark.parametrize("rows", ["thinking", "tool_round"])
def test_qwen3_every_reply_keeps_the_reasoning_it_was_generated_with(template, rows):
    """Qwen3's template drops earlier replies' reasoning; each reply is still learned as generated."""
    messages, tools = (THINKING, []) if rows == "thinking" else (TOOL_ROUND, TOOLS)
    tok = real_tokenizer("qwen3")
    turns = get_template(template, tok).encode_turns(_conv(messages, tools), tok)
    learned = [tok.decode(r) for _, r in turns if r]
    expected = [real_turn("qwen3", messages, i, tools or None)[1] for i, m in enumerate(messages)
                if m.role == "assistant"]
    assert learned == expected
    assert "step one" in learned[0] or "call the tool" in learned[0]
    assert all(r.startswith("<think>\n") for r in learned)
    assert not any("Q1" in r or "Q2" in r or "tool_response" in r for r in learned)
    # the prompt before each reply ends with the generation prompt the model saw
    assert all(tok.decode(p).endswith("<|im_start|>assistant\n") for p, r in turns if r)


def test_auto_on_deepseek_r1_learns_the_reply_its_template_keeps():
    """R1's template writes <think>\\n in the generation prompt and never renders reasoning in a reply."""
    tok = real_tokenizer("deepseek-r1-distill")
    turns = get_template("auto", tok).encode_turns(_conv(THINKING), tok)
    learned = [tok.decode(r) for _, r in turns if r]
    assert learned == ["\n\nA1<｜end▁of▁sentence｜>", "\n\nA2<｜end▁of▁sentence｜>", "A3<｜end▁of▁sentence｜>"]
    assert learned == [real_reply("deepseek-r1-distill", THINKING, i) for i in (1, 3, 5)]
    assert tok.decode(turns[0][0]).endswith("<｜User｜>Q1<｜Assistant｜>")


# ---- the Jinja sandbox ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", ["{{ ''.__class__.__mro__[1].__subclasses__() }}",
                                  "{% for m in messages %}{{ m.content.__class__.__mro__ }}{% endfor %}",
                                  "{{ cycler.__init__.__globals__.os.system('echo owned') }}"])
def test_a_template_reaching_python_internals_is_refused(body, tokenizer):
    """RELIABILITY 24: a tokenizer's template runs sandboxed; an escape attempt stops with a clear error."""
    from hone.templates import TemplateError

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = body
    with pytest.raises(TemplateError, match="sandbox refused it.*unsafe.*--template"):
        get_template("auto", tok).encode_turns(_conv(T1), tok)


# ---- tool calls ----------------------------------------------------------------------------------------------

PLAIN_TOOL_ROUND = [Message("user", "Weather in Oslo?"), Message("assistant", "", tool_calls=CALL),
                    Message("tool", '{"temp": 3}'), Message("assistant", "It is 3 degrees."),
                    Message("user", "Thanks"), Message("assistant", "You're welcome.")]


@pytest.mark.parametrize("builtin,real,rows", [("qwen", "qwen", "plain"), ("qwen3", "qwen3", "plain"),
                                               ("qwen3", "qwen3", "thinking"), ("chatml", "qwen3", "plain")])
def test_tool_calls_match_the_published_template(builtin, real, rows):
    """Tool specs, calls and results: every generation prompt (ids) and every learned reply (text)."""
    messages = PLAIN_TOOL_ROUND if rows == "plain" else TOOL_ROUND
    tok = real_tokenizer(real)
    t = get_template(builtin, tok)
    turns = t.encode_turns(_conv(messages, TOOLS), tok)
    k = 0
    for i, m in enumerate(messages):
        if m.role != "assistant":
            continue
        assert t.encode_prompt(messages[:i], tok, TOOLS) == real_ids(real, messages[:i], gen=True, tools=TOOLS)
        if builtin != "chatml":  # chatml has Qwen3's prompts, not its think blocks
            assert tok.decode(turns[k][1]) == real_turn(real, messages, i, TOOLS)[1]
        k += 1
    assert "<tool_call>" in tok.decode(turns[0][1])


def test_data_check_keeps_qwen3_multi_turn_rows_under_auto(tmp_path):
    """Plain multi-turn rows with Qwen3's own template: every row is kept, every reply learned."""
    import json

    from hone.config import load_config
    from hone.data.pipeline import collect
    from hone.templates.hf import HFTemplate

    rows = [{"messages": [{"role": m.role, "content": m.content} for m in conv]}
            for conv in (T1 + T2 + T3, [SYSTEM] + T1 + T2, T1)]
    path = tmp_path / "multi.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tok = real_tokenizer("qwen3")
    data = collect(load_config({"dataset": [str(path)], "max_length": 512}), tok, HFTemplate.from_tokenizer(tok))
    assert data.report.kept == 3 and not data.report.bad
    learned = [tok.decode([t for t in e.labels if t != IGNORE_INDEX]) for e in data.train]
    assert sorted(x.count("<think>\n\n</think>\n\n") for x in learned) == [1, 2, 3]


@pytest.mark.parametrize("real", ["qwen", "qwen3", "llama3.1", "llama3.2"])
def test_auto_learns_tool_calls_as_the_template_writes_them(real):
    tok = real_tokenizer(real)
    turns = get_template("auto", tok).encode_turns(_conv(PLAIN_TOOL_ROUND, TOOLS), tok)
    expected = [real_turn(real, PLAIN_TOOL_ROUND, i, TOOLS)[1] for i in (1, 3, 5)]
    assert [tok.decode(r) for _, r in turns if r] == expected
    assert "get_weather" in expected[0] and "Oslo" in expected[0]
    if real != "qwen3":  # Qwen3 rewrites history; there earlier replies keep their generated think block
        assert tok.decode([i for p, r in turns for i in p + r]) == real_text(real, PLAIN_TOOL_ROUND, tools=TOOLS)
