"""Pure statistics: the estimates a record reports over rounds (a cell's latency, its speedup vs FP32) and
the tests, CIs and noise floors the gate decides with. Values in, numbers out: no record knowledge here.

Samples inside one worker are not independent of the machine's state (docs/runtime-notes.md: it flips by up to
2x for seconds at a time), so a CI over them covers one moment only. A round is a fresh worker at
another moment; the estimates a record reports are taken over rounds.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CI_LEVEL = 0.95
SCOPE_ROUNDS = "between rounds"
SCOPE_ONE_MOMENT = "one moment (1 round)"
# A latency whose 95% CI over rounds is wider than this (half-width / median) is flagged `unstable`.
UNSTABLE_REL_HALFWIDTH = 0.10
# A paired speedup's CI is never narrower than +-2%. Why: bench/reproducibility.py ran the same suite
# three times; estimates of one cell from separate runs differed by 1-2% more than their rounds' spread
# showed (rounds a few seconds apart share the machine's longer moods), and the bare t-interval over
# rounds contained the median of the three runs in only 79% of cells. The floor is stated in the record.
PAIRED_CI_FLOOR = 0.02


@dataclass(frozen=True)
class Estimate:
    """A point value with its CI, how many independent values it came from and what the CI covers."""

    value: float
    lo: float
    hi: float
    n: int
    method: str
    scope: str
    level: float = CI_LEVEL

    @property
    def rel_halfwidth(self) -> float:
        return (self.hi - self.lo) / 2 / self.value if self.value > 0 else math.inf

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi


def median_ci_ranks(n: int, level: float = CI_LEVEL) -> tuple[int, int]:
    """0-based ranks (lo, hi) of the distribution-free order-statistic CI of the median.

    The number of samples below the true median is Binomial(n, 1/2); [x_(j), x_(n-j+1)] covers the
    median with probability >= level (for n < 6 no pair of ranks reaches 95%: the whole range is used).
    """
    if n <= 0:
        return 0, 0
    from scipy import stats as sps  # imported here: workers and the CLI start faster without it
    j = max(int(sps.binom.ppf((1 - level) / 2, n, 0.5)), 1)  # 1-based lower rank
    return j - 1, n - j


def median_ci(values: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float]:
    a = np.sort(np.asarray(values, dtype=np.float64))
    lo, hi = median_ci_ranks(len(a), level)
    return float(a[lo]), float(a[hi])


def over_rounds(values: Sequence[float], level: float = CI_LEVEL) -> Estimate | None:
    """Median of per-round values with a CI over rounds: Student's t on the logs of the values.

    Why t on logs and not the order-statistic CI: with the 3-5 rounds a run can afford, the widest
    order-statistic interval (min, max) covers the median only 75-94% of the time; t is exact for
    log-normal round values and widens honestly when there are few. Latencies and their ratios are
    positive and multiplicative, hence logs. The interval is stretched to contain the median.
    """
    v = [float(x) for x in values if x is not None and x > 0 and math.isfinite(x)]
    if len(v) < 2:
        return None
    from scipy import stats as sps
    logs = np.log(v)
    n = len(v)
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * float(np.std(logs, ddof=1)) / math.sqrt(n)
    center = float(np.median(v))
    gm = float(np.mean(logs))
    lo, hi = math.exp(gm - half), math.exp(gm + half)
    return Estimate(center, min(lo, center), max(hi, center), n, f"t-interval on logs over {n} rounds",
                    SCOPE_ROUNDS, level)


def with_floor(est: Estimate, floor: float = PAIRED_CI_FLOOR) -> Estimate:
    """The estimate with its CI widened to at least +-floor (relative) around its value, labelled."""
    lo, hi = min(est.lo, est.value / (1 + floor)), max(est.hi, est.value * (1 + floor))
    if (lo, hi) == (est.lo, est.hi):
        return est
    return Estimate(est.value, lo, hi, est.n, f"{est.method}, widened to the +-{floor:.0%} floor between runs",
                    est.scope, est.level)


def within_one_round(values: Sequence[float], level: float = CI_LEVEL) -> Estimate | None:
    """Median of values from one worker (samples, or block ratios) with its order-statistic CI.
    It covers one moment of the machine only, and says so."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None
    lo, hi = median_ci(v, level)
    return Estimate(float(np.median(v)), lo, hi, len(v), f"order statistics over {len(v)} values of one worker",
                    SCOPE_ONE_MOMENT, level)


