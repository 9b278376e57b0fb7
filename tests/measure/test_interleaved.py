"""The paired estimator on a fake machine whose speed flips: interleaved blocks in one worker recover
the true ratio where two separately timed medians do not (issue "Numbers that hold")."""
from __future__ import annotations

import math

import numpy as np
import pytest

from effbench.measure.latency import Budget, block_ratios, measure_interleaved
from effbench.measure.stats import SCOPE_ONE_MOMENT, SCOPE_ROUNDS, over_rounds, within_one_round


class FlippingMachine:
    """A clock that advances only when a model runs: each call costs its base time x the machine's
    current slowdown, which flips between 1x and 2x every `period_s` of fake time (as docs/runtime-notes.md
    describes these VMs), plus a little seeded jitter."""

    def __init__(self, period_s: float = 1.5, seed: int = 0) -> None:
        self.t = 0
        self.period_ns = period_s * 1e9
        self.rng = np.random.default_rng(seed)

    def clock(self) -> int:
        return int(self.t)

    def slowdown(self) -> float:
        return 2.0 if (self.t // self.period_ns) % 2 else 1.0

    def model(self, cost_ns: float):
        def call() -> None:
            self.t += cost_ns * self.slowdown() * (1 + 0.02 * self.rng.standard_normal())
        return call


BUDGET = Budget(warmup_s=0.05, min_time_s=0.5, max_time_s=3.0, target_rel_ci=0.01)


def paired_speedup(machine: FlippingMachine, costs: dict[str, float], seed: int = 0) -> float:
    calls = {k: machine.model(c) for k, c in costs.items()}
    timed = measure_interleaved(calls, BUDGET, overhead_ns=10.0, references={"int8": "fp32"}, seed=seed,
                                clock=machine.clock)
    return within_one_round(timed.ratios("fp32", "int8")).value


def test_paired_blocks_recover_the_true_ratio_through_speed_flips():
    # int8 is truly 2x faster. The machine flips speed several times during the round.
    m = FlippingMachine(period_s=0.25)
    sp = paired_speedup(m, {"fp32": 100_000, "int8": 50_000})
    assert m.t > 3 * 0.25e9                    # the round really spanned several flips
    assert sp == pytest.approx(2.0, rel=0.03)


def test_separately_timed_medians_do_not():
    # The same two models, each in its own "worker" at another moment (as cells used to be measured):
    # fp32 lands in the fast state, int8 in the slow one, and the ratio of medians reads 1x, not 2x.
    m = FlippingMachine(period_s=1.5)
    fp32 = measure_interleaved({"fp32": m.model(100_000)}, BUDGET, overhead_ns=10.0, clock=m.clock)
    m.t = 1.6e9                                 # the next worker starts in the slow state
    int8 = measure_interleaved({"int8": m.model(50_000)}, BUDGET, overhead_ns=10.0, clock=m.clock)
    unpaired = fp32.stats["fp32"].median_ns / int8.stats["int8"].median_ns
    assert unpaired == pytest.approx(1.0, rel=0.05)
    # ... while the paired estimator on the same machine, starting at the same moment, reads 2x
    m2 = FlippingMachine(period_s=1.5)
    assert paired_speedup(m2, {"fp32": 100_000, "int8": 50_000}) == pytest.approx(2.0, rel=0.03)


def test_every_member_meets_its_stopping_rule_and_done_members_sit_out():
    m = FlippingMachine(period_s=10)
    calls = {"fp32": m.model(100_000), "int8": m.model(50_000), "fp16": m.model(400_000)}
    timed = measure_interleaved(calls, BUDGET, overhead_ns=10.0, references={"int8": "fp32", "fp16": "fp32"},
                                clock=m.clock)
    for name, st in timed.stats.items():
        assert st.elapsed_s >= BUDGET.min_time_s and st.n >= BUDGET.min_n, name
        assert st.first_call_ns is not None
        assert len(timed.block_ms[name]) == timed.cycles
    # a member that sat out a cycle holds NaN there, and its ratios skip those cycles
    sat_out = [x for x in timed.block_ms["int8"] if math.isnan(x)]
    assert len(block_ratios(timed.block_ms["fp32"], timed.block_ms["int8"])) == timed.cycles - len(sat_out)


def test_reference_stays_while_a_member_needs_it():
    m = FlippingMachine(period_s=100)
    calls = {"fp32": m.model(10_000), "slow": m.model(1_000_000)}
    timed = measure_interleaved(calls, BUDGET, overhead_ns=10.0, references={"slow": "fp32"}, clock=m.clock)
    # fp32 alone would be done long before `slow` has its min_time: it is timed in every cycle anyway
    assert not any(math.isnan(x) for x in timed.block_ms["fp32"])
    assert len(block_ratios(timed.block_ms["fp32"], timed.block_ms["slow"])) == timed.cycles


def test_max_time_bounds_a_member_that_never_meets_its_target():
    m = FlippingMachine(period_s=0.05)  # flips inside every block: the CI target is never met
    calls = {"fp32": m.model(100_000)}
    timed = measure_interleaved(calls, Budget(warmup_s=0.01, min_time_s=0.2, max_time_s=1.0, target_rel_ci=0.001),
                                overhead_ns=10.0, clock=m.clock)
    st = timed.stats["fp32"]
    assert 1.0 <= st.elapsed_s < 1.2 and st.unstable


def test_over_rounds_ci_is_over_rounds_and_contains_the_median():
    est = over_rounds([1.9, 2.0, 2.1])
    assert est.scope == SCOPE_ROUNDS and est.n == 3
    assert est.value == 2.0 and est.lo < 1.9 < 2.1 < est.hi
    # Student's t with 2 degrees of freedom on the logs (t_0.975,2 = 4.3027; tables), not the normal's 1.96:
    # with 3 rounds the normal interval [1.888, 2.115] would claim twice the certainty
    logs = np.log([1.9, 2.0, 2.1])
    half = 4.302653 * logs.std(ddof=1) / math.sqrt(3)
    assert (est.lo, est.hi) == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)), rel=1e-5)
    assert (est.lo, est.hi) == pytest.approx((1.7647, 2.2629), abs=1e-4)
    # one round is not an estimate over rounds
    assert over_rounds([2.0]) is None
    one = within_one_round([1.9, 2.0, 2.1, 2.0, 1.95, 2.05, 2.0])
    assert one.scope == SCOPE_ONE_MOMENT and one.lo <= one.value <= one.hi


