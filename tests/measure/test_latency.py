import itertools
import math
import time

import numpy as np
import pytest
from scipy.stats import quantile_test

from effbench.measure import latency
from effbench.measure.latency import Budget, LatencyStats, measure_latency, median_ci_ranks, paired_ratio


@pytest.mark.parametrize("n", [10, 64, 101, 1000])
def test_median_ci_matches_scipy_quantile_test(n):
    x = np.random.default_rng(n).lognormal(size=n)
    lo, hi = median_ci_ranks(n)
    ci = quantile_test(x, q=np.median(x), p=0.5).confidence_interval(0.95)
    s = np.sort(x)
    assert (s[lo], s[hi]) == pytest.approx((ci.low, ci.high))


def test_statistics_of_known_samples():
    samples = [1e6] * 50 + [2e6] * 49 + [100e6]  # ns: 1 ms x50, 2 ms x49, one 100 ms outlier
    st = LatencyStats(tuple(samples))
    j = st.to_json()
    assert j["n"] == 100
    assert j["median"] == pytest.approx(1.5)
    assert j["min"] == pytest.approx(1.0) and j["max"] == pytest.approx(100.0)
    assert j["outliers"] == 1          # flagged ...
    assert st.n == 100                 # ... never dropped
    assert j["p90_reliable"] is True and j["p99_reliable"] is False  # 100 < 662
    assert j["iqr"] == pytest.approx(1.0)


def test_blocks_mark_tails_not_measurable():
    st = LatencyStats(tuple([1000.0] * 5000), timing="blocks", block_size=50)
    j = st.to_json()
    assert j["p90_reliable"] is False and j["p99_reliable"] is False


def test_trivial_call_is_timed_in_blocks():
    st = measure_latency(lambda: None, Budget(warmup_s=0.01, min_time_s=0.05, max_time_s=0.5, target_rel_ci=0.5),
                         overhead_ns=200.0)
    assert st.timing == "blocks" and st.block_size >= 2


def test_slow_call_is_timed_per_call_and_first_call_apart():
    calls = itertools.count()

    def call():
        if next(calls) == 0:
            time.sleep(0.3)  # a slow first call (e.g. lazy initialisation) must not be a sample
        _spin(1e-3)
    st = measure_latency(call, Budget(warmup_s=0.01, min_time_s=0.1, max_time_s=2, target_rel_ci=0.2, min_n=16),
                         overhead_ns=200.0)
    assert st.timing == "per-call" and st.block_size == 1
    assert st.first_call_ns >= 0.3e9 and st.n >= 16
    # the first call is not among the samples: none comes near its 300 ms (a 1 ms call would have to be
    # held off the CPU for 150 ms to reach half of it)
    assert max(st.samples_ns) < 0.15e9


def test_noisy_call_hits_max_time_and_is_unstable():
    rng = np.random.default_rng(0)

    def call():
        _spin(float(rng.choice([0.2e-3, 2e-3])))  # bimodal: the median's CI cannot get to 0.1%
    st = measure_latency(call, Budget(warmup_s=0.0, min_time_s=0.05, max_time_s=0.3, target_rel_ci=0.001, min_n=8),
                         overhead_ns=200.0)
    assert st.unstable
    assert st.elapsed_s >= 0.3


def test_stored_samples_are_thinned_in_time_order():
    st = LatencyStats(tuple(float(i) for i in range(25_000)))
    kept = st.stored_samples_ms(limit=1000)
    assert len(kept) == 1000 and kept == sorted(kept) and kept[0] == 0.0
    assert not math.isnan(st.to_json()["median"])


def _spin(seconds: float) -> None:
    import time
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_paired_ratio_alternates_blocks_and_cancels_a_speed_flip(monkeypatch):
    # a fake clock: A costs 100 ns and B 130 ns, but the machine halves its speed every 5,000 ns;
    # blocks that alternate see the same state, so every pair's ratio is exactly 1.3
    clock = {"t": 0}
    monkeypatch.setattr(latency.time, "perf_counter_ns", lambda: clock["t"])
    order = []

    def make(name: str, cost: int):
        def call():
            slow = 2 if (clock["t"] // 5_000) % 2 else 1
            clock["t"] += cost * slow
            order.append(name)
        return call

    out = paired_ratio(make("a", 100), make("b", 130), duration_s=2e-4, warmup_s=0, min_block_s=1e-6,
                       min_block_calls=8, min_pairs=6)
    assert out["pairs"] >= 6 and out["calls_per_block"] == [10, 8]
    assert out["ratio"] == pytest.approx(1.3, rel=1e-9)
    # after 3 warmup and 5 probe calls each: blocks of 10 A and 8 B calls, A B, B A, A B ... so neither
    # side always runs first (a B A pair boundary joins two blocks of the same side)
    runs = [(k, len(list(g))) for k, g in itertools.groupby(order[16:])]
    assert runs[0] == ("a", 10)
    assert all(n in (10, 20) for k, n in runs if k == "a") and all(n in (8, 16) for k, n in runs if k == "b")
    assert ("a", 20) in runs and ("b", 16) in runs
