"""The gate's decision on rows whose values are chosen by hand: which test a row gets (Holm's family size,
whether U or the signed-rank test can reach alpha at all), the CI rules at their boundaries, the verdict of
each branch and the summary (issue 30: the edges a mutation tester found no test for)."""
from __future__ import annotations

import math

import pytest

from effbench.errors import UserError
from effbench.gate.decide import check_alpha, decide, finish, run_tests
from effbench.gate.plan import RowPlan
from effbench.gate.rules import Rule
from effbench.measure.stats import mann_whitney_p, mwu_min_p, wilcoxon_min_p

LAT = Rule("latency.median", 0.05)
P90 = Rule("latency.p90", 0.10)


def row(rule=LAT, test="mann-whitney-rounds", x=(), y=(), cell="c", **kw) -> RowPlan:
    return RowPlan(cell_id=cell, rule=rule, base=1.0, new=1.2, test=test, x=list(x), y=list(y), **kw)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_alpha_must_be_a_probability(alpha):
    with pytest.raises(UserError) as e:
        check_alpha(alpha)
    assert e.value.one_line() == f"--alpha: alpha {alpha} is not a probability; use e.g. --alpha 0.01"
    check_alpha(0.5)


def test_a_test_that_cannot_reach_alpha_over_the_family_gives_way_to_cis():
    four = [1.0, 2.0, 3.0, 4.0]
    assert mwu_min_p(4, 4) == pytest.approx(2 / 70)  # 0.029: reaches 0.05 alone, not 0.05 / 2
    alone = row(x=four, y=[5.0, 6.0, 7.0, 8.0])
    run_tests([alone], 0.05)
    assert alone.test == "mann-whitney-rounds" and alone.p_value == alone.p_holm and alone.significant
    # a family of three (two U rows and a paired one): alpha / 3 for each
    a, b = row(x=four, y=[5.0, 6.0, 7.0, 8.0], cell="a"), row(x=four, y=[1.5, 2.5, 3.5, 4.5], cell="b")
    p = row(test="wilcoxon-paired-rounds", x=[0.1] * 5, cell="p")
    run_tests([a, b, p], 0.05)
    samples = row(test="mann-whitney-samples", x=four, y=[5.0, 6.0, 7.0, 8.0], cell="s")  # raw samples: the same rule
    run_tests([samples, row(x=four, y=four, cell="t")], 0.05)
    assert samples.test == "ci-overlap"
    assert a.test == b.test == "ci-overlap" and a.notes == ["U cannot reach alpha/3 with 4+4 values: CI of the median",
                                                          "CI coverage only 87.5%"]
    assert p.test == "ci-paired-rounds"
    assert p.notes[0] == "signed-rank test cannot reach alpha/3 with 5 rounds: CI of the median ratio"
    # exactly at alpha the test can still decide
    edge = row(x=[1.0, 2.0, 3.0], y=[4.0, 5.0, 6.0])
    run_tests([edge], mwu_min_p(3, 3))
    assert edge.test == "mann-whitney-rounds" and edge.p_value == pytest.approx(0.1)
    paired = row(test="wilcoxon-paired-rounds", x=[0.1, 0.2, 0.3, 0.4, 0.5])
    run_tests([paired], wilcoxon_min_p(5))
    assert paired.test == "wilcoxon-paired-rounds" and paired.significant


def test_holm_p_at_alpha_is_significant():
    x, y = [float(v) for v in range(1, 9)], [float(v) for v in range(5, 13)]
    r = row(x=x, y=y)
    run_tests([r], mann_whitney_p(x, y))
    assert r.p_holm == r.p_value and r.significant is True


def test_ci_overlap_of_a_quantile_and_of_a_median_at_their_boundaries():
    x = [float(v) for v in range(1, 101)]
    few = row(P90, "ci-overlap", x, [1.0, 2.0, 3.0, 4.0, 5.0], quantile=0.9, cell="few")
    # the top tenth of y is far off, the p90's 99% CI (ranks 82-98) still overlaps x's
    tail = row(P90, "ci-overlap", x, [v + 1000 if v > 90 else v for v in x], quantile=0.9, cell="tail")
    shifted = row(P90, "ci-overlap", x, [v + 50 for v in x], quantile=0.9, cell="shifted")
    run_tests([few, tail, shifted], 0.01)
    assert few.test == "none" and few.significant is None and few.notes == ["too few samples for a 99% CI of p90"]
    assert tail.test == "ci-overlap" and tail.significant is False and shifted.significant is True
    ten = [float(v) for v in range(1, 11)]  # its 99% CI of the median: [1, 10]
    touching_above = row(LAT, "ci-overlap", ten, [v + 9 for v in ten], cell="above")   # [10, 19]
    touching_below = row(LAT, "ci-overlap", ten, [v - 9 for v in ten], cell="below")   # [-8, 1]
    apart = row(LAT, "ci-overlap", ten, [v + 9.5 for v in ten], cell="apart")
    short = row(LAT, "ci-overlap", ten[:5], [v + 100 for v in ten[:5]], cell="short")
    run_tests([touching_above, touching_below, apart, short], 0.01)
    assert touching_above.significant is False and touching_below.significant is False and apart.significant
    assert short.significant and short.notes == ["CI coverage only 93.8%"]


