"""LoadGen's peak search against queueing theory: a fake system under test with a deterministic 1 ms service
(a sleep, which releases the GIL as a runtime's call does) must peak near the M/D/1 rate whose p90 sojourn
equals the bound. LoadGen's early stopping asks for a margin below the bound, so its VALID peak sits a
little under the analytic rate, never above it (a machine that steals the CPU only adds latency)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import optimize

from effbench.scenarios.loadgen import SERVER, LoadGenSettings, find_max_qps, server_runner


def md1_peak(d_s: float, bound_s: float, percentile: float) -> float:
    """The arrival rate at which the M/D/1 sojourn time's percentile equals the bound. Erlang's waiting
    time distribution: P(W <= t) = (1 - rho) sum_{k=0}^{floor(t/D)} (lam (kD - t))^k / k! e^{-lam (kD - t)}."""
    def cdf_wait(t: float, lam: float) -> float:
        return (1 - lam * d_s) * sum((lam * (k * d_s - t)) ** k / math.factorial(k) * math.exp(-lam * (k * d_s - t))
                                     for k in range(int(t // d_s) + 1))
    return optimize.brentq(lambda lam: cdf_wait(bound_s - d_s, lam) - percentile / 100, 1e-3, 0.9999 / d_s)


def test_md1_formula_agrees_with_a_simulated_queue():
    rng = np.random.default_rng(0)
    lam = md1_peak(1.0, 5.0, 90)
    arrivals = np.cumsum(rng.exponential(1 / lam, 200_000))
    done, lat = 0.0, np.empty(len(arrivals))
    for i, t in enumerate(arrivals):  # Lindley's recursion, service 1
        done = max(t, done) + 1.0
        lat[i] = done - t
    assert np.percentile(lat, 90) == pytest.approx(5.0, rel=0.03)


@pytest.mark.slow
def test_loadgens_server_search_finds_the_md1_peak_on_a_fake_runner(tmp_path):
    def call() -> None:
        time.sleep(0.001)
    service = []
    for _ in range(40):
        t0 = time.perf_counter()
        call()
        service.append(time.perf_counter() - t0)
    d = float(np.median(service))
    bound_ms = 5 * d * 1e3
    expected = md1_peak(d, bound_ms / 1e3, 90)
    base = LoadGenSettings(scenario=SERVER, target_qps=1.0, latency_bound_ms=bound_ms, percentile=90,
                           min_duration_ms=1000, min_query_count=600)
    res = find_max_qps(server_runner({1: call}, base, tmp_path, qsl_samples=1, threads=1), 0.5 / d, min_qps=1.0,
                       budget_s=90)
    assert res.best is not None, res.ended
    assert res.max_qps <= 1.10 * expected, (res.max_qps, expected, res.ended)
    assert res.max_qps >= 0.6 * expected, (res.max_qps, expected, res.ended)
    assert res.best.valid and res.best.percentile_ms <= bound_ms
    # above the peak LoadGen says INVALID: every run above 1.05x of it failed
    assert all(not r.valid for r in res.runs if r.settings.target_qps > 1.05 * res.max_qps)
