"""The docs site built once per test session (strict), for every docs test that looks at the HTML."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from docs_blocks import REPO


@dataclass(frozen=True)
class Build:
    site: Path
    returncode: int
    log: str

    def problems(self) -> str:
        """The warnings and errors of the build log (what --strict refused), else its end."""
        lines = self.log.splitlines()
        bad = [ln for ln in lines if any(w in ln for w in ("WARNING", "ERROR", "Error", "Exception", "Aborted"))]
        return "\n".join(bad or lines[-40:])


@pytest.fixture(scope="session")
def docs_build(tmp_path_factory) -> Build:
    """`mkdocs build --strict` of the repository's docs into a temporary folder (skipped, with the reason,
    where the docs packages are not installed: `pip install -e ".[docs]"`; `.[dev]` has them too)."""
    for module in ("mkdocs", "material", "mkdocs_static_i18n"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e \".[docs]\" to build the docs site")
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    return Build(site, proc.returncode, proc.stdout + proc.stderr)


@pytest.fixture(scope="session")
def site(docs_build: Build) -> Path:
    """The built site's folder; fails when the strict build did."""
    if docs_build.returncode:
        pytest.fail("mkdocs build --strict failed (its messages: test_strict_build)", pytrace=False)
    return docs_build.site
