"""The pure statistics the records and the gate decide with, pinned to values worked out by hand (binomial
ranks, exact U and signed-rank minima, t quantiles from tables): the edges a mutation tester found
unguarded (issue 30)."""
from __future__ import annotations

import math

import pytest

from effbench.measure.stats import (
    SCOPE_ONE_MOMENT,
    SCOPE_ROUNDS,
    combined_floor,
    mann_whitney_p,
    median_ci,
    median_ci_coverage,
    median_ci_ranks,
    mwu_min_p,
    noise_floor,
    over_rounds,
    quantile_ci,
    signed_rank_p,
    wilcoxon_min_p,
    with_floor,
    within_one_round,
)

ONE_TO_TEN = [float(x) for x in range(1, 11)]


def test_median_ci_ranks_and_their_level():
    assert median_ci_ranks(0) == (0, 0) and median_ci_ranks(1) == (0, 0)
    # n = 10: P(B <= 1) = 11/1024 < 2.5% <= P(B <= 2): the 2nd and 9th values; at 50%, the 4th and 7th
    assert median_ci_ranks(10) == (1, 8) and median_ci_ranks(10, 0.5) == (3, 6)
    assert median_ci(ONE_TO_TEN) == (2.0, 9.0) and median_ci(ONE_TO_TEN, 0.5) == (4.0, 7.0)
    # the coverage the ranks really give: 1 - 2 x 11/1024, and 1 - 2 x 176/1024 at 50%
    assert median_ci_coverage(ONE_TO_TEN, 0.95) == (2.0, 9.0, pytest.approx(1 - 22 / 1024))
    assert median_ci_coverage(ONE_TO_TEN, 0.5) == (4.0, 7.0, pytest.approx(1 - 352 / 1024))


def test_over_rounds_takes_positive_finite_rounds_and_needs_two():
    assert over_rounds([2.0]) is None and over_rounds([2.0, 0.0, -1.0, math.nan, math.inf]) is None
    est = over_rounds([0.0, -1.0, math.nan, math.inf, None, 2.0, 2.2])  # only 2.0 and 2.2 are rounds
    assert est.n == 2 and est.value == pytest.approx(2.1) and est.method == "t-interval on logs over 2 rounds"
    # two rounds: t with 1 degree of freedom, 12.706 (tables), on logs 1 and 2
    est = over_rounds([1.0, 2.0])
    half = 12.7062047 * (math.log(2) / math.sqrt(2)) / math.sqrt(2)
    assert est.value == 1.5 and (est.lo, est.hi) == pytest.approx((math.exp(math.log(2) / 2 - half),
                                                                   math.exp(math.log(2) / 2 + half)), rel=1e-6)
    assert est.scope == SCOPE_ROUNDS and est.level == 0.95
    ninety = over_rounds([1.9, 2.0, 2.1], 0.9)  # t_0.95,2 = 2.920
    logs = [math.log(x) for x in (1.9, 2.0, 2.1)]
    mean, sd = sum(logs) / 3, math.sqrt(sum((v - sum(logs) / 3) ** 2 for v in logs) / 2)
    assert ninety.level == 0.9 and ninety.lo == pytest.approx(math.exp(mean - 2.919986 * sd / math.sqrt(3)), rel=1e-6)


def test_with_floor_keeps_what_the_ci_covers():
    est = over_rounds([1.9, 2.0, 2.1], 0.9)
    wide = with_floor(est, 0.5)
    assert (wide.lo, wide.hi) == pytest.approx((2.0 / 1.5, 3.0)) and wide.level == 0.9 and wide.scope == SCOPE_ROUNDS
    assert wide.method == "t-interval on logs over 3 rounds, widened to the +-50% floor between runs"
    assert with_floor(est, 0.01) is est  # already wider than the floor: unchanged
    assert wide.contains(wide.lo) and wide.contains(wide.hi) and not wide.contains(3.0001)


def test_within_one_round_drops_what_was_not_timed():
    est = within_one_round([1.0, math.nan, 2.0, None, 3.0])
    assert est.n == 3 and est.value == 2.0 and (est.lo, est.hi) == (1.0, 3.0)
    assert est.scope == SCOPE_ONE_MOMENT and est.level == 0.95
    assert est.method == "order statistics over 3 values of one worker"
    half = within_one_round(ONE_TO_TEN, 0.5)
    assert (half.lo, half.hi) == (4.0, 7.0) and half.level == 0.5
    assert within_one_round([math.nan]) is None


def test_the_smallest_p_values_few_values_can_reach():
    # U: the most extreme of C(n1+n2, n1) equally likely orderings, both tails
    assert mwu_min_p(3, 3) == pytest.approx(2 / 20) and mwu_min_p(2, 4) == pytest.approx(2 / 15)
    assert mwu_min_p(0, 5) == 1.0 and mwu_min_p(4, 0) == 1.0 and mwu_min_p(1, 1) == 1.0
    # signed rank: all n signs alike, 2 / 2^n
    assert wilcoxon_min_p(3) == 0.25 and wilcoxon_min_p(1) == 1.0 and wilcoxon_min_p(0) == 1.0


def test_tests_of_values_that_do_not_differ():
    assert mann_whitney_p([5.0] * 3, [5.0] * 3) == 1.0
    # one apart, not equal: the real test (exact: 9 of 126 orderings at least this extreme, both tails)
    assert mann_whitney_p([0, 0, 0, 0, 1], [1, 1, 1, 1, 0]) == pytest.approx(0.0929573, rel=1e-5)
    assert signed_rank_p([0.0, 0.0, 0.0]) == 1.0
    assert signed_rank_p([1.0] * 6) == pytest.approx(2 / 64)  # six alike, not zero: the exact minimum


def test_quantile_ci_ranks_and_when_n_is_too_small():
    # p90 of 1..100 at 99%: binomial ranks 82 and 98; at 50%: 88 and 93
    assert quantile_ci(list(range(1, 101)), 0.9) == (82.0, 98.0)
    assert quantile_ci(list(range(1, 101)), 0.9, 0.5) == (88.0, 93.0)
    assert quantile_ci(ONE_TO_TEN, 0.5, 0.5) == (4.0, 7.0)
    assert quantile_ci([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) is None and quantile_ci([], 0.5) is None
    # the fewest values a 99% CI of the median exists for: 8, as wide as the whole sample (ranks 1 and n)
    assert quantile_ci(ONE_TO_TEN[:7], 0.5) is None and quantile_ci(ONE_TO_TEN[:8], 0.5) == (1.0, 8.0)
    assert quantile_ci(ONE_TO_TEN[:9] + [100.0], 0.5) == (1.0, 100.0)


def test_noise_floors():
    assert noise_floor([10.0, 12.0]) == pytest.approx(math.sqrt(1.2) - 1)  # the whole range with few rounds
    assert noise_floor([None, -1.0, 0.0, 10.0, 12.0]) == noise_floor([10.0, 12.0])  # only positive rounds count
    assert noise_floor([10.0]) is None
    assert noise_floor([math.log(1.1), math.log(0.9), 0.0], logs=True) == pytest.approx(
        math.exp((math.log(1.1) - math.log(0.9)) / 2) - 1)
    assert combined_floor(None, None) is None and combined_floor(0.1, None) == pytest.approx(0.1)
    assert combined_floor(0.1, 0.1) == pytest.approx(math.exp(math.sqrt(2) * math.log(1.1)) - 1)
