import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run: CI must not pass or fail by chance. A developer
# hunting for new cases can run with HYPOTHESIS_PROFILE=explore.
settings.register_profile("effbench", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "effbench"))

from ebtest import DATA, HELPERS, ROOT, run_cli  # noqa: F401  (re-exported for older imports)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the session: the zoo trains and exports once, like a user's ~/.cache/effbench."""
    return tmp_path_factory.mktemp("effbench-cache")


STARTED = pytest.StashKey[list]()


def _declares_processes(item) -> bool:
    return bool(item.get_closest_marker("slow") or item.get_closest_marker("spawns"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """A test that starts a process (a measuring worker, the CLI, a Ray node), in its body or in a fixture it
    sets up, says so with `@pytest.mark.spawns` or `@pytest.mark.slow`: `make test-fast` leaves those out and
    must not start one. An undeclared start fails (see `_processes_are_declared`)."""
    item.stash[STARTED] = []
    if _declares_processes(item):
        yield
        return
    real = subprocess.Popen.__init__

    def init(self, *args, **kwargs):
        item.stash[STARTED].append(args[0] if args else kwargs.get("args"))
        raise RuntimeError("a test not marked spawns or slow started a process")

    subprocess.Popen.__init__ = init
    try:
        yield
    finally:
        subprocess.Popen.__init__ = real


@pytest.fixture(autouse=True)
def _processes_are_declared(request, monkeypatch):
    started = request.node.stash.get(STARTED, [])
    if _declares_processes(request.node):
        yield
        return

    def init(self, *args, **kwargs):
        started.append(args[0] if args else kwargs.get("args"))
        raise RuntimeError("a test not marked spawns or slow started a process")

    monkeypatch.setattr(subprocess.Popen, "__init__", init)
    yield
    if started:
        pytest.fail(f"this test started a process ({str(started[0])[:120]}) but is not marked spawns or slow")
