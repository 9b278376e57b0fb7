"""Under a busy competitor a group waits, then runs with the cores it leaves free, and the record says so
(issue 30 item 6); `fewer_threads: false` keeps the asked threads and says that too."""
from __future__ import annotations

import subprocess
import sys

import pytest

from effbench.cli.summary import summary_table
from effbench.config.suite import load_suite
from effbench.execution.run import run

SUITE = """name: ct
models:
  - id: mlp
    source: {builtin: mlp}
precisions: [fp32, int8]
runners:
  - {name: onnxruntime, threads: 2}
batch_sizes: [1]
scenarios: [{single-stream: {loadgen: false}}]
measure: {warmup_s: 0.02, min_time_s: 0.05, max_time_s: 0.2, rounds: 2, contention: %s}
"""


def _busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("fewer", [True, False])
def test_a_competitor_that_stays_costs_threads_and_the_record_says_so(tmp_path, cache_dir, fewer):
    path = tmp_path / "s.yaml"
    path.write_text(SUITE % ("{wait_s: 2.5, fewer_threads: %s}" % str(fewer).lower()))
    hogs = _busy(1)   # one core kept busy: the competitor of issue 30 item 6
    try:
        res = run(load_suite(path), out_dir=tmp_path / "out", cache_dir=cache_dir, progress=False)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    rec = next(r for r in res if r.cell.variant == "int8")
    entry, later = rec.drift.rounds[0], rec.drift.rounds[1]
    assert entry["threads_asked"] == 2 and entry["contention"]["competitor_cores"] >= 0.5
    assert entry["waited_s"] >= 2.4
    # it outlasted one full wait: the next round's group only checks it is still there
    assert later["waited_s"] <= 1.4 and later["action"] == entry["action"]
    if fewer:
        assert entry["action"] == "fewer threads" and entry["threads_used"] == 1
        assert rec.variant.runtime["intra_op_num_threads"] == 1
        assert "fewer threads (1)" in summary_table(res)
    else:
        assert entry["action"] == "kept threads" and entry["threads_used"] == 2
        assert rec.variant.runtime["intra_op_num_threads"] == 2
        assert "fewer threads" not in summary_table(res)


def test_contention_settings_are_checked(tmp_path):
    from effbench.errors import UserError
    path = tmp_path / "s.yaml"
    path.write_text(SUITE % "{wait_s: -1}")
    with pytest.raises(UserError, match="wait_s"):
        load_suite(path)
