"""Plants a slowdown during a cell (tests/test_execute.py, loaded as a plugin by EFFBENCH_PLUGINS): the drift
sentinel after each group reads exactly 1.5x what it read before the group, as it would on a machine that had
become 1.5x slower while the group was measured. The reading before is the real sentinel's; the one after is
derived from it rather than timed again, so the VM's own speed flips (up to 2x here) cannot blur the plant."""
from effbench.measure import latency

SLOWDOWN = 1.5
_real_sentinel_us = latency.sentinel_us
_before: list[float] = []


def _recorded(*args, **kwargs) -> float:
    us = _real_sentinel_us(*args, **kwargs)
    _before.append(us)
    return us


def _after_a_slowdown(*holders: dict) -> float:
    for h in holders:
        h.clear()
    return _before[-1] * SLOWDOWN


latency.sentinel_us = _recorded
latency.sentinel_released = _after_a_slowdown