@pytest.mark.parametrize("x,significant", [
    ([0.1 * i for i in range(1, 13)], True),            # CI [0.2, 1.1]: above 0
    ([-0.1 * i for i in range(1, 13)], True),           # below 0
    ([0.1 * i - 0.2 for i in range(1, 13)], False),     # [0.0, 0.9]: touches 0
    ([-0.1 * i + 0.2 for i in range(1, 13)], False),    # [-0.9, 0.0]
    ([0.1 * i - 0.3 for i in range(1, 13)], False),     # [-0.1, 0.8]
])
def test_paired_rounds_ci_of_the_median_log_ratio(x, significant):
    r = row(test="ci-paired-rounds", x=x)
    run_tests([r], 0.01)
    assert r.significant is significant and r.notes == []
    five = row(test="ci-paired-rounds", x=x[:5])
    run_tests([five], 0.01)
    assert five.significant is None
    assert five.notes == ["CI coverage only 93.8%: 5 rounds cannot decide at 99%; use --rounds 12 or more"]


def test_each_branch_of_the_decision():
    def decided(**kw) -> RowPlan:
        r = row(**kw)
        decide(r)
        return r
    # a deterministic metric regresses on its change alone, whatever test the row names
    assert decided(rule=Rule("size", 0.0), test="none", beyond="worse").verdict == "regressed"
    assert decided(test="exact", beyond="better").verdict == "improved"
    none = decided(test="ci-overlap", beyond="worse", significant=None)
    assert none.verdict == "unstable" and none.notes == ["beyond the threshold but not testable"]
    untestable = decided(test="none", beyond="worse", significant=False)
    assert untestable.notes == ["beyond the threshold but not testable"]
    weak = decided(test="ci-overlap", beyond="worse", significant=False)
    assert weak.verdict == "unstable" and weak.notes == ["beyond the threshold but not significant"]
    assert decided(beyond="worse", significant=True).verdict == "regressed"
    # the cell's own noise floor: one exactly at the threshold hides nothing; a change exactly at the floor is noise
    assert decided(floor=0.05, beyond=None).verdict == "unchanged"
    hidden = decided(floor=0.06, beyond=None)
    assert hidden.verdict == "unstable" and "noise floor 6.0% exceeds the 5.0% threshold" in hidden.notes[0]
    at_floor = decided(floor=0.5, beyond="worse", significant=True, ratio=1.5)
    assert at_floor.verdict == "unstable" and at_floor.notes == ["change within the cell's noise floor 50.0%"]
    assert decided(floor=0.5, beyond="worse", significant=True, ratio=1.51).verdict == "regressed"


def test_the_summary_orders_rows_by_cell_and_rule_and_counts_them():
    rules = [LAT, Rule("size", 0.0)]
    status = {"cell_id": "b", "metric": "status", "base": "ok", "new": "failed", "ratio": None, "delta": None,
              "unit": "", "threshold": "ok", "p_value": None, "p_holm": None, "test": "exact", "noise_floor": None,
              "verdict": "regressed", "note": ""}
    rows = [RowPlan("a", Rule("energy", 0.1), 1.0, 1.0), RowPlan("a", Rule("size", 0.0), 10.0, 10.0),
            RowPlan("a", LAT, 1.0, 1.21, ratio=1.21), RowPlan("c", LAT, 1.0, 0.9, ratio=0.9)]
    v = finish(rows, [status, {**status, "cell_id": "a"}], 0.02, rules, [], ["d"], [], False, "stores", {})
    # a cell's status first, then its metrics in the rules' order, then any other metric
    assert [(d["cell_id"], d["metric"]) for d in v.rows] == [
        ("b", "status"), ("a", "status"), ("a", "latency.median"), ("a", "size"), ("a", "energy"),
        ("c", "latency.median")]
    assert v.summary["cells"] == 3 and v.summary["added"] == 1 and v.summary["removed"] == 0
    assert v.summary["geomean_latency_ratio"] == pytest.approx(math.sqrt(1.21 * 0.9)) and v.summary["latency_cells"] == 2
    assert v.alpha == 0.02 and v.exit_code == 1  # the status row regressed
    quiet = finish([RowPlan("a", Rule("size", 0.0), 10.0, 10.0)], [], 0.01, rules, [], ["d"], [], False, "stores", {})
    assert quiet.exit_code == 0 and quiet.summary["geomean_latency_ratio"] is None
    strict = finish([RowPlan("a", Rule("size", 0.0), 10.0, 10.0)], [], 0.01, rules, [], ["d"], [], True, "stores", {})
    assert strict.exit_code == 1  # --require-same-cells: a cell on one side only fails
