"""The lane is honest: a test that starts a process without saying so fails, even when the code under test
swallows the refusal, and does not break the declared tests that run after it."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


@pytest.mark.spawns  # the inner session guards itself; the outer guard would refuse its declared test too
def test_an_undeclared_process_fails_and_the_next_declared_one_runs(pytester):
    conftest = (Path(__file__).parent / "conftest.py").read_text()
    pytester.makeconftest(conftest.replace("from ebtest import", "# from ebtest import"))
    pytester.makepyfile("""
import subprocess
import pytest

def test_a_undeclared():
    subprocess.run(["true"])

def test_b_undeclared_swallowed():
    try:
        subprocess.run(["true"])
    except RuntimeError:
        pass

@pytest.mark.spawns
def test_c_declared():
    assert subprocess.run(["true"]).returncode == 0
""")
    res = pytester.runpytest("-p", "no:cacheprovider")
    # a fails in its body and again at teardown; b's body passes (it swallowed the refusal) but teardown fails it
    res.assert_outcomes(passed=2, failed=1, errors=2)
    assert "not marked spawns or slow" in res.stdout.str()


def test_a_missing_runtime_fails_the_test_naming_its_extra_never_skips():
    from ebtest import require
    with pytest.raises(pytest.fail.Exception, match=r"pip install -e '\.\[openvino\]'"):
        require("effbench_no_such_runtime", "openvino")
    assert require("json", "test").dumps([1]) == "[1]"
