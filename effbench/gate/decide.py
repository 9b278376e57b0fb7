"""From planned rows to a verdict: significance per row (Holm-corrected per metric across cells), the
decision rule per row, and the summary and exit code of the whole comparison.

Decision rule (docs/measurement.md "The gate", docs/ci.md): a noisy metric regresses only when its change is
beyond the rule's threshold *and* significant *and* clears the cell's own noise floor.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from effbench.errors import UserError
from effbench.gate.metrics import METRICS
from effbench.gate.plan import RowPlan
from effbench.gate.rules import Rule
from effbench.gate.verdict import VERDICTS, Verdict
from effbench.measure.stats import (
    DECISION_LEVEL,
    holm,
    mann_whitney_p,
    median_ci_coverage,
    mwu_min_p,
    quantile_ci,
    signed_rank_p,
    wilcoxon_min_p,
)

CI_LEVEL = DECISION_LEVEL


def check_alpha(alpha: float) -> None:
    if not (0 < alpha < 1):
        raise UserError(f"alpha {alpha} is not a probability", field="--alpha", fix="use e.g. --alpha 0.01")


def run_tests(rows: list[RowPlan], alpha: float) -> None:
    """Significance for every planned row; Holm's family is one metric across all cells."""
    families: dict[str, list[RowPlan]] = {}
    for r in rows:
        families.setdefault(r.rule.metric, []).append(r)
    for family in families.values():
        _run_family(family, alpha)


def _run_family(rows: list[RowPlan], alpha: float) -> None:
    """U tests (Holm-corrected across the family) or CI non-overlap where U cannot reach alpha."""
    candidates = [r for r in rows if r.test in ("mann-whitney-rounds", "mann-whitney-samples")]
    paired = [r for r in rows if r.test == "wilcoxon-paired-rounds"]
    m = max(1, len(candidates) + len(paired))
    # U cannot reach alpha/m with too few values (3 vs 3 rounds: p >= 0.1): use 99% CIs instead.
    for r in candidates:
        if mwu_min_p(len(r.x), len(r.y)) > alpha / m:
            r.notes.append(f"U cannot reach alpha/{m} with {len(r.x)}+{len(r.y)} values: CI of the median")
            r.test = "ci-overlap"
    for r in paired:
        if wilcoxon_min_p(len(r.x)) > alpha / m:
            r.notes.append(f"signed-rank test cannot reach alpha/{m} with {len(r.x)} rounds: CI of the median ratio")
            r.test = "ci-paired-rounds"
    tested = []
    for r in rows:
        if r.test in ("mann-whitney-rounds", "mann-whitney-samples"):
            r.p_value = mann_whitney_p(r.x, r.y)
            tested.append(r)
        elif r.test == "wilcoxon-paired-rounds":
            r.p_value = signed_rank_p(r.x)
            tested.append(r)
        elif r.test == "ci-overlap":
            if r.quantile is not None:
                q = r.quantile
                cb, cn = quantile_ci(r.x, q, CI_LEVEL), quantile_ci(r.y, q, CI_LEVEL)
                if cb is None or cn is None:
                    r.notes.append(f"too few samples for a {CI_LEVEL:.0%} CI of p{round(q * 100)}")
                    r.significant = None
                    r.test = "none"
                    continue
            else:
                lo_b, hi_b, cov_b = median_ci_coverage(r.x, CI_LEVEL)
                lo_n, hi_n, cov_n = median_ci_coverage(r.y, CI_LEVEL)
                cb, cn = (lo_b, hi_b), (lo_n, hi_n)
                if min(cov_b, cov_n) < CI_LEVEL:
                    r.notes.append(f"CI coverage only {min(cov_b, cov_n):.1%}")
            r.significant = cn[0] > cb[1] or cn[1] < cb[0]
        elif r.test == "ci-paired-rounds":
            lo, hi, cov = median_ci_coverage(r.x, CI_LEVEL)
            if cov < CI_LEVEL:
                # A 5-round CI covers 93.8%: gating on it flagged 1 of 16 A/A cells here. Too few
                # rounds to decide is `unstable`, never `regressed`.
                r.notes.append(f"CI coverage only {cov:.1%}: {len(r.x)} rounds cannot decide at "
                               f"{CI_LEVEL:.0%}; use --rounds 12 or more")
                r.significant = None
            else:
                r.significant = lo > 0 or hi < 0
    for r, ph in zip(tested, holm([r.p_value for r in tested])):
        r.p_holm = ph
        r.significant = ph <= alpha


def decide(r: RowPlan) -> None:
    """The row's verdict: beyond the threshold, significant and clear of the noise floor to regress."""
    kind = METRICS[r.rule.metric].kind
    t = r.rule.threshold
    floor_hides = r.floor is not None and r.rule.kind == "relative" and r.floor > t
    if r.beyond is None:
        r.verdict = "unchanged"
        if floor_hides:
            r.verdict = "unstable"
            r.notes.append(f"noise floor {r.floor:.1%} exceeds the {t:.1%} threshold: a change that small cannot be seen")
        return
    good = "improved" if r.beyond == "better" else "regressed"
    if kind == "deterministic" or r.test == "exact":
        r.verdict = good
        return
    if r.test == "none" or r.significant is None:
        r.verdict = "unstable"
        r.notes.append("beyond the threshold but not testable")
        return
    if not r.significant:
        r.verdict = "unstable"
        r.notes.append("beyond the threshold but not significant")
        return
    if floor_hides and r.ratio is not None and abs(math.log(r.ratio)) <= math.log1p(r.floor):
        r.verdict = "unstable"
        r.notes.append(f"change within the cell's noise floor {r.floor:.1%}")
        return
    r.verdict = good


def finish(rows: list[RowPlan], status_rows: list[dict], alpha: float, rules: list[Rule],
           warnings: list[str], added: list[str], removed: list[str], require_same_cells: bool,
           mode: str, extra_summary: dict[str, Any]) -> Verdict:
    """Test and decide every planned row, order the rows by cell and rule, and sum them up."""
    for r in rows:
        if r.skipped:
            warnings.append(f"{r.cell_id}: {r.rule.metric} not compared: {r.skipped}")
    rows = [r for r in rows if not r.skipped]
    run_tests(rows, alpha)
    for r in rows:
        decide(r)
    out = status_rows + [r.as_dict() for r in rows]
    order = {c: i for i, c in enumerate(dict.fromkeys(r["cell_id"] for r in out))}
    metric_order = {"status": -1, **{r.metric: i for i, r in enumerate(rules)}}
    out.sort(key=lambda d: (order[d["cell_id"]], metric_order.get(d["metric"], 99)))
    counts = {v: sum(1 for d in out if d["verdict"] == v) for v in VERDICTS}
    lat = [d["ratio"] for d in out if d["metric"] == "latency.median" and d["ratio"] and math.isfinite(d["ratio"])]
    summary = {"cells": len(order), "counts": counts, "added": len(added), "removed": len(removed),
               "geomean_latency_ratio": float(np.exp(np.mean(np.log(lat)))) if lat else None,
               "latency_cells": len(lat), **extra_summary}
    failed = counts["regressed"] > 0 or (require_same_cells and bool(added or removed))
    return Verdict(rows=out, added=added, removed=removed, warnings=warnings, summary=summary,
                   exit_code=1 if failed else 0, rules=list(rules), alpha=alpha, mode=mode)