def test_over_rounds_widens_with_spread_and_narrows_with_rounds():
    tight = over_rounds([2.0, 2.02, 1.98])
    loose = over_rounds([2.0, 2.4, 1.6])
    many = over_rounds([2.0, 2.4, 1.6] * 4)
    assert tight.rel_halfwidth < loose.rel_halfwidth
    assert many.rel_halfwidth < loose.rel_halfwidth


def test_aligned_inputs_start_on_64_bytes_and_keep_their_values():
    from effbench.measure.latency import aligned
    for shape, dtype in (((3, 5), np.float32), ((7,), np.int64), ((2, 1, 8, 8), np.float16)):
        x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
        a = aligned(x[..., ::-1])  # even from a non-contiguous view
        assert a.ctypes.data % 64 == 0 and a.flags["C_CONTIGUOUS"]
        assert a.dtype == x.dtype and np.array_equal(a, x[..., ::-1])


def test_paired_ci_floor_widens_a_too_narrow_ci_and_says_so():
    from effbench.measure.stats import PAIRED_CI_FLOOR, with_floor
    narrow = over_rounds([2.0, 2.001, 1.999, 2.0, 2.0])
    wide = with_floor(narrow)
    assert wide.lo == pytest.approx(2.0 / (1 + PAIRED_CI_FLOOR)) and wide.hi == pytest.approx(2.0 * (1 + PAIRED_CI_FLOOR))
    assert "floor" in wide.method and wide.value == narrow.value
    loose = over_rounds([2.0, 2.4, 1.6])
    assert with_floor(loose) == loose   # already wider than the floor: untouched


class Clockwork:
    """A clock that advances only when a model runs, by exactly its cost (no jitter): every figure of an
    interleaved round can then be worked out by hand. `log` holds the name of each call, in order."""

    def __init__(self) -> None:
        self.t = 1_000_000_007  # not 0: an interval is a difference of two readings
        self.log: list[str] = []

    def clock(self) -> int:
        return self.t

    def model(self, name: str, cost_ns: int, first_extra_ns: int = 0):
        calls = iter(range(10 ** 9))

        def call() -> None:
            self.log.append(name)
            self.t += cost_ns + (first_extra_ns if next(calls) == 0 else 0)
        return call


