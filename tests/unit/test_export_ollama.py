"""The Modelfile TEMPLATE, executed by Go's text/template (the engine Ollama uses), renders what hone renders.

Runs where a Go toolchain is installed (skips otherwise): a 20-line Go program executes the template over
Ollama's data shape (``.Messages`` with ``.Role``/``.Content``); the Modelfile's SYSTEM line reaches the template
as a leading system message, as in Ollama.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hone.data.conversation import Message
from hone.export.ollama import go_template, write_modelfile
from hone.export.tokenizer import ExportError
from hone.templates.base import TEMPLATES, _load_builtins
from hone.templates.declarative import DeclarativeTemplate

_load_builtins()
BUILTINS = [n for n in TEMPLATES.names() if isinstance(TEMPLATES.get(n), DeclarativeTemplate)]
TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "smollm2-tokenizer"

GO_MAIN = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct{ Role, Content string }

func main() {
	var in struct {
		Template string
		Messages []Message
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	t := template.Must(template.New("m").Parse(in.Template))
	if err := t.Execute(os.Stdout, map[string]any{"Messages": in.Messages}); err != nil {
		panic(err)
	}
}
"""

SYSTEM = Message("system", "You are terse.")
T1 = [Message("user", "Hello, who are you?"), Message("assistant", "I am a bot.")]
T2 = [Message("user", "2+2? 答：")]


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    if shutil.which("go") is None:
        pytest.skip("no Go toolchain to execute Ollama templates")
    d = tmp_path_factory.mktemp("gotpl")
    (d / "main.go").write_text(GO_MAIN)
    subprocess.run(["go", "build", "-o", str(d / "render"), str(d / "main.go")], check=True, cwd=d,
                   env={**__import__("os").environ, "GOCACHE": str(d / "cache"), "GO111MODULE": "off"}, timeout=300)

    def render(template: str, messages: list[Message]) -> str:
        data = {"Template": template, "Messages": [{"Role": m.role, "Content": m.content} for m in messages]}
        out = subprocess.run([str(d / "render")], input=json.dumps(data), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    return render


def _tokenizer(t: DeclarativeTemplate):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    if "<|im_start|>" not in str(t.prompt):
        tok.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})
    return tok


def _hone_text(t, tok, messages) -> str:
    return "".join(t.render(p, tok) + t.render(r, tok) for p, r in t.pieces(messages, generation=True))


@pytest.mark.parametrize("name", BUILTINS)
def test_go_template_renders_what_hone_renders(name, go_render):
    t = TEMPLATES.get(name)
    tok = _tokenizer(t)
    if t.chat_sep is not None and any("{{ROUND" in x for x in t.prompt if isinstance(x, str)):
        with pytest.raises(ExportError, match="numbers its rounds"):
            go_template(t, tok, add_bos=False)
        return
    if any("{{DATE}}" in x for f in (t.prefix, t.system_prefix or ()) for x in f if isinstance(x, str)):
        with pytest.raises(ExportError, match="today's date"):
            go_template(t, tok, add_bos=False)
        return
    tpl = go_template(t, tok, add_bos=False)
    convs = [T1[:1], [SYSTEM] + T1[:1], [Message("system", "")] + T1[:1]]
    if t.chat_sep is not None:
        convs += [T1 + T2, [SYSTEM] + T1 + T2]
    for conv in convs:
        if conv[0].role == "system" and t.system_prefix is None and t.system_in_query is None and \
                not any(isinstance(x, str) and "{{SYSTEM}}" in x for x in t.prefix):
            continue
        # Ollama hands the Modelfile's SYSTEM to the template as a system message
        given = conv if conv[0].role == "system" or t.default_system is None else \
            [Message("system", t.default_system)] + conv
        assert go_render(tpl, given) == _hone_text(t, tok, conv), conv


