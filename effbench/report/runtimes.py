"""Across runtimes and models: the fastest runtime x precision per model at the quality floor, and every paired
comparison the suite's `compare:` asked for (`Record.comparisons`, `effbench.config.compare`).

A ranking is a measurement only where its ratios are: each cell's paired speedup against one common baseline
(that baseline timed in the cell's own worker, in alternating blocks, a CI over rounds in fresh workers). Where
the cells were timed in separate workers only, the table still names the fastest by median latency, says that
the ranking is from separate workers, and gives no ratio (this machine's speed flips by up to 2x for seconds).
"""
from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from effbench.report.table import FP32, Row, Speedup, fmt_ms, fmt_pct, fmt_speedup
from effbench.scenarios.plan import SINGLE_STREAM

TWIN = "twin"   # the key of a cell's own FP32-twin comparison (`Record.comparison`) among `pairs`
SEPARATE = "separate workers: ranked by median latency, no ratio"
SEPARATE_WHY = ("a ratio of two cells timed in separate workers is not a measurement on this machine (its speed "
                "flips by up to 2x for seconds); a suite with compare: runtimes (or baseline_model) pairs them")


@dataclass(frozen=True)
class Pair:
    """One cell against one baseline: the paired speedup with its CI (or why none), quality against it."""

    key: str
    baseline: str | None
    speedup: Speedup | None
    reason: str | None
    quality_relative: float | None
    below_floor: bool | None
    twin: bool = False


def pairs(row: Row) -> dict[str, Pair]:
    """The row's comparisons by key: the suite's `compare:` entries, then its FP32 twin's under `TWIN`."""
    rec = row.record
    if not rec.ok:
        return {}
    q = rec.quality
    out = {}
    for key, comp in rec.comparisons.items():
        vs = (q.vs_baseline.get(key) if q else None) or {}
        out[key] = Pair(key, comp.baseline, Speedup.from_comparison(comp), comp.reason or comp.note,
                        _f(vs.get("relative")), vs.get("below_floor"),
                        twin=bool(comp.extra.get("pairing")) or comp.baseline == _twin_id(row))
    if rec.cell.variant != FP32:
        comp = rec.comparison
        out[TWIN] = Pair(TWIN, comp.baseline if comp else _twin_id(row), row.speedup,
                         row.speedup_note, row.relative_quality, q.below_floor if q else None, twin=True)
    return out


def _twin_id(row: Row) -> str:
    return row.cell.replace(variant=FP32, precision=FP32, method=None).cell_id


