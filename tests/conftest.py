import os
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