def test_leading_bos_is_left_to_llama_cpp(go_render):
    t = TEMPLATES.get("llama2")
    tok = _tokenizer(t)
    text = go_render(go_template(t, tok, add_bos=True), T1 + T2)
    assert text == _hone_text(t, tok, T1 + T2)[len("<s>"):]


def test_modelfile_lines(tmp_path):
    t = TEMPLATES.get("llama3")
    tok = _tokenizer(t)
    tok.add_tokens(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], special_tokens=True)
    path = write_modelfile(tmp_path, tmp_path / "model-q8_0.gguf", "llama3", tok, system="Be brief.")
    lines = path.read_text().splitlines()
    assert lines[0] == "FROM ./model-q8_0.gguf"
    assert 'SYSTEM """Be brief."""' in lines
    assert lines[-2:] == ['PARAMETER stop "<|eot_id|>"', 'PARAMETER stop "</s>"']


def _modelfile_parts(text: str) -> tuple[str | None, str | None]:
    """(TEMPLATE, SYSTEM) of a Modelfile, None where absent."""
    def block(key: str) -> str | None:
        start = text.find(f'{key} """')
        return None if start < 0 else text[start + len(key) + 4:text.index('"""', start + len(key) + 4)]

    return block("TEMPLATE"), block("SYSTEM")


FRESH = [  # conversations the matching did not probe with
    [Message("user", "Name three metals.")],
    [Message("system", "Reply in French."), Message("user", "Bonjour"), Message("assistant", "Salut !"),
     Message("user", "Ça va ?"), Message("assistant", "Oui."), Message("user", "Et toi ?")],
    [Message("user", "first"), Message("assistant", "one"), Message("user", "second")],
]


@pytest.mark.parametrize("jinja", [None, "chatml", "qwen2.5", "llama3", "mistral-v3", "phi3.5"])
def test_auto_template_gets_a_template_ollama_renders_as_the_tokenizer_does(jinja, go_render, tmp_path):
    """`template: auto`: the Modelfile's TEMPLATE, executed by Go with its SYSTEM line as Ollama passes it,
    renders the prompt the tokenizer's own chat template renders (the SmolLM2 one, or a published one)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    if jinja is not None:
        tok.chat_template = (TOKENIZER_DIR.parent / "chat_templates" / f"{jinja}.jinja").read_text()
    template, system = _modelfile_parts(write_modelfile(tmp_path, tmp_path / "m.gguf", "auto", tok).read_text())
    assert template is not None
    for conv in FRESH:
        given = conv if conv[0].role == "system" or system is None else [Message("system", system)] + conv
        want = tok.apply_chat_template([{"role": m.role, "content": m.content} for m in conv], tokenize=False,
                                       add_generation_prompt=True)
        assert go_render(template, given) == want, conv


def test_auto_template_unlike_any_builtin_leaves_the_choice_to_ollama(tmp_path, caplog):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tok.chat_template = ("{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}[ASSISTANT] {% endif %}")
    text = write_modelfile(tmp_path, tmp_path / "m.gguf", "auto", tok).read_text()
    assert "TEMPLATE" not in text.replace("# no TEMPLATE", "") and "# no TEMPLATE" in text
    assert "renders like no built-in template" in caplog.text and "ollama show --template" in caplog.text


def test_auto_template_alike_a_builtin_without_ollama_form_still_gets_a_modelfile(tmp_path):
    """Llama 3.2's template writes today's date: it renders like the built-in llama3_2, which has no Ollama form,
    so the Modelfile is written without TEMPLATE rather than not at all."""
    from transformers import AutoTokenizer

    from hone.export.ollama import builtin_like

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tok.chat_template = (TOKENIZER_DIR.parent / "chat_templates" / "llama3.2.jinja").read_text()
    assert builtin_like(tok) is None
    text = write_modelfile(tmp_path, tmp_path / "m.gguf", "auto", tok).read_text()
    assert text.startswith("FROM ./m.gguf\n") and "# no TEMPLATE" in text
