"""MLPerf LoadGen's early stopping (loadgen/early_stopping.cc, results.cc): how many queries bound a
latency percentile at 99% confidence, and the percentile estimate they allow. Pure statistics.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# LoadGen's early stopping: 99% confidence, tolerance 0 (results.cc, PerformanceSummary::EarlyStopping).
EARLY_STOPPING_CONFIDENCE = 0.99

def _overrun_bounded(n: int, t: int, q: float, confidence: float) -> bool:
    """LoadGen's test for n queries of which t overran: odds(h, t, p, d) = BetaRegularized[p - d, h, 1 + t]
    = P(Binomial(h + t, q) <= t) with q = 1 - p (d = 0), and n >= MinPassingQueries(t) + t exactly when
    P(Binomial(n, q) <= t) <= 1 - confidence (that probability falls as n grows)."""
    from scipy import stats
    return bool(stats.binom.cdf(t, n, q) <= 1 - confidence)


def min_queries(overruns: int, percentile: float, confidence: float = EARLY_STOPPING_CONFIDENCE) -> int:
    """h + t of early_stopping.cc: the fewest queries with which `overruns` over-latency queries still bound
    the percentile at `confidence` (t = 1: 64 for p90, 662 for p99)."""
    q = 1 - percentile / 100
    hi = overruns + 1
    while not _overrun_bounded(hi, overruns, q, confidence):
        hi *= 2
    lo = hi // 2
    while lo + 1 < hi:  # the smallest passing n in (lo, hi]
        mid = (lo + hi) // 2
        if _overrun_bounded(mid, overruns, q, confidence):
            hi = mid
        else:
            lo = mid
    return hi


def early_stopping_estimate(samples: Sequence[float], percentile: float,
                            confidence: float = EARLY_STOPPING_CONFIDENCE) -> float | None:
    """LoadGen's single-stream early-stopping estimate of a percentile (results.cc): the t-th largest
    sample, t the most queries above the percentile that n queries may hold while still bounding it at
    `confidence`. None below the minimum count (64 queries for p90, 662 for p99)."""
    n = len(samples)
    if n == 0:
        return None
    from scipy import stats
    q = 1 - percentile / 100
    top = min(n, int(n * q + 10 * math.sqrt(n * q + 1) + 10))
    ts = np.arange(0, top + 1)
    ok = ts[stats.binom.cdf(ts, n, q) <= 1 - confidence]
    if not len(ok) or ok.max() < 1:
        return None
    t = int(ok.max())
    return float(np.sort(np.asarray(samples, dtype=np.float64))[n - t])


def percentile_of(samples: Sequence[float] | np.ndarray, percentile: float) -> float:
    """The percentile as LoadGen reads it (results.cc: sorted[n * p]), not interpolated."""
    a = np.sort(np.asarray(samples, dtype=np.float64))
    return float(a[min(len(a) - 1, int(len(a) * percentile / 100))]) if len(a) else math.nan