# --------------------------------------------------------------------------- tests and CIs that decide

# CIs that decide (the gate's non-overlap tests) are at 99%; the estimates above, which describe, at 95%.
DECISION_LEVEL = 0.99
# The noise floor is the half-width of this CI of a cell's median over rounds (see `noise_floor`).
FLOOR_LEVEL = 0.95


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in input order."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if not m:
        return []
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj = np.maximum.accumulate(adj)
    out = np.empty(m)
    out[order] = adj
    return [float(x) for x in out]


def mwu_min_p(n1: int, n2: int) -> float:
    """Smallest two-sided p-value the exact Mann-Whitney U test can give for these sizes."""
    if not (n1 and n2):
        return 1.0
    log_comb = math.lgamma(n1 + n2 + 1) - math.lgamma(n1 + 1) - math.lgamma(n2 + 1)
    return min(1.0, 2.0 * math.exp(-log_comb))


def wilcoxon_min_p(n: int) -> float:
    """Smallest two-sided p-value the exact signed-rank (or sign) test can give for n pairs."""
    return min(1.0, 2.0 / 2.0 ** n) if n else 1.0


def mann_whitney_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value of x vs y; 1 when every value is the same."""
    if np.ptp(list(x) + list(y)) == 0:
        return 1.0
    from scipy import stats as sps
    return float(sps.mannwhitneyu(x, y, alternative="two-sided").pvalue)


def signed_rank_p(d: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value that the differences `d` centre on 0 (zeros split)."""
    if not np.any(np.asarray(d) != 0):
        return 1.0
    from scipy import stats as sps
    return float(sps.wilcoxon(d, alternative="two-sided", zero_method="zsplit").pvalue)


def median_ci_coverage(values: Sequence[float], level: float = DECISION_LEVEL) -> tuple[float, float, float]:
    """(lo, hi, actual coverage): order-statistic CI of the median; small n cannot reach `level`."""
    from scipy import stats as sps
    a = np.sort(np.asarray(values, dtype=float))
    n = len(a)
    lo, hi = median_ci_ranks(n, level)
    cover = float(sps.binom.cdf(hi, n, 0.5) - sps.binom.cdf(lo, n, 0.5)) if n else 0.0
    return float(a[lo]), float(a[hi]), cover


def quantile_ci(values: Sequence[float], q: float, level: float = DECISION_LEVEL) -> tuple[float, float] | None:
    """Distribution-free CI of the q-quantile (ranks from Binomial(n, q)); None when n is too small."""
    a = np.sort(np.asarray(values, dtype=float))
    n = len(a)
    if not n:
        return None
    from scipy import stats as sps
    tail = (1 - level) / 2
    lo = int(sps.binom.ppf(tail, n, q))          # 1-based: P(B < lo) < tail
    hi = int(sps.binom.ppf(1 - tail, n, q)) + 1  # 1-based: P(B <= hi - 1) >= 1 - tail
    if lo < 1 or hi > n:
        return None
    return float(a[lo - 1]), float(a[hi - 1])


def noise_floor(values: Sequence[float], *, logs: bool = False) -> float | None:
    """Noise floor of one cell: how far its median over rounds can move by the rounds' spread alone.

    The half-width of the 95% order-statistic CI of the median of the per-round values, in log space,
    as a relative change: exp((log x_(hi) - log x_(lo)) / 2) - 1. With 5 rounds or fewer the interval is
    the whole range (rounds reading 10 and 12 ms: 9.5%). It shrinks as rounds are added, which is how a
    cell whose floor hides the threshold becomes decidable; the whole range would grow instead (more
    rounds, more extremes) and one stray round would set it. `logs`: the values are already log ratios.
    """
    v = [x for x in values if x is not None and (logs or x > 0)]
    if len(v) < 2:
        return None
    lv = sorted(v if logs else (math.log(x) for x in v))
    lo, hi = median_ci_ranks(len(lv), FLOOR_LEVEL)
    return math.exp((lv[hi] - lv[lo]) / 2) - 1


def combined_floor(a: float | None, b: float | None) -> float | None:
    """Floor of a ratio of two independent medians: the two log floors added in quadrature."""
    parts = [math.log1p(f) for f in (a, b) if f is not None]
    return math.exp(math.hypot(*parts)) - 1 if parts else None
