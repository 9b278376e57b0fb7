"""The house by stage (docs/architecture.md): the import-linter contracts hold, a planted upward import or
cycle breaks them (so the check can fail), no module imports another package's private names, and functions
stay short enough to read."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "effbench"
LINT = Path(sys.executable).with_name("lint-imports")
# Functions allowed past 80 lines, each with the reason a split would hurt reading (say it beside the def too).
LONG_FUNCTIONS = {
    ("cli/app.py", "_parser"): "argparse declarations, one subcommand after another: nothing to factor",
    ("variants/channels.py", "_trace"): "one walk down the graph whose cases share the walk's state",
}


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          timeout=300)


@pytest.mark.slow
def test_the_import_contracts_hold():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("importer, imported, contract", [
    ("measure/stats.py", "effbench.cli.app", "Stages import downward only"),          # upward
    ("gate/metrics.py", "effbench.gate.stores", "No package's modules import each other in a circle"),
])
def test_a_planted_bad_import_breaks_a_contract(tmp_path, importer, imported, contract):
    shutil.copytree(PACKAGE, tmp_path / "effbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "effbench" / importer
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    import {imported}  # noqa: F401\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert f"{contract} BROKEN" in out.stdout
    culprit = importer.removesuffix(".py").split("/")[-1]
    assert f".{culprit} -> " in out.stdout or f".{culprit} (l." in out.stdout, out.stdout[-2000:]  # names the import


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_imports_another_packages_private_names():
    found = []
    for path in _modules():
        rel = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("effbench"):
                own = ".".join(rel.with_suffix("").parts)
                found += [f"{rel}:{node.lineno} {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__") and node.module != own]
    assert not found, "\n".join(found)


def test_functions_stay_under_80_lines():
    long = []
    for path in _modules():
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80 and (rel, node.name) not in LONG_FUNCTIONS:
                    long.append(f"{rel}:{node.lineno} {node.name} has {n} lines")
    assert not long, "\n".join(long)


def test_the_package_has_no_flat_modules_besides_the_ground_floor():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "errors.py", "units.py", "version.py"], flat
