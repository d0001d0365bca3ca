"""The `hone` command in-process: help, bad input with one clear message, chat on a tiny model."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from hone.cli import main
from hone.infer.chat import chat_loop


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_python_dash_m_hone_help():
    proc = subprocess.run([sys.executable, "-m", "hone", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "train" in proc.stdout and "chat" in proc.stdout


def test_train_help_mentions_aliases():
    proc = subprocess.run([sys.executable, "-m", "hone", "train", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ms-swift" in proc.stdout


def test_config_keys_lists_every_key_with_help():
    code, out, _ = run(["config", "keys"])
    assert code == 0 and "lora_rank" in out and "cutoff_len" in out


@pytest.mark.parametrize("argv", [["templates"], ["templates", "list"]])
def test_templates_lists_the_builtins(argv):
    code, out, _ = run(argv)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("auto") and {"chatml", "llama3", "qwen", "smollm2"} <= set(lines)


@pytest.mark.parametrize("argv, message", [
    (["train", "--lora_rnak", "8"], "unknown key 'lora_rnak' (did you mean 'lora_rank'?); see `hone config keys`"),
    (["train", "--batch_size", "two"], "key 'batch_size' must be an integer, got 'two'"),
    (["train", "missing.yaml"], "config file missing.yaml does not exist"),
])
def test_config_errors_are_one_line_without_traceback(argv, message):
    code, _, err = run(argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_missing_data_file_stops_before_model_loads(tiny_model_dir, tmp_path):
    code, _, err = run(["train", "--model", str(tiny_model_dir), "--dataset", str(tmp_path / "nope.jsonl"),
                        "--output_dir", str(tmp_path)])
    assert code == 2 and "nope.jsonl" in err and "neither a file nor a registered name" in err


def test_unreadable_model_path(tmp_path):
    code, _, err = run(["train", "--model", str(tmp_path / "no-such-model"), "--dataset", "x.json"])
    assert code == 2 and "no-such-model" in err and "not a built-in name" in err


def test_directory_without_config_is_not_a_model(tmp_path):
    code, _, err = run(["chat", "--model", str(tmp_path), "--prompt", "hi"])
    assert code == 2 and "no config.json" in err


def test_row_without_reply_is_named_with_file_and_line(tiny_model_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"messages": [{"role": "user", "content": "no answer here"}]}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, _, err = run(["train", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir",
                        str(tmp_path / "o"), "--check_dataset_strategy", "error"])
    assert code == 2
    assert f"{data}:2: no_reply" in err
    assert not (tmp_path / "o").exists()  # stopped before anything was written


def test_model_code_is_not_run_without_trust(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "ran"
    (d / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    code, _, err = run(["chat", "--model", str(d), "--prompt", "hi"])
    assert code == 2 and "trust_remote_code" in err
    assert not marker.exists()


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    import hone.models.load as load

    def offline(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    with pytest.raises(load.ModelError, match="cannot fetch 'someone/some-model'.*offline"):
        load.resolve_model("someone/some-model")


def test_chat_prompt_once_on_tiny_model(tiny_model_dir):
    code, out, err = run(["chat", "--model", str(tiny_model_dir), "--prompt", "Who are you?",
                          "--max_new_tokens", "5"])
    assert code == 0, err
    assert out.endswith("\n")


class FakeEngine:
    def __init__(self):
        self.seen = []

    def stream(self, messages, gen):
        self.seen.append(list(messages))
        yield f"reply{len(self.seen)}"

    def generate(self, messages, gen):
        return "".join(self.stream(messages, gen))

    def complete(self, messages, gen, adapter=None):
        from hone.infer.engine import Generation

        return Generation(self.generate(messages, gen), 0, 1, "stop")


def test_chat_loop_keeps_history_and_handles_commands():
    from hone.config import GenCfg

    lines = iter(["hello", "second", "/system be brief", "third", "/clear", "fourth", "/bogus", "/exit"])
    engine, out = FakeEngine(), io.StringIO()
    chat_loop(engine, GenCfg(), read=lambda _: next(lines), out=out)
    roles = [[(m.role, m.content) for m in msgs] for msgs in engine.seen]
    assert roles[0] == [("user", "hello")]
    assert roles[1] == [("user", "hello"), ("assistant", "reply1"), ("user", "second")]
    assert roles[2] == [("system", "be brief"), ("user", "third")]  # /system starts over
    assert roles[3] == [("system", "be brief"), ("user", "fourth")]  # /clear keeps the system prompt
    assert "unknown command /bogus" in out.getvalue()


def test_models_list_shows_default():
    code, out, _ = run(["models", "list"])
    assert code == 0 and "smollm2-135m" in out and "not pulled" in out


def test_model_without_chat_template_asks_for_one(tiny_model_dir, tmp_path, identity_file):
    import shutil

    d = tmp_path / "base-model"
    shutil.copytree(tiny_model_dir, d)
    (d / "chat_template.jinja").unlink()
    code, _, err = run(["train", "--model", str(d), "--dataset", str(identity_file), "--output_dir", str(tmp_path)])
    assert code == 2 and "no chat template" in err and "--template" in err


def test_chat_with_a_training_yaml_does_not_check_training_keys(tiny_cfg, tmp_path):
    import yaml

    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump({**tiny_cfg, "max_steps": -1, "num_train_epochs": 0}))
    code, _, err = run(["train", str(p)])
    assert code == 2 and "num_train_epochs must be > 0" in err
    code, out, err = run(["chat", str(p), "--prompt", "hi", "--max_new_tokens", "3"])
    assert code == 0, err
    assert out.endswith("\n")


def test_chat_takes_the_model_from_the_run_unless_a_key_names_one(tiny_cfg, tmp_path):
    import hone

    run_dir = hone.train({**tiny_cfg, "max_steps": 2}).run_dir
    p = tmp_path / "gen.yaml"
    p.write_text("max_new_tokens: 3\n")  # a YAML that names no model: the run's base model is used
    code, _, err = run(["chat", str(p), "--adapter", str(run_dir), "--prompt", "hi"])
    assert code == 0, err
    missing = tmp_path / "no-such-model"
    for spelling in ("--model", "--model_id", "--model_name_or_path"):  # any alias of `model` counts
        code, _, err = run(["chat", "--adapter", str(run_dir), spelling, str(missing), "--prompt", "hi"])
        assert code == 2 and str(missing) in err, (spelling, err)
