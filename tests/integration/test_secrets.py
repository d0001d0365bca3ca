"""RELIABILITY 26: a hub token given in YAML, on the command line or in the environment is written nowhere."""
from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import yaml

from hone.cli import main

SECRET_YAML, SECRET_CLI, SECRET_ENV = "hf_yamlSECRET0123456789", "hf_cliSECRET0123456789", "hf_envSECRET0123456789"


def _all_text(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


def test_tokens_appear_in_no_log_config_state_or_checkpoint(tiny_cfg, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", SECRET_ENV)
    cfg_file = tmp_path / "run.yaml"
    keys = {**tiny_cfg, "hub_token": SECRET_YAML, "report_to": ["tensorboard"], "plot_loss": True}
    cfg_file.write_text(yaml.safe_dump(keys))
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({**keys, "token": SECRET_CLI}))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["train", str(both)])
    assert code == 2  # two spellings of the token with different values: refused, naming neither value
    assert "both set 'hub_token'" in err.getvalue()
    assert SECRET_CLI not in err.getvalue() and SECRET_YAML not in err.getvalue()

    with redirect_stdout(out), redirect_stderr(err):
        code = main(["train", str(cfg_file), "--hub_token", SECRET_CLI])
    assert code == 0, err.getvalue()
    run_dir = Path(tiny_cfg["output_dir"])
    written = _all_text(run_dir) + out.getvalue() + err.getvalue() + caplog.text
    for secret in (SECRET_YAML, SECRET_CLI, SECRET_ENV):
        assert secret not in written
    assert "***" in (run_dir / "hone_config.yaml").read_text()


def test_relaunched_processes_get_the_token_through_the_environment_not_argv(tiny_cfg, tmp_path, monkeypatch):
    """`ps` shows every process's argv; the processes --nproc_per_node starts must not carry the token there."""
    import torch.distributed.run

    launched: list[list[str]] = []
    monkeypatch.setattr(torch.distributed.run, "main", lambda args: launched.append(list(args)))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_cfg))
    for spelling in (["--hub_token", SECRET_CLI], [f"--token={SECRET_CLI}"]):
        assert main(["train", str(cfg_file), "--nproc_per_node", "2", *spelling, "--max_steps", "3"]) == 0
        argv = launched.pop()
        assert SECRET_CLI not in " ".join(argv)
        assert argv[-6:] == ["train", str(cfg_file), "--nproc_per_node", "2", "--max_steps", "3"]
        assert os.environ["HF_TOKEN"] == SECRET_CLI


def test_a_token_of_the_wrong_shape_is_refused_without_echoing_it(tiny_cfg, tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_cfg))
    for given in (["--hub_token", SECRET_CLI, SECRET_YAML], ["--token", SECRET_CLI, SECRET_YAML]):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            assert main(["train", str(cfg_file), *given]) == 2
        assert "hub_token" in err.getvalue() and "single" in err.getvalue()
        assert SECRET_CLI not in err.getvalue() + out.getvalue() and SECRET_YAML not in err.getvalue()
    keys = {**tiny_cfg, "hub_token": {"value": SECRET_YAML}}
    cfg_file.write_text(yaml.safe_dump(keys))
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["train", str(cfg_file)]) == 2
    assert "hub_token" in err.getvalue() and SECRET_YAML not in err.getvalue()