def _clockwork_round(seed: int | None = 0, **budget):
    m = Clockwork()
    calls = {"fp32": m.model("fp32", 100_000, first_extra_ns=5_000_000),  # per call: >= 100 x the 10 ns overhead
             "tiny": m.model("tiny", 800),                                 # in blocks of 2 calls (1000 / 800)
             "slow": m.model("slow", 10_000_000)}                          # 3 samples a block (the minimum)
    b = Budget(**{"warmup_s": 0.0, "min_time_s": 0.0, "max_time_s": 100.0, "target_rel_ci": 0.0,
                  "min_warmup_calls": 3, "min_n": 18, **budget})
    refs = {"tiny": "fp32", "gone": "fp32", "slow": "absent"}  # references to members not timed are ignored
    kw = {} if seed is None else {"seed": seed}
    return measure_interleaved(calls, b, overhead_ns=10.0, references=refs, clock=m.clock, **kw), m


def test_an_interleaved_round_on_a_clockwork_machine():
    """Every member's figures by hand: 6 cycles (the minimum; every member meets n >= 18 and a CI of 0 then),
    blocks of 20 ms or 3 samples, per-call timing or blocks of calls, the first call apart."""
    import gc
    timed, _ = _clockwork_round()
    assert timed.cycles == 6 and gc.isenabled()
    fp32, tiny, slow = timed.stats["fp32"], timed.stats["tiny"], timed.stats["slow"]
    assert (fp32.timing, fp32.block_size, fp32.first_call_ns) == ("per-call", 1, 5_100_000.0)
    assert fp32.n == 6 * 200 and set(fp32.samples_ns) == {100_000.0} and fp32.calls == 1200
    assert fp32.elapsed_s == 1200 * 100_000 / 1e9 and not fp32.unstable
    assert (tiny.timing, tiny.block_size) == ("blocks", 2) and set(tiny.samples_ns) == {800.0}
    assert tiny.n == 6 * 12_500 and tiny.calls == 2 * tiny.n and tiny.elapsed_s == 2 * tiny.n * 800 / 1e9
    assert (slow.n, slow.timing, slow.elapsed_s) == (18, "per-call", 18 * 0.01) and not slow.unstable  # n == min_n
    assert timed.block_ms == {"fp32": [0.1] * 6, "tiny": [0.0008] * 6, "slow": [10.0] * 6}


def test_the_interleaving_order_is_the_seeds():
    def order(seed):
        _, m = _clockwork_round(seed)
        runs = [m.log[0]] + [b for a, b in zip(m.log, m.log[1:]) if a != b]
        return runs
    assert order(0) == order(0) == order(None)  # seed 0 by default, and the same order each time
    assert order(1) != order(0)


def test_members_leave_when_done_and_sit_out_as_nan():
    """A member that met its stopping rule sits out the cycles a slower one still needs (NaN blocks); the
    slower one is timed in every cycle."""
    m = Clockwork()
    calls = {"quick": m.model("quick", 100_000), "long": m.model("long", 10_000_000)}
    b = Budget(warmup_s=0.0, min_time_s=0.0, max_time_s=100.0, target_rel_ci=0.0, min_warmup_calls=3, min_n=30)
    # a reference to a member that is not timed is ignored, while `long` is still being timed too
    timed = measure_interleaved(calls, b, overhead_ns=10.0, references={"long": "absent"}, clock=m.clock)
    assert timed.cycles == 10  # long: 3 samples a cycle, 30 needed
    assert timed.block_ms["long"] == [10.0] * 10
    assert timed.block_ms["quick"][:6] == [0.1] * 6 and all(math.isnan(x) for x in timed.block_ms["quick"][6:])


@pytest.mark.parametrize("budget,cycles", [
    ({"max_time_s": 0.18, "target_rel_ci": -1.0}, 6),  # 6 cycles x 3 x 10 ms reach max_time exactly: stop
    ({"min_time_s": 0.18}, 6),                          # ... reach min_time exactly: may stop
    ({"min_time_s": 0.19}, 7),
])
def test_the_stopping_rule_at_its_edges(budget, cycles):
    m = Clockwork()
    b = Budget(**{"warmup_s": 0.0, "min_time_s": 0.0, "max_time_s": 100.0, "target_rel_ci": 0.0,
                  "min_warmup_calls": 3, "min_n": 18, **budget})
    timed = measure_interleaved({"slow": m.model("slow", 10_000_000)}, b, overhead_ns=10.0, clock=m.clock)
    assert timed.cycles == cycles


def test_block_ratios_skip_cycles_a_side_did_not_time():
    assert block_ratios([1.0, 0.0, math.nan, 2.0, 3.0], [0.5, 1.0, 1.0, 0.0, 1.5]) == [2.0, 2.0]
