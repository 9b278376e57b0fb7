"""A/B mode (`effbench run SUITE --ab BASE_SUITE`): gate candidate records against baseline records that
were measured interleaved with them, latency on per-round (or per-block) paired ratios.
"""
from __future__ import annotations

import math

import numpy as np

from effbench.gate.decide import check_alpha, finish
from effbench.gate.plan import RowPlan, both_ok, direction, plan_metric
from effbench.gate.rules import DEFAULT_RULES, Rule
from effbench.gate.verdict import Verdict
from effbench.measure.stats import noise_floor
from effbench.results.store import Record


def compare_ab(pairs: list[tuple[Record, Record]], *, rules: list[Rule] | None = None, alpha: float = 0.01,
               warnings: list[str] | None = None) -> Verdict:
    """A/B mode: (baseline record, candidate record) pairs measured interleaved in one job.

    Latency is gated on per-round ratios: the paired pass's block ratio when the candidate records
    have `paired_ratios`, else new_i / base_i of the two workers' round medians (round i of both ran
    back to back). The median ratio must be beyond the threshold and the log ratios significant by
    the Wilcoxon signed-rank test (Holm-corrected across cells), or, with too few rounds for it to
    reach alpha, by a 99% order-statistic CI of the median log ratio that excludes 0. The noise floor
    is that of the ratios (`noise_floor`). Other rules compare the merged records as `compare` does.
    """
    check_alpha(alpha)
    rules = list(DEFAULT_RULES if rules is None else rules)
    warnings = list(warnings or [])
    rows: list[RowPlan] = []
    status_rows = []
    for b, n in pairs:
        cell_id = n.cell_id
        if not both_ok(status_rows, cell_id, b, n):
            continue
        for rule in rules:
            if rule.metric != "latency.median":
                row = plan_metric(rule, cell_id, b, n, None, None, 1.0)
            else:
                row = plan_paired(rule, cell_id, b, n)
            if row is None:
                continue
            if b.cell_id != n.cell_id:
                row.notes.append(f"baseline cell {b.cell_id}")
            rows.append(row)
    return finish(rows, status_rows, alpha, rules, warnings, [], [], False, "ab", {})


def plan_paired(rule: Rule, cell_id: str, b: Record, n: Record) -> RowPlan | None:
    """The latency row of one A/B pair: log ratios per round, to be tested by the signed-rank test."""
    bm, nm = list(b.round_medians_ms), list(n.round_medians_ms)
    if not bm or not nm:
        return plan_metric(rule, cell_id, b, n, None, None, 1.0)
    row = RowPlan(cell_id, rule, float(np.median(bm)), float(np.median(nm)))
    if len(bm) != len(nm) or min(bm + nm) <= 0:
        row.test = "none"
        row.notes.append(f"rounds do not pair ({len(bm)} vs {len(nm)}; a round failed?)" if len(bm) != len(nm)
                         else "a round median is not positive")
        row.ratio, row.delta, row.beyond = direction(rule, row.base, row.new)
        return row
    pr = list(n.paired_ratios)
    if len(pr) >= 2 and len(pr) == len(nm) and min(pr) > 0:
        # each round's ratio from alternating blocks in one worker: both sides saw the same machine state
        logr = [math.log(q) for q in pr]
        row.notes.append(f"{len(logr)} rounds; ratio = median of per-round ratios from alternating blocks in one "
                         "worker (the base and new columns are each side's own workers)")
    else:
        logr = [math.log(y / x) for x, y in zip(bm, nm)]
        row.notes.append(f"{len(logr)} interleaved rounds; ratio = median of per-round ratios")
    med = float(np.median(logr))
    row.x = logr
    row.test = "wilcoxon-paired-rounds"
    row.floor = noise_floor(logr, logs=True)
    # the gate's ratio is the median of per-round ratios, not the ratio of medians
    ratio, _, row.beyond = direction(rule, 1.0, math.exp(med))
    row.ratio = ratio
    row.delta = (row.new - row.base)
    if len(logr) < 2:
        row.test = "none"
    return row
