"""Store mode (`effbench compare BASE NEW`, `run --baseline`): gate one results store against another,
cell by cell (matched by cell id), metric by metric.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from effbench.errors import UserError
from effbench.gate.decide import check_alpha, finish
from effbench.gate.plan import RowPlan, StoreIndex, both_ok, plan_metric
from effbench.gate.provenance import environment_warnings, speed_ratio
from effbench.gate.rules import DEFAULT_RULES, Rule
from effbench.gate.verdict import Verdict
from effbench.results.store import Results, load


def compare(base: Results | str | Path, new: Results | str | Path, *, rules: list[Rule] | None = None,
            alpha: float = 0.01, normalize: bool = False, require_same_cells: bool = False) -> Verdict:
    """Gate `new` against `base`, cell by cell (matched by cell id), metric by metric (`rules`).

    `base` and `new` are loaded Results or paths (a results.jsonl or a report folder holding one).
    """
    check_alpha(alpha)
    base = base if isinstance(base, Results) else load(base)
    new = new if isinstance(new, Results) else load(new)
    rules = list(DEFAULT_RULES if rules is None else rules)
    for res, label in ((base, "base"), (new, "new")):
        if not res.records:
            raise UserError(f"the {label} store holds no result records",
                            file=(res.sources or [None])[0], fix="point at a results.jsonl that a finished run wrote")
    warnings = [f"base: {w}" for w in base.warnings] + [f"new: {w}" for w in new.warnings]
    ratio, speed_warns = speed_ratio(base, new)
    warnings += speed_warns + environment_warnings(base, new)
    factor = 1.0
    if normalize:
        if ratio is None:
            raise UserError("--normalize needs a comparable machine-speed index in both stores",
                            fix="re-run both stores with this effbench version, or drop --normalize")
        factor = 1.0 / ratio
    single = [label for res, label in ((base, "base"), (new, "new"))
              if any(r.ok and r.samples_ms and r.rounds < 2 for r in res.records)]
    if single:
        warnings.append(f"{' and '.join(single)} timed in single rounds: drift between runs (+-30% on shared "
                        "machines) is invisible to the test; use several rounds or the A/B mode")
    for res, label in ((base, "base"), (new, "new")):
        ids = [r.cell_id for r in res.records]
        if len(ids) != len(set(ids)):
            warnings.append(f"{label} holds the same cell from several stores; the last one is compared")
    bside, nside = StoreIndex(base, "base"), StoreIndex(new, "new")
    added = sorted(set(nside.by_id) - set(bside.by_id))
    removed = sorted(set(bside.by_id) - set(nside.by_id))
    common = [c for c in bside.by_id if c in nside.by_id]
    rows: list[RowPlan] = []
    status_rows = []
    for cell_id in common:
        b, n = bside.by_id[cell_id], nside.by_id[cell_id]
        if not both_ok(status_rows, cell_id, b, n):
            continue
        for rule in rules:
            row = plan_metric(rule, cell_id, b, n, bside, nside, factor)
            if row is not None:
                rows.append(row)
    return finish(rows, status_rows, alpha, rules, warnings, added, removed, require_same_cells, "stores",
                  {"speed_ratio": ratio, "normalized": normalize})


def compare_paths(base: str | Path, new: str | Path, **kw: Any) -> Verdict:
    """`effbench compare BASE NEW`: load both stores (files or report folders) and gate."""
    return compare(base, new, **kw)
