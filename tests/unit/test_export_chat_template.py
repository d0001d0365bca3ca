"""Every built-in template, exported as Jinja into a saved tokenizer, renders what hone trains on.

The oracle is ``tokenizer.apply_chat_template`` of the reloaded, exported directory (what transformers, vLLM or
llama.cpp run); it is compared with hone's own rendering (strings) and hone's training ids. Each template gets the
SmolLM2 tokenizer with the special tokens it writes added, so every built-in can be rendered offline.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from hone.data.conversation import Conversation, Message, ToolCall
from hone.export.tokenizer import export_tokenizer
from hone.templates.base import TEMPLATES, _load_builtins
from hone.templates.declarative import _MARKUP, DeclarativeTemplate
from hone.templates.hf import message_dict

_load_builtins()
TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "smollm2-tokenizer"
BUILTINS = [n for n in TEMPLATES.names() if isinstance(TEMPLATES.get(n), DeclarativeTemplate)]

# On this vocabulary "\n\n" before a word splits differently when tokenized apart (hone: prompt and reply) and
# together (a rendered string); the Llama 3 prompts end in "\n\n", so only their strings are compared.
SEAM_SPLITS = {"llama3", "llama3_1", "llama3_2"}

SYSTEM = Message("system", "You are a terse assistant.")
T1 = [Message("user", "Hello, who are you?"), Message("assistant", "I am a helpful bot.")]
T2 = [Message("user", "What is 2+2?"), Message("assistant", "Four.")]
T3 = [Message("user", "And 3+3? 答：六"), Message("assistant", "Six, 六.")]
TOOLS = ({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}},)
TOOL_CONV = [Message("user", "Weather in Paris and Oslo?"),
             Message("assistant", "", tool_calls=(ToolCall("get_weather", {"city": "Paris"}),
                                                  ToolCall("get_weather", {"city": "Oslo"}))),
             Message("tool", '{"temp": 21}'), Message("tool", '{"temp": 5}'),
             Message("assistant", "Paris 21, Oslo 5.")]
# whitespace around every message, for the templates that trim (and those that must keep it)
PADDED = [Message("system", " Be terse.\n"), Message("user", "  Hi there \n"), Message("assistant", "\n Hello. "),
          Message("user", " Again? "), Message("assistant", " Yes.\n")]
CONVERSATIONS = {"one": T1, "one_system": [SYSTEM] + T1, "three": T1 + T2 + T3, "three_system": [SYSTEM] + T1 + T2 + T3,
                 "padded_system": PADDED, "empty_system": [Message("system", "")] + T1}


def _needed_tokens(t: DeclarativeTemplate) -> set[str]:
    fields = [t.prefix, t.prompt, t.suffix, t.response_prefix, t.trailer, t.chat_sep or (), t.system_prefix or ()]
    if t.tools is not None:
        fields += [t.tools.system_prefix, t.tools.prefix or (), t.tools.results_prompt]
    out = set(t.special_tokens)
    for f in fields:
        for item in f:
            if isinstance(item, str):
                out |= set(_MARKUP.findall(item))
            else:
                out |= {r for r in item if isinstance(r, str) and not r.endswith("_token_id")}
    return out


@lru_cache(maxsize=None)
def exported(name: str, tmp_root: str):
    """(hone's tokenizer, the exported-and-reloaded tokenizer, the template) for built-in ``name``."""
    from transformers import AutoTokenizer

    from hone.templates import get_template

    t = TEMPLATES.get(name)
    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    if "<|im_start|>" not in str(t.prompt):
        tok.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})
    new = sorted(_needed_tokens(t) - set(tok.get_vocab()))
    if new:
        tok.add_tokens(new, special_tokens=True)
    out = Path(tmp_root) / name
    export_tokenizer(tok, name, out)
    return tok, AutoTokenizer.from_pretrained(out), get_template(name, tok)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("exported-tokenizers"))


def _ours(t, tok, messages, tools=(), gen=False) -> tuple[str, list[int]]:
    pieces = t.pieces(messages, tools, generation=gen)
    text = "".join(t.render(p, tok) + t.render(r, tok) for p, r in pieces)
    if gen:
        return text, t.encode_prompt(messages, tok, tools)
    return text, [i for p, r in t.encode_turns(Conversation(tuple(messages), tuple(tools)), tok) for i in p + r]


def _theirs(tok, messages, tools=(), gen=False) -> tuple[str, list[int]]:
    msgs = [message_dict(m) for m in messages]
    kw = dict(tools=list(tools) or None, add_generation_prompt=gen)
    text = tok.apply_chat_template(msgs, tokenize=False, **kw)
    ids = tok.apply_chat_template(msgs, tokenize=True, **kw)
    return text, list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _rewrites_history(t: DeclarativeTemplate) -> bool:
    """Qwen3 drops earlier reasoning, Mistral v0.3 moves the system prompt to the last query."""
    return t.thinking or (t.system_in_query is not None and t.system_query == "last")


