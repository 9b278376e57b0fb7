from pathlib import Path

import pytest

from ebtest import DATA, HELPERS, ROOT, run_cli  # noqa: F401  (re-exported for older imports)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the session: the zoo trains and exports once, like a user's ~/.cache/effbench."""
    return tmp_path_factory.mktemp("effbench-cache")