def _f(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def has_cross(rows: Sequence[Row]) -> bool:
    return any(r.record.ok and r.record.comparisons for r in rows)


@dataclass
class Fastest:
    """The fastest eligible cell of one model, batch size and scenario, and on what basis."""

    model: str
    batch_size: int | None
    scenario: str
    row: Row | None
    basis: str                      # "paired" | "separate" | "none"
    key: str | None = None          # the comparison the ranking is by (paired)
    baseline: str | None = None
    pair: Pair | None = None        # the winner's paired speedup against the baseline, where it has one
    runner_up: Row | None = None
    overlap: bool = False           # the winner's CI overlaps the runner-up's: no clear winner
    candidates: int = 0
    left_out: list[str] = field(default_factory=list)


def fastest(rows: Sequence[Row]) -> list[Fastest]:
    """Per model and batch size (and fleet node), single-stream cells (the scenario whose worker pairs runtimes;
    the others' figures are throughput and load, in the report's load section): the fastest cell that is ok,
    not emulated and not below the quality floor, ranked by paired speedups against one common baseline where every candidate has
    one, else by median latency of separate workers (and then no ratio)."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        if r.record.generation is None and r.scenario == SINGLE_STREAM:
            groups.setdefault((r.model, r.batch_size, r.scenario, r.record.measured_on), []).append(r)
    return [_fastest(key, group) for key, group in groups.items()]


def _fastest(key: tuple, group: list[Row]) -> Fastest:
    model, batch, scenario, _ = key
    ok = [r for r in group if r.record.ok and r.median_ms is not None]
    left_out = [f"{sum(r.emulated for r in ok)} emulated"] if any(r.emulated for r in ok) else []
    ok = [r for r in ok if not r.emulated]
    out = Fastest(model, batch, scenario, None, "none", left_out=left_out)
    by_row = {r.cell_id: pairs(r) for r in ok}
    best: tuple | None = None   # (cells paired, -preference, key, baseline, eligible, paired)
    for rank, (k, base) in enumerate(_bases(by_row)):
        eligible = [r for r in ok if _at_floor(r, by_row[r.cell_id].get(k), r.cell_id == base)]
        paired = [r for r in eligible if r.cell_id == base or _paired(by_row[r.cell_id].get(k), base)]
        if k == TWIN and len(paired) < len(eligible):
            continue   # one runner's FP32 twin ranks that runner's cells only: not an answer across runtimes
        if len(paired) >= 2 and (best is None or len(paired) > best[0]):
            best = (len(paired), -rank, k, base, eligible, paired)
    if best is not None:
        _, _, k, base, eligible, paired = best
        ranked = sorted(paired, key=lambda r: -1.0 if r.cell_id == base else -by_row[r.cell_id][k].speedup.value)
        win = ranked[0]
        out.row, out.basis, out.key, out.baseline, out.candidates = win, "paired", k, base, len(paired)
        out.pair = by_row[win.cell_id].get(k)
        out.runner_up = ranked[1]
        a, b = _interval(out.pair, win.cell_id == base), _interval(by_row[ranked[1].cell_id].get(k),
                                                                  ranked[1].cell_id == base)
        out.overlap = a is None or b is None or a[0] <= b[1]
        out.left_out += _floor_note(ok, eligible)
        if len(eligible) > len(paired):  # at the floor, but not paired with this baseline: not ranked
            out.left_out.append(f"{len(eligible) - len(paired)} without a paired speedup vs {_vs(base)}: "
                                + ", ".join(_what(r) for r in eligible if r not in paired))
        return out
    eligible = [r for r in ok if _at_floor(r, None, r.variant == FP32)
                and not any(p.below_floor for p in by_row[r.cell_id].values())]
    if eligible:
        ranked = sorted(eligible, key=lambda r: r.median_ms)
        out.row, out.basis, out.candidates = ranked[0], "separate", len(eligible)
        out.runner_up = ranked[1] if len(ranked) > 1 else None
        ps = by_row[ranked[0].cell_id]
        cross = [p for p in ps.values() if p.speedup and not p.twin]
        out.pair = cross[0] if cross else None   # its own pairing, where one exists: shown, not used to rank
        out.left_out += _floor_note(ok, eligible)
    return out


def _paired(p: Pair | None, base: str | None) -> bool:
    return p is not None and p.speedup is not None and p.baseline == base


def _bases(by_row: dict[str, dict[str, Pair]]) -> list[tuple[str, str]]:
    """(comparison key, baseline cell) pairs to rank by: the runtimes' first, then the models', then the FP32
    twins' (one per runner)."""
    found = list(dict.fromkeys((k, p.baseline) for ps in by_row.values() for k, p in ps.items() if p.baseline))
    return sorted(found, key=lambda kb: 0 if kb[0].startswith("runtime:") else 1 if kb[0] != TWIN else 2)


def _at_floor(r: Row, pair: Pair | None, is_baseline: bool) -> bool:
    """Not below the quality floor, by the quality against the ranking's baseline where there is one, else the
    cell's own against its FP32; a cell without a quality figure is left out (its FP32 twin, the baseline
    itself, is at the floor by definition)."""
    if pair is not None and pair.below_floor is not None:
        return not pair.below_floor
    if is_baseline or r.variant == FP32:
        return not r.below_floor
    q = r.record.quality
    return bool(q and q.below_floor is False)


def _floor_note(ok: list[Row], eligible: list[Row]) -> list[str]:
    n = len(ok) - len(eligible)
    return [f"{n} below the quality floor or without a quality figure"] if n else []


def _interval(p: Pair | None, is_baseline: bool) -> tuple[float, float] | None:
    if is_baseline:
        return (1.0, 1.0)
    if p is None or p.speedup is None or p.speedup.lo is None or p.speedup.hi is None:
        return None
    return (p.speedup.lo, p.speedup.hi)


def _what(r: Row | None) -> str:
    return f"{r.runner} × {r.variant}" if r is not None else "—"


def _vs(baseline: str | None) -> str:
    """A baseline cell id as 'model fp32 on runner'."""
    if not baseline:
        return "—"
    parts = baseline.split("/")
    return f"{parts[0]} {parts[1]} on {parts[2]}" if len(parts) >= 3 else baseline


def fastest_lines(f: Fastest) -> tuple[str, str, str, str]:
    """(what, speedup text, basis text, note) of one Fastest row, as plain text."""
    if f.row is None:
        return "—", "—", "no cell is ok and at the quality floor", "; ".join(f.left_out)
    if f.basis == "paired":
        sp = "1.00× (the baseline)" if f.row.cell_id == f.baseline else fmt_speedup(f.pair.speedup if f.pair else None)
        basis = f"paired vs {_vs(f.baseline)}, {f.candidates} candidates"
        if f.runner_up is not None:
            basis += f"; next: {_what(f.runner_up)}" + (" (CIs overlap: no clear winner)" if f.overlap else "")
    else:
        sp = "—"
        basis = SEPARATE
        if f.pair is not None:
            sp = f"{fmt_speedup(f.pair.speedup)} vs {_vs(f.pair.baseline)} (its own pairing)"
        if f.runner_up is not None:
            basis += f"; next: {_what(f.runner_up)}"
    return _what(f.row), sp, basis, "; ".join(f.left_out)


def _note(p: Pair) -> str:
    if p.speedup is None:
        return p.reason or ""
    return "the baseline is this cell's FP32 twin: the same pairing as its speedup vs FP32" if p.twin else ""


def cross_entries(rows: Sequence[Row]) -> list[tuple[Row, Pair]]:
    """Every `compare:` comparison of the rows, in the rows' order."""
    return [(r, p) for r in rows for k, p in pairs(r).items() if k != TWIN]


# ---------------------------------------------------------------- Markdown and HTML

def markdown(rows: Sequence[Row], md_cell: Callable[[object], str]) -> str:
    out = ["## Fastest runtime × precision per model at the quality floor", "",
           "The fastest cell that is ok, not emulated and not below the quality floor. Ranked by paired speedups "
           "against one baseline (timed in each cell's own worker, alternating blocks, 95% CI over rounds) where "
           "every candidate has one; otherwise by median latencies of separate workers, and then no ratio is given: "
           f"{SEPARATE_WHY}. Single-stream cells.",
           "", "| model, batch, scenario | fastest | median latency | speedup vs baseline (95% CI) | basis | "
           "left out |", "|---|---|---|---|---|---|"]
    for f in fastest(rows):
        what, sp, basis, note = fastest_lines(f)
        med = fmt_ms(f.row.median_ms) if f.row else "—"
        where = f"{f.model}, batch {f.batch_size or '—'}, {f.scenario}"
        out.append("| " + " | ".join(md_cell(x) for x in (where, what, med, sp, basis, note or "—")) + " |")
    entries = cross_entries(rows)
    if entries:
        out += ["", "## Paired comparisons across runtimes and models", "",
                "Baseline latency / this latency, both timed in one worker in alternating blocks; 95% CI over "
                "rounds in fresh workers. Quality is against the baseline's FP32 outputs and metric.", "",
                "| cell | vs | speedup (95% CI) | quality vs baseline | note |", "|---|---|---|---|---|"]
        for r, p in entries:
            sp = fmt_speedup(p.speedup) + ("" if not p.speedup or p.speedup.clear else " (no clear difference)")
            out.append("| " + " | ".join(md_cell(x) for x in (r.cell_id, _vs(p.baseline), sp,
                                                                fmt_pct(p.quality_relative),
                                                                _note(p) or "—")) + " |")
    return "\n".join(out)


def e(x: object) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def section(rows: Sequence[Row]) -> str:
    """The HTML section (id "runtimes"): the fastest table, then every cross comparison."""
    body = []
    for f in fastest(rows):
        what, sp, basis, note = fastest_lines(f)
        cls = "good" if f.basis == "paired" and f.pair and f.pair.speedup and f.pair.speedup.direction == "faster" \
            else ""
        body.append(f"<tr><td>{e(f.model)}</td><td>{e(f.batch_size or '—')}</td><td>{e(f.scenario)}</td>"
                    f"<td>{e(what)}</td><td>{e(fmt_ms(f.row.median_ms) if f.row else '—')}</td>"
                    f'<td class="{cls}">{e(sp)}</td><td>{e(basis)}</td><td>{e(note or "—")}</td></tr>')
    cross = []
    for r, p in cross_entries(rows):
        sp = p.speedup
        cls = {"faster": "good", "slower": "bad"}.get(sp.direction, "neutral") if sp else ""
        text = e(fmt_speedup(sp)) + (f'<div class="ci">{e(sp.basis)}</div>' if sp else "")
        cross.append(f"<tr><td>{e(r.model)}</td><td>{e(r.variant)}</td><td>{e(r.runner)}</td>"
                     f"<td>{e(r.batch_size or '—')}</td><td>{e(r.scenario)}</td><td>{e(_vs(p.baseline))}</td>"
                     f'<td class="{cls}">{text}</td><td>{e(fmt_pct(p.quality_relative))}'
                     f'{" below floor" if p.below_floor else ""}</td>'
                     f'<td class="reason">{e(_note(p))}</td></tr>')
    cross_html = "" if not cross else f"""
<h3>Paired comparisons across runtimes and models</h3>
<p class="muted">Baseline latency / this latency, both timed in one worker in alternating blocks; 95% CI over
rounds in fresh workers. Quality is against the baseline's FP32 outputs and metric. A comparison without a
number says why.</p>
<div class="scroll"><table class="eb-table"><thead><tr><th>model</th><th>variant</th><th>runner</th><th>batch</th>
<th>scenario</th><th>vs</th><th>speedup (95% CI)</th><th>quality vs baseline</th><th>note</th></tr></thead>
<tbody>{''.join(cross)}</tbody></table></div>"""
    return f"""
<section id="runtimes"><h2>Fastest runtime × precision per model at the quality floor</h2>
<p class="muted">The fastest cell that is ok, not emulated and not below the quality floor. Ranked by paired
speedups against one baseline (timed in each cell's own worker, alternating blocks, 95% CI over rounds) where
every candidate has one; otherwise by median latencies of separate workers, and then no ratio is given:
{e(SEPARATE_WHY)}. Single-stream cells.</p>
<div class="scroll"><table class="eb-table"><thead><tr><th>model</th><th>batch</th><th>scenario</th>
<th>fastest</th><th>median latency</th><th>speedup vs baseline (95% CI)</th><th>basis</th><th>left out</th></tr>
</thead><tbody>{''.join(body)}</tbody></table></div>{cross_html}</section>"""
