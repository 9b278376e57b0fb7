"""MLPerf's early-stopping figures (`measure.early_stopping`, used by single-stream's percentiles) and the
load scenarios' batch shapes. The load itself is MLPerf LoadGen's: tests/scenarios/test_loadgen.py."""
from __future__ import annotations

import math
import time

import numpy as np
from scipy import stats

from effbench.measure import early_stopping
from effbench.measure.latency import LatencyStats
from effbench.scenarios import batches


def sleeper(seconds: float):
    def call() -> None:
        time.sleep(seconds)
    return call


def service_s(call, n: int = 40) -> float:
    """The fake's real service time here (a sleep overruns by the timer slack and the scheduler)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return float(np.median(out))


# ------------------------------------------------------------------------------ early stopping
def test_early_stopping_minimums_are_loadgens():
    # MLPerf LoadGen's published minimums for one overrun at 99% confidence
    assert early_stopping.min_queries(1, 90) == 64 and early_stopping.min_queries(1, 99) == 662
    assert early_stopping.min_queries(0, 99) == math.ceil(math.log(0.01) / math.log(0.99))  # y1 of early_stopping.cc
    # the definition: the fewest n at which P(Binomial(n, 1 - p) <= t) <= 1 - confidence
    for t, p in ((3, 90), (10, 99)):
        n = early_stopping.min_queries(t, p)
        assert stats.binom.cdf(t, n, 1 - p / 100) <= 0.01 < stats.binom.cdf(t, n - 1, 1 - p / 100)


def test_early_stopping_estimate_needs_the_minimum_and_is_conservative():
    assert early_stopping.early_stopping_estimate(np.arange(63.0), 90) is None
    assert early_stopping.early_stopping_estimate(np.arange(64.0), 90) == 63.0  # t = 1: the largest sample
    assert early_stopping.early_stopping_estimate(np.arange(661.0), 99) is None
    x = np.random.default_rng(0).lognormal(0, 0.5, 20_000)
    est = early_stopping.early_stopping_estimate(x, 90)
    # above the sample percentile (it bounds the true one at 99% confidence), but not by much at n = 20000
    assert np.percentile(x, 90) < est < np.percentile(x, 91)


def test_latency_stats_carry_the_early_stopping_estimates():
    st = LatencyStats(tuple(float(i) * 1e6 for i in range(1, 701)))  # 1 .. 700 ms
    j = st.to_json()
    assert j["p90_early_stopping"] >= j["p90"] and j["p99_early_stopping"] >= j["p99"]
    assert LatencyStats(tuple(float(i) for i in range(100)), timing="blocks").to_json()["p90_early_stopping"] is None
    assert LatencyStats(tuple(float(i) for i in range(100))).to_json()["p99_early_stopping"] is None


# ------------------------------------------------------------------------------ offline
def test_batch_shapes_of_a_pool_and_a_batcher():
    assert batches.pool_sizes(100, 32) == [4, 32] and batches.pool_sizes(64, 32) == [32] and batches.pool_sizes(5, 32) == [5]
    assert batches.batcher_sizes(1) == [1] and batches.batcher_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert batches.batcher_sizes(6) == [1, 2, 4, 6] and batches.padded_size(5, [1, 2, 4, 6]) == 6


def linear_cost(overhead_s: float, per_sample_s: float, sizes):
    """A call that costs a fixed overhead plus a time per sample: what batching amortises."""
    return {k: sleeper(overhead_s + per_sample_s * k) for k in sizes}


