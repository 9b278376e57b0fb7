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
REAL_POPEN_INIT = subprocess.Popen.__init__


def _declares_processes(item) -> bool:
    return bool(item.get_closest_marker("slow") or item.get_closest_marker("spawns"))


def _guarded(item):
    """Around each phase (setup with its fixtures, the call, teardown) of a test that does not declare
    processes: `subprocess.Popen` refuses, and the attempt is recorded for `_processes_are_declared`."""
    def init(self, *args, **kwargs):
        item.stash[STARTED].append(args[0] if args else kwargs.get("args"))
        raise RuntimeError("a test not marked spawns or slow started a process")
    return init


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """A test that starts a process (a measuring worker, the CLI, a Ray node), in its body or in a fixture it
    sets up, says so with `@pytest.mark.spawns` or `@pytest.mark.slow`: `make test-fast` leaves those out and
    must not start one."""
    item.stash[STARTED] = []
    yield from _phase(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield from _phase(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield from _phase(item)


def _phase(item):
    if _declares_processes(item):
        yield
        return
    subprocess.Popen.__init__ = _guarded(item)
    try:
        yield
    finally:
        subprocess.Popen.__init__ = REAL_POPEN_INIT


@pytest.fixture(autouse=True)
def _processes_are_declared(request):
    """Fails an undeclared test that started a process even where the code under test swallowed the refusal."""
    yield
    started = request.node.stash.get(STARTED, [])
    if started and not _declares_processes(request.node):
        pytest.fail(f"this test started a process ({str(started[0])[:120]}) but is not marked spawns or slow")
