"""Plants a slowdown during a cell (tests/test_execute.py, loaded as a plugin by EFFBENCH_PLUGINS): the drift
sentinel after each group times its real workload on a clock that runs 1.5x fast, as it would read on a
machine that had become 1.5x slower while the group was measured."""
import time

from effbench.measure import latency

SLOWDOWN = 1.5


def _after_a_slowdown(*holders: dict) -> float:
    for h in holders:
        h.clear()
    start = time.perf_counter_ns()
    return latency.sentinel_us(clock=lambda: start + int((time.perf_counter_ns() - start) * SLOWDOWN))


latency.sentinel_released = _after_a_slowdown
