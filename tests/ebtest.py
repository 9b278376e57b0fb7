"""Shared test helpers (a unique module name: several folders have a conftest.py)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
HELPERS = ROOT / "tests" / "helpers"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run `python -m effbench ARGS` as a user would; returns the CompletedProcess."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + str(HELPERS) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "effbench", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          timeout=timeout, env=e)


def require(module: str, extra: str):
    """Import an optional runtime a test exercises, or fail the test naming the extra that installs it.

    Never a skip: `make test` installs every extra, so a missing one is a broken install that CI must see."""
    import importlib

    import pytest
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"{module} is not importable ({e}): pip install -e '.[{extra}]' (make test installs every extra)",
                    pytrace=False)
