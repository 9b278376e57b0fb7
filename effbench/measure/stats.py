"""Uncertainty over rounds: the estimates a record reports for a cell's latency and its speedup vs FP32.

Samples inside one worker are not independent of the machine's state (FIELD-NOTES: it flips by up to
2x for seconds at a time), so a CI over them covers one moment only. A round is a fresh worker at
another moment; the CIs here are taken over rounds.
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