def _check(name, root, messages, tools=(), gen=False, ids_too=True) -> None:
    tok, exp, t = exported(name, root)
    if not gen and _rewrites_history(t):
        _check_per_reply(name, root, messages, tools)
        return
    ours_text, ours_ids = _ours(t, tok, messages, tools, gen)
    text, ids = _theirs(exp, messages, tools, gen)
    assert text == ours_text
    if name not in SEAM_SPLITS and ids_too:
        assert ids == ours_ids


def _check_per_reply(name, root, messages, tools=()) -> None:
    """A history-rewriting template: each reply is trained on what the exported template renders when that
    reply is generated, i.e. the generation prompt for the messages before it, then the reply."""
    tok, exp, t = exported(name, root)
    turns = t.pieces(messages, tools)
    ids = t.encode_turns(Conversation(tuple(messages), tuple(tools)), tok)
    replies = [i for i, m in enumerate(messages) if m.role == "assistant"]
    assert len(replies) >= 1
    for k, i in enumerate(replies):
        (prompt, reply), (prompt_ids, reply_ids) = turns[k], ids[k]
        gen_text, gen_ids = _theirs(exp, messages[:i], tools, gen=True)
        full_text, full_ids = _theirs(exp, messages[:i + 1], tools)
        assert gen_text.endswith(t.render(prompt, tok)), k
        assert gen_ids[len(gen_ids) - len(prompt_ids):] == prompt_ids, k
        assert full_text.startswith(gen_text) and full_text[len(gen_text):] == t.render(reply, tok), k
        assert full_ids[:len(gen_ids)] == gen_ids and full_ids[len(gen_ids):] == reply_ids, k
        if k == 0:  # the first reply's whole context is the exported generation prompt
            assert gen_ids == prompt_ids


def _supports_system(t: DeclarativeTemplate) -> bool:
    return t.system_prefix is not None or t.system_in_query is not None or any(isinstance(x, str) and "{{SYSTEM}}" in x for x in t.prefix)


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("conv", list(CONVERSATIONS))
def test_exported_template_renders_training_text_and_ids(name, conv, root):
    t = TEMPLATES.get(name)
    if conv.endswith("system") and not _supports_system(t):
        pytest.skip(f"{name} has no system form")
    if conv.startswith("three") and t.chat_sep is None:
        pytest.skip(f"{name} has no multi-turn form")
    # untrimmed whitespace at a prompt/reply seam tokenizes differently apart and together: text only there
    _check(name, root, CONVERSATIONS[conv], ids_too=conv != "padded_system" or bool(t.trim))


@pytest.mark.parametrize("name", BUILTINS)
def test_exported_template_generation_prompt(name, root):
    t = TEMPLATES.get(name)
    history = (T1 + T2[:1]) if t.chat_sep is not None else T1[:1]
    _check(name, root, history, gen=True)
    if _supports_system(t):
        _check(name, root, [SYSTEM] + history, gen=True)


@pytest.mark.parametrize("name", [n for n in BUILTINS if TEMPLATES.get(n).tools is not None])
def test_exported_template_tool_calls(name, root):
    _check(name, root, TOOL_CONV, TOOLS)
    _check(name, root, [SYSTEM] + TOOL_CONV, TOOLS)
    _check(name, root, TOOL_CONV[:4], TOOLS, gen=True)


def test_thinking_history_rules_survive_export(root):
    messages = [Message("user", "Q1"), Message("assistant", "<think>\nstep one\n</think>\n\nA1"),
                Message("user", "Q2"), Message("assistant", "<think>\nstep two\n</think>\n\nA2")]
    _check("qwen3", root, messages)
    _check("qwen3", root, messages[:2])


def test_run_system_prompt_becomes_the_default(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    export_tokenizer(tok, "chatml", tmp_path, system="Speak like a pirate.")
    text = AutoTokenizer.from_pretrained(tmp_path).apply_chat_template([message_dict(T1[0])], tokenize=False,
                                                                      add_generation_prompt=True)
    assert text == ("<|im_start|>system\nSpeak like a pirate.<|im_end|>\n<|im_start|>user\nHello, who are you?"
                    "<|im_end|>\n<|im_start|>assistant\n")


def test_template_without_tools_refuses_tools_in_jinja(root):
    _, exp, _ = exported("llama2", root)
    with pytest.raises(Exception, match="no tool-call format"):
        exp.apply_chat_template([message_dict(T1[0])], tools=list(TOOLS), tokenize=False)


def test_auto_keeps_the_tokenizers_own_template(tmp_path, tokenizer):
    from transformers import AutoTokenizer

    export_tokenizer(tokenizer, "auto", tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == tokenizer.chat_template


def test_a_field_value_without_jinja_form_is_refused():
    from transformers import AutoTokenizer

    from hone.export.jinja import to_jinja
    from hone.export.tokenizer import ExportError

    t = DeclarativeTemplate((), "[INST]{{QUERY}}[/INST]", (), system_in_query="{{SYSTEM}}\n\n{{QUERY}}",
                            system_query="every", name="odd")
    with pytest.raises(ExportError, match="system_query='every'"):
        to_jinja(t, AutoTokenizer.from_pretrained(TOKENIZER_DIR))
