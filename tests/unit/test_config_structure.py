"""The config package: its modules import each other in one direction only, and each imports on its own."""
from __future__ import annotations

import ast
import graphlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hone.config

PACKAGE = Path(hone.config.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def sibling_imports(module: str) -> list[tuple[str, int]]:
    """(sibling module, line) for every import of another module of the package, wherever it stands."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("hone.config."):
            names = [node.module.split(".")[2]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[2] for a in node.names if a.name.startswith("hone.config.")]
        else:
            continue
        found += [(n.split(".")[0], node.lineno) for n in names]
    return found


def test_package_has_the_expected_modules():
    assert {"keys", "load", "aliases", "check", "derive"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_imports_of_siblings_stand_at_module_level(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    top_level = {node.lineno for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))}
    hidden = [(name, line) for name, line in sibling_imports(module) if line not in top_level]
    assert not hidden, f"{module}.py imports {hidden} inside a function (an import cycle dodged)"


def test_modules_import_each_other_without_a_cycle():
    graph = {m: {name for name, _ in sibling_imports(m) if name in MODULES} for m in MODULES}
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert order.index("keys") < order.index("load")


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    src = str(Path(hone.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = f"import hone.config.{module} as m; import sys; assert m.__file__.startswith({src!r}); " \
           "assert 'torch' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
