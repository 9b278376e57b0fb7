"""The competitor is measured (cores busy outside our process tree) and acted on: wait it out, else run with
the cores it leaves free, and say so."""
from __future__ import annotations

import pytest

from effbench.measure import contention
from effbench.measure.contention import Reading, _cpu_times, plan_threads


def _r(competitor: float) -> Reading:
    return Reading(competitor_cores=competitor, steal_cores=0.0, busy_cores=competitor, own_cores=0.0, window_s=0.5)


class Clock:
    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_proc_stat_parsing_counts_busy_steal_and_total():
    busy, steal, total, niced = _cpu_times("cpu  100 5 50 800 20 3 2 7 0 0\ncpu0 50 2 25 400 10 1 1 3 0 0\n")
    assert (busy, steal, total, niced) == (100 + 5 + 50 + 3 + 2, 7, 160 + 800 + 20 + 7, 5)
    with pytest.raises(ValueError):
        _cpu_times("intr 1 2 3\n")


def test_quiet_machine_keeps_the_threads():
    plan = plan_threads(2, cores=2, reader=lambda: _r(0.1), clock=Clock(0.5))
    assert (plan.threads, plan.action, plan.waited_s, plan.note) == (2, "quiet", 0.0, None)


def test_a_competitor_that_leaves_is_waited_out():
    readings = iter([_r(1.0), _r(1.0), _r(0.05)])
    plan = plan_threads(2, cores=2, reader=lambda: next(readings), clock=Clock(1.0), wait_s=20)
    assert plan.threads == 2 and plan.action == "waited" and plan.waited_s > 0
    assert "waited" in plan.note and "1.0 busy core" in plan.note


def test_a_competitor_that_stays_leaves_the_free_cores_and_is_named():
    plan = plan_threads(2, cores=2, reader=lambda: _r(0.98), clock=Clock(1.0), wait_s=5)
    assert plan.threads == 1 and plan.asked == 2 and plan.action == "fewer threads"
    assert "ran with 1 thread(s) instead of 2" in plan.note
    js = plan.to_json()
    assert js["threads_used"] == 1 and js["threads_asked"] == 2 and js["contention"]["competitor_cores"] == 0.98


def test_never_fewer_than_one_thread_and_fitting_threads_are_kept():
    assert plan_threads(2, cores=2, reader=lambda: _r(2.0), clock=Clock(1.0), wait_s=1).threads == 1
    plan = plan_threads(2, cores=4, reader=lambda: _r(1.0), clock=Clock(1.0), wait_s=1)
    assert plan.threads == 2 and plan.action == "waited"


def test_unreadable_proc_is_said_not_guessed():
    plan = plan_threads(2, reader=lambda: None)
    assert plan.threads == 2 and plan.action == "unmeasured" and plan.reading is None


@pytest.mark.spawns
def test_a_real_busy_process_counts_as_its_trees_own_time_and_as_a_competitor_elsewhere():
    import subprocess
    import sys
    import time
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        inside = contention.read(0.5, root=busy.pid)   # the spinning process is this tree's own time
        outside = contention.read(0.5, root=idle.pid)  # seen from an idle tree, it competes
    finally:
        for p in (busy, idle):
            p.kill()
            p.wait()
    assert inside is not None and outside is not None
    assert inside.own_cores > 0.2                      # it spins, however busy the machine is otherwise
    assert outside.own_cores < 0.05 and outside.competitor_cores > 0.2


@pytest.mark.spawns
def test_a_niced_spinner_is_no_competitor_but_is_reported():
    import subprocess
    import sys
    import time
    niced = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        seen = contention.read(0.5)
    finally:
        niced.kill()
        niced.wait()
    assert seen is not None and seen.niced_cores > 0.2            # it spins, at nice 19
    assert seen.competitor_cores < seen.busy_cores - seen.niced_cores + 0.05
