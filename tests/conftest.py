import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
HELPERS = ROOT / "tests" / "helpers"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run `python -m effbench ARGS` as a user would; returns the CompletedProcess."""
    import os
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + str(HELPERS) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "effbench", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          timeout=timeout, env=e)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the session: the zoo trains and exports once, like a user's ~/.cache/effbench."""
    return tmp_path_factory.mktemp("effbench-cache")


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
