"""One (cell, metric) comparison before its verdict: the two values, the direction by the rule's threshold,
and which significance test will decide it, on which values (rounds, raw samples or none).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effbench.gate.metrics import METRICS
from effbench.gate.rules import Rule
from effbench.measure.stats import combined_floor, noise_floor
from effbench.results.store import Record, Results


@dataclass
class RowPlan:
    """A row under construction: values and the plan for its significance test."""

    cell_id: str
    rule: Rule
    base: float | None
    new: float | None
    ratio: float | None = None
    delta: float | None = None
    beyond: str | None = None        # "worse" | "better" | None
    test: str = "exact"
    x: list[float] = field(default_factory=list)   # test inputs (base side / paired log ratios)
    y: list[float] = field(default_factory=list)
    significant: bool | None = None
    p_value: float | None = None
    p_holm: float | None = None
    floor: float | None = None
    notes: list[str] = field(default_factory=list)
    verdict: str = "unchanged"
    quantile: float | None = None    # ci-overlap on a quantile of raw samples instead of the median
    skipped: str | None = None       # why this metric was not compared (becomes a warning)

    def as_dict(self) -> dict[str, Any]:
        m = METRICS[self.rule.metric]
        return {"cell_id": self.cell_id, "metric": self.rule.metric, "base": self.base, "new": self.new,
                "ratio": self.ratio, "delta": self.delta, "unit": m.unit,
                "threshold": str(self.rule).split(":", 1)[1], "p_value": self.p_value,
                "p_holm": self.p_holm, "test": self.test, "noise_floor": self.floor,
                "verdict": self.verdict, "note": "; ".join(self.notes)}


def direction(rule: Rule, base: float, new: float) -> tuple[float | None, float, str | None]:
    """(ratio, delta in rule units, 'worse'|'better'|None) by the rule's threshold."""
    m = METRICS[rule.metric]
    if base == 0:
        ratio = 1.0 if new == 0 else math.inf
    else:
        ratio = new / base
    delta = (new - base) * m.scale
    if rule.kind == "absolute_pp":
        change = delta
    else:
        change = (ratio - 1.0) if math.isfinite(ratio) else math.copysign(math.inf, new - base)
    if not m.higher_is_better:
        worse, better = change > rule.threshold, change < -rule.threshold
    else:
        worse, better = change < -rule.threshold, change > rule.threshold
    # size:0% means any growth regresses; a float rounding error is not growth
    if rule.threshold == 0 and abs(new - base) <= 1e-12 * max(abs(base), abs(new)):
        worse = better = False
    return ratio, delta, "worse" if worse else "better" if better else None


class StoreIndex:
    """One store, indexed for the gate: merged records by cell, raw rounds by cell."""

    def __init__(self, results: Results, label: str) -> None:
        self.results = results
        self.label = label
        self.by_id = results.by_id()
        self.rounds: dict[str, list[Record]] = {}
        for r in results.raw:
            self.rounds.setdefault(r.cell_id, []).append(r)

    def round_records(self, rec: Record) -> list[Record]:
        raw = [r for r in self.rounds.get(rec.cell_id, [])
               if r.ok and r.config_hash == rec.config_hash and r.round >= 0]
        return sorted(raw, key=lambda r: r.round) if len(raw) >= 2 else []


def status_row(cell_id: str, b: Record, n: Record) -> dict[str, Any] | None:
    """A finished row when the cell's status changed (ok -> failed regresses); None when it did not."""
    if b.status == n.status:
        return None
    verdict = "regressed" if b.ok else "improved" if n.ok else "unchanged"
    return {"cell_id": cell_id, "metric": "status", "base": b.status, "new": n.status, "ratio": None,
            "delta": None, "unit": "", "threshold": "ok", "p_value": None, "p_holm": None, "test": "exact",
            "noise_floor": None, "verdict": verdict, "note": n.reason or b.reason or ""}


def both_ok(status_rows: list[dict], cell_id: str, b: Record, n: Record) -> bool:
    """Add the cell's status row when its status changed; True when both sides ran (its metrics compare)."""
    row = status_row(cell_id, b, n)
    if row:
        status_rows.append(row)
    return b.ok and n.ok


