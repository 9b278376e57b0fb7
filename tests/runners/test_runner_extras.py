"""The optional runtimes' extras (issue 31 item 4, asked for by item 5's reviewer): listing the runners and checking a
suite that names them imports no optional runtime, and a suite naming a runner whose extra is not installed is one
line naming the extra (exit 2) before anything is measured."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from ebtest import ROOT, run_cli

from effbench.errors import UserError

OPTIONAL = ("openvino", "nncf", "executorch", "torchao", "ai_edge_litert")

GHOST = '''"""A runner whose runtime is an extra that is not installed here."""
from typing import ClassVar

from effbench.runners import RunnerOptions, Support, register


@register
class GhostRunner:
    name: ClassVar[str] = "ghost"
    artifact: ClassVar[str] = "onnx"
    runtime_module: ClassVar[str] = "ghost_runtime_not_installed"
    excludes: ClassVar[tuple] = ()
    packages: ClassVar[tuple] = ("ghost-runtime",)
    Options: ClassVar[type] = RunnerOptions
    extra: ClassVar[str] = "ghost"
    requires: ClassVar[dict] = {"ghost_runtime_not_installed": "ghost-runtime"}

    def supports(self, variant):
        return Support.yes()

    def load(self, variant, threads, options):
        import ghost_runtime_not_installed  # noqa: F401
'''


def _suite(tmp_path, runners: str, plugins: str = "[]"):
    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\nplugins: {plugins}\nmodels:\n  - id: m\n    source: {{builtin: mlp}}\n"
                 f"precisions: [fp32]\nrunners:\n{runners}devices: []\n")
    return p


@pytest.mark.spawns
def test_listing_runners_and_validating_a_suite_of_them_imports_no_optional_runtime():
    code = ("import json, sys\n"
            "from effbench.runners import runner_names, provenance_packages\n"
            "from effbench.cli.app import main\n"
            "names = runner_names(); provenance_packages()\n"
            "rc = main(['validate', 'suites/runtimes.yaml'])\n"
            f"print(json.dumps([names, rc, sorted({{m.split('.')[0] for m in sys.modules}} & set({list(OPTIONAL)!r}))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    names, rc, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"onnxruntime", "torch", "openvino", "executorch"} <= set(names) and rc == 0
    assert loaded == []   # neither openvino (nor nncf) nor executorch (nor torchao) was imported


@pytest.fixture
def ghost_registered(monkeypatch):
    """The plugin registers into this process's registry: give it back as it was."""
    from effbench import runners
    from effbench.config import plugins
    runners.runner_names()
    saved, loaded = dict(runners.RUNNERS), dict(plugins._LOADED)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    runners.RUNNERS.clear()
    runners.RUNNERS.update(saved)
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)
    sys.modules.pop("ghostrunner", None)


def test_a_runner_whose_extra_is_missing_is_one_line_naming_the_extra(tmp_path, ghost_registered):
    from effbench.config.suite import load_suite
    (tmp_path / "ghostrunner.py").write_text(GHOST)
    p = _suite(tmp_path, "  - {name: onnxruntime, threads: 1}\n  - {name: ghost, threads: 1}\n", "[ghostrunner]")
    assert importlib.util.find_spec("ghost_runtime_not_installed") is None
    with pytest.raises(UserError) as e:
        load_suite(p)
    assert e.value.one_line() == (f"{p}:9: runners[1]: the ghost runner needs ghost-runtime (the [ghost] extra), "
                                  "not installed; pip install -e .[ghost]")


@pytest.mark.parametrize("runner,module,extra,dist", [("openvino", "openvino", "openvino", "openvino"),
                                                     ("executorch", "executorch", "executorch", "executorch")])
def test_the_shipped_optional_runtimes_name_their_extra(tmp_path, monkeypatch, runner, module, extra, dist):
    from effbench.config.suite import load_suite
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(UserError) as e:
        load_suite(_suite(tmp_path, f"  - {{name: {runner}, threads: 1}}\n"))
    line = e.value.one_line()
    assert f"the {runner} runner needs {dist} (the [{extra}] extra), not installed" in line
    assert line.endswith(f"pip install -e .[{extra}]") and "\n" not in line


@pytest.mark.spawns
def test_the_missing_extra_exits_2_from_the_command_line(tmp_path):
    (tmp_path / "ghostrunner.py").write_text(GHOST)
    p = _suite(tmp_path, "  - {name: ghost, threads: 1}\n", "[ghostrunner]")
    res = run_cli("run", str(p), "-o", str(tmp_path / "out"), "--no-report")
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and "the ghost runner needs ghost-runtime (the [ghost] extra)" in err[-1]
    assert "Traceback" not in res.stderr and not (tmp_path / "out" / "results.jsonl").exists()
