"""Per-tool virtual environments for the peers: created on first use, reused after.

Each venv gets the local CPU torch first, then the tool under a constraint file that pins that torch, so no
install can swap it for a CUDA build. A venv counts as ready once its `.b1-ready` marker exists.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TORCH = "torch==2.13.0"

# What each tool's venv installs after torch (the llamafactory entry is special-cased below).
PACKAGES: dict[str, list[str]] = {
    "hf": ["transformers", "peft", "accelerate", "datasets"],
    "trl": ["trl", "peft", "accelerate", "datasets"],
    "swift": ["ms-swift>=4,<5"],  # 4.x names the LoRA switch --tuner_type (3.x: --train_type)
    "llamafactory": ["llamafactory>=0.9,<0.10"],
}
# The distributions whose versions the results record, per tool.
REPORTED = {
    "hf": ["torch", "transformers", "peft", "accelerate"],
    "trl": ["torch", "trl", "transformers", "peft", "accelerate"],
    "swift": ["torch", "ms-swift", "transformers", "peft", "accelerate"],
    "llamafactory": ["llamafactory", "torch", "transformers", "peft", "accelerate"],
}
# Installed by llamafactory's requirements but pulling CUDA torch builds: never installed from its list.
SKIP_REQS = {"torch", "torchvision", "torchaudio"}
MARKER = ".b1-ready"

_STUB_INIT = '''"""An empty stand-in: no torchaudio build exists for this torch, and text fine-tuning never calls it."""
__version__ = "0.0.0+stub"
'''


def venv_python(root: Path, tool: str) -> Path:
    return root / tool / "bin" / "python"


def _pip(py: Path, args: list[str], log) -> None:
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", *args]
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install failed ({' '.join(args)}); see {log.name}")


def _llamafactory_requirements(py: Path) -> list[str]:
    """The requirement lines llamafactory declares without an extra, less the torch family."""
    code = ("import json, importlib.metadata as m; "
            "print(json.dumps(m.requires('llamafactory') or []))")
    reqs = json.loads(subprocess.check_output([str(py), "-c", code], text=True))
    keep = []
    for r in reqs:
        if "extra ==" in r:
            continue
        name = r.split(";")[0].strip()
        base = name.split("[")[0]
        for sep in "<>=!~ (":
            base = base.split(sep)[0]
        if base.strip().lower() in SKIP_REQS:
            continue
        keep.append(r)
    return keep


def _stub_torchaudio(py: Path) -> None:
    """Writes an empty `torchaudio` package into the venv's site-packages."""
    site = subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   text=True).strip()
    pkg = Path(site) / "torchaudio"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(_STUB_INIT, encoding="utf-8")


def ensure_venv(root: Path, tool: str) -> Path:
    """The venv's python for `tool`, creating and filling the venv first when it is not ready yet."""
    env = root / tool
    py = venv_python(root, tool)
    if (env / MARKER).exists():
        return py
    env.parent.mkdir(parents=True, exist_ok=True)
    log_path = root / f"{tool}-install.log"
    print(f"[b1] installing {tool} into {env} (log: {log_path}) ...", flush=True)
    with log_path.open("a", encoding="utf-8") as log:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, stdout=log, stderr=log)
        pin = env / "torch-constraint.txt"
        pin.write_text(TORCH + "\n", encoding="utf-8")
        _pip(py, [TORCH], log)
        if tool == "llamafactory":
            _pip(py, ["-c", str(pin), "--no-deps", *PACKAGES[tool]], log)
            _pip(py, ["-c", str(pin), *_llamafactory_requirements(py)], log)
            _stub_torchaudio(py)
        else:
            _pip(py, ["-c", str(pin), *PACKAGES[tool]], log)
    (env / MARKER).write_text("ok\n", encoding="utf-8")
    return py


def installed_versions(py: Path, names: list[str]) -> dict[str, str]:
    """Versions of `names` as the venv's python sees them ('-' for one that is not installed)."""
    code = ("import json, sys, importlib.metadata as m\n"
            "out = {}\n"
            "for n in sys.argv[1:]:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: out[n] = '-'\n"
            "print(json.dumps(out))\n")
    return json.loads(subprocess.check_output([str(py), "-c", code, *names], text=True))