def generation_rounds(metric: str, rec: Record) -> list[float]:
    """A generative metric's per-round values as the merged record keeps them (`generation.round_values`):
    what an A/B run's stores, which hold merged records only, give the significance test."""
    gen = getattr(rec, "generation", None)
    values = (gen.round_values.get(metric) or []) if gen is not None else []
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def plan_metric(rule: Rule, cell_id: str, b: Record, n: Record, bside: StoreIndex | None,
                nside: StoreIndex | None, factor: float) -> RowPlan | None:
    """Values, direction and the significance-test plan for one (cell, metric); None when absent."""
    m = METRICS[rule.metric]
    scale_new = factor ** m.speed if m.speed else 1.0
    bv, nv = m.value(b), m.value(n)
    if m.name == "energy":
        bs, ns = (b.energy.source if b.energy else None), (n.energy.source if n.energy else None)
        if bv is not None and nv is not None and bs != ns:
            return RowPlan(cell_id, rule, bv, nv, test="none",
                           skipped=f"energy sources differ ({bs} vs {ns}); measured and modeled never mix")
    if bv is None and nv is None:
        return None
    if bv is None or nv is None:
        return RowPlan(cell_id, rule, bv, nv, test="none",
                       skipped=f"{m.name} is missing in the {'new' if nv is None else 'base'} store")
    row = RowPlan(cell_id, rule, bv, nv * scale_new)
    if scale_new != 1.0:
        row.notes.append(f"new normalized by speed index x{scale_new:.3f}")

    if m.kind == "deterministic":
        row.test = "exact"
    else:
        brs = bside.round_records(b) if bside else []
        nrs = nside.round_records(n) if nside else []
        if m.name == "latency.median" and len(b.round_medians_ms) >= 2 and len(n.round_medians_ms) >= 2:
            bx, ny = list(b.round_medians_ms), list(n.round_medians_ms)
        elif brs and nrs:
            bx = [v for v in (m.value(r) for r in brs) if v is not None]
            ny = [v for v in (m.value(r) for r in nrs) if v is not None]
        else:   # a generative cell keeps its per-round figures in the merged record
            bx, ny = generation_rounds(m.name, b), generation_rounds(m.name, n)
        if len(bx) >= 2 and len(ny) >= 2:
            row.x, row.y = bx, [v * scale_new for v in ny]
            row.base, row.new = float(np.median(row.x)), float(np.median(row.y))
            row.test = "mann-whitney-rounds"
            row.floor = combined_floor(noise_floor(row.x), noise_floor(row.y))
            row.notes.append(f"{len(bx)} vs {len(ny)} rounds")
        elif m.kind == "timing" and b.samples_ms and n.samples_ms:
            row.x, row.y = list(b.samples_ms), [v * scale_new for v in n.samples_ms]
            if m.quantile is None:
                row.test = "mann-whitney-samples"
                row.base, row.new = float(np.median(row.x)), float(np.median(row.y))
            else:
                row.test = "ci-overlap"
                row.quantile = m.quantile
                row.base = float(np.quantile(row.x, m.quantile))
                row.new = float(np.quantile(row.y, m.quantile))
                need = 662 if m.quantile >= 0.99 else 64
                if min(len(row.x), len(row.y)) < need:
                    row.notes.append(f"p{round(m.quantile * 100)} not reliable below n={need}")
            if b.rounds > 1 or n.rounds > 1:
                row.notes.append("rounds in one store only: tested on raw samples")
        elif m.kind == "stable":
            row.test = "exact"
            row.notes.append("one value per store, compared by tolerance")
        else:
            row.test = "none"
            row.notes.append("one round per store: significance cannot be tested")
    row.ratio, row.delta, row.beyond = direction(rule, row.base, row.new)
    for rec, label in ((b, "base"), (n, "new")):
        if m.kind == "timing" and rec.unstable:
            why = (rec.latency_ms.unstable_reason if rec.latency_ms else None) or "missed its CI target"
            row.notes.append(f"{label} unstable: {why}")
    return row
