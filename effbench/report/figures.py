"""The dashboard's charts as plain plotly figure dicts ({"data": [...], "layout": {...}}).

Plain dicts rather than graph_objects: building a few thousand traces stays fast, and the tests
validate every figure with `plotly.graph_objects.Figure`. Strings that plotly renders (names, hover
text, axis titles) are HTML-escaped here, because plotly interprets a subset of HTML in them.
"""
from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from effbench.report.table import Row, fmt_ms, fmt_pct, fmt_quality, fmt_speedup
from effbench.units import fmt_bytes, fmt_si

# Tableau 10: mid-saturation colours that stay readable on both a white and a near-black page.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
MAX_POINTS = 101          # latency points per record on the page: the 0th..100th percentiles of the raw samples
LOG_SPREAD = 20.0         # a chart axis turns logarithmic when max/min exceeds this
FRONT_COLOR = "#888888"


def esc(x: object) -> str:
    return html.escape(str(x), quote=False)


def variant_sort_key(v: str) -> tuple[int, int, str]:
    """Registry order (effbench.variants.specs): a precision, then its methods; unknown labels last."""
    from effbench.variants.specs import label_order
    return label_order(v)


def colour_map(rows: Sequence[Row]) -> dict[str, str]:
    variants = sorted({r.variant for r in rows}, key=variant_sort_key)
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}


def sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def summarise_samples(samples: Sequence[float], limit: int = MAX_POINTS) -> list[float]:
    """At most `limit` evenly spaced quantiles of the raw samples, min and max included.

    The quantile function is what a box or violin shows, so the chart keeps its shape while a
    100,000-sample record costs the page a few kilobytes.
    """
    a = np.asarray([s for s in samples if s is not None and math.isfinite(s)], dtype=np.float64)
    if a.size == 0:
        return []
    if a.size > limit:
        a = np.quantile(a, np.linspace(0.0, 1.0, limit))
    return [sig(float(x)) for x in a]


def hover_text(row: Row) -> str:
    """The full record, one fact per line, escaped."""
    lines = [f"<b>{esc(row.cell_id)}</b>", f"status: {esc(row.status)}"]
    if row.record.reason:
        lines.append(f"reason: {esc(row.record.reason)}")
    if row.record.ok:
        ci = f" (95% CI {fmt_ms(row.ci_ms[0])} – {fmt_ms(row.ci_ms[1])})" if row.ci_ms else ""
        lines.append(f"median latency: {fmt_ms(row.median_ms)}{ci}")
        rel = "" if row.p99_reliable else " (too few samples to be reliable)"
        n = row.latency.n if row.latency else None
        lines.append(f"p99: {fmt_ms(row.p99_ms)}{rel}; n = {n}, rounds = {row.record.rounds}")
        lines.append(f"throughput: {fmt_si(row.throughput_ips, 'items/s')}")
        if row.speedup:
            sp = row.speedup
            lines.append(f"speedup vs FP32: {fmt_speedup(sp)}, {sp.direction} ({esc(sp.basis)})")
        elif row.speedup_note:
            lines.append(f"speedup vs FP32: — ({esc(row.speedup_note)})")
        comp = f" ({row.compression:.2g}× smaller than FP32)" if row.compression else ""
        lines.append(f"size: {fmt_bytes(row.size_bytes)}{comp}")
        lines.append(f"MACs: {fmt_si(row.macs)}, FLOPs: {fmt_si(row.flops)}, BOPs: {fmt_si(row.bops)}")
        pruned = pruning_text(row)
        if pruned:
            lines.append(esc(pruned))
        lines.append(f"peak RSS: {fmt_bytes(row.peak_rss_bytes)}")
        if row.energy_j is not None:
            lines.append(f"energy / inference: {fmt_si(row.energy_j, 'J')} ({esc(row.energy_source)})")
        if row.quality is not None:
            lines.append(f"{esc(row.quality_metric)}: {fmt_quality(row.quality)} "
                         f"(relative to FP32 {fmt_pct(row.relative_quality)})")
    if row.flags:
        lines.append("flags: " + esc(", ".join(row.flags)))
    lines.append(f"host: {esc(row.host)}")
    return "<br>".join(lines)


def _group_label(row: Row, multi_host: bool, with_runner: bool = True) -> str:
    parts = [row.runner] if with_runner else []
    parts += [f"batch {row.batch_size}", row.scenario]
    if multi_host:
        parts.append(row.host)
    return " · ".join(str(p) for p in parts if p)


def _dropdown(labels: list[str], n_traces_per: list[int], prefix: str,
              relayouts: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """An updatemenu that shows one group of traces at a time (and rescales its axes to fit it)."""
    if len(labels) <= 1:
        return []
    total = sum(n_traces_per)
    buttons, start = [], 0
    for i, (label, n) in enumerate(zip(labels, n_traces_per)):
        vis = [False] * total
        vis[start:start + n] = [True] * n
        start += n
        buttons.append({"label": esc(label), "method": "update",
                        "args": [{"visible": vis}, (relayouts[i] if relayouts else {})]})
    return [{"type": "dropdown", "buttons": buttons, "active": 0, "x": 0, "xanchor": "left",
             "y": 1.02, "yanchor": "bottom", "showactive": True, "pad": {"l": 0, "t": 0},
             "name": prefix}]


def _unit(values: list[float], units: Sequence[tuple[float, str]]) -> tuple[float, str]:
    """The largest unit in which the median value is at least 1 (values are in base units)."""
    med = float(np.median(values)) if values else 1.0
    for scale, name in units:
        if med >= scale:
            return scale, name
    return units[-1]


ENERGY_UNITS = ((1.0, "J"), (1e-3, "mJ"), (1e-6, "µJ"), (1e-9, "nJ"))
SIZE_UNITS = ((2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB"), (1.0, "B"))


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another (lower x and higher-or-equal y), sorted by x."""
    front: list[tuple[float, float]] = []
    best = -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _axis_type(values: list[float]) -> str:
    pos = [v for v in values if v and v > 0]
    return "log" if pos and max(pos) / min(pos) > LOG_SPREAD else "linear"


def _axis(title: str, values: list[float]) -> dict[str, Any]:
    """An axis that turns logarithmic for wide spreads, with 1-2-5 ticks written out in full."""
    axis: dict[str, Any] = {"title": {"text": title}, **_scale(values)}
    return axis


def _scale(values: list[float]) -> dict[str, Any]:
    """The type and ticks of an axis for these values (also used per dropdown group)."""
    if _axis_type(values) != "log":
        return {"type": "linear", "tickmode": "auto", "autorange": True}
    pos = [v for v in values if v and v > 0]
    lo, hi = math.floor(math.log10(min(pos))), math.ceil(math.log10(max(pos)))
    ticks = [m * 10.0**k for k in range(lo, hi + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if min(pos) / 2.5 <= t <= max(pos) * 2.5]
    return {"type": "log", "tickmode": "array", "tickvals": [sig(t) for t in ticks],
            "ticktext": [f"{t:g}" for t in ticks], "autorange": True}


def _relayout(axis_key: str, values: list[float]) -> dict[str, Any]:
    sc = _scale(values)
    out = {f"{axis_key}.{k}": v for k, v in sc.items()}
    if sc["type"] == "linear":
        out[f"{axis_key}.tickvals"] = None
        out[f"{axis_key}.ticktext"] = None
    return out


def base_layout(height: int = 420) -> dict[str, Any]:
    return {"height": height, "margin": {"l": 64, "r": 24, "t": 56, "b": 56},
            "hoverlabel": {"align": "left"}, "legend": {"title": {"text": "variant"}},
            "font": {"size": 12}}


def pareto_figure(rows: Sequence[Row], colours: dict[str, str], multi_host: bool) -> dict[str, Any] | None:
    """Quality vs latency, vs energy per inference, vs size for one model; one group shown at a time."""
    ok = [r for r in rows if r.record.ok and r.quality is not None]
    if not ok:
        return None
    energy_scale, energy_unit = _unit([r.energy_j for r in ok if r.energy_j], ENERGY_UNITS)
    size_scale, size_unit = _unit([r.size_bytes for r in ok if r.size_bytes], SIZE_UNITS)
    panels = (
        ("x", "median latency (ms)", lambda r: r.median_ms),
        ("x2", f"energy / inference ({energy_unit})",
         lambda r: r.energy_j / energy_scale if r.energy_j is not None else None),
        ("x3", f"size ({size_unit})", lambda r: r.size_bytes / size_scale if r.size_bytes else None),
    )
    groups: dict[str, list[Row]] = {}
    for r in ok:
        groups.setdefault(_group_label(r, multi_host), []).append(r)
    labels = list(groups)
    traces: list[dict[str, Any]] = []
    counts = []
    relayouts = []
    for gi, label in enumerate(labels):
        n0 = len(traces)
        axis_values: dict[str, list[float]] = {"x": [], "x2": [], "x3": []}
        members = sorted(groups[label], key=lambda r: variant_sort_key(r.variant))
        for pi, (xa, _title, getx) in enumerate(panels):
            pts = []
            for r in members:
                x = getx(r)
                if x is None:
                    continue
                axis_values[xa].append(x)
                pts.append((x, r.quality))
                symbol = "diamond" if r.emulated else "circle"
                if xa == "x2" and r.energy_modeled:
                    symbol += "-open"
                marker: dict[str, Any] = {"size": 11, "color": colours[r.variant]}
                if symbol != "circle":
                    marker["symbol"] = symbol
                if r.below_floor:
                    marker["line"] = {"width": 2.5, "color": "#d62728"}
                trace = {"mode": "markers", "x": [sig(x)], "y": [sig(r.quality, 5)], "name": esc(r.variant),
                         "legendgroup": esc(r.variant), "marker": marker, "hovertext": hover_text(r),
                         "hoverinfo": "text"}
                if pi:
                    trace["showlegend"] = False
                    trace["xaxis"] = xa
                if gi:
                    trace["visible"] = False
                traces.append(trace)
            front = pareto_front(pts)
            if len(front) > 1:
                traces.append({
                    "type": "scatter", "mode": "lines", "x": [sig(p[0]) for p in front],
                    "y": [sig(p[1], 5) for p in front], "line": {"shape": "hv", "dash": "dash", "color": FRONT_COLOR},
                    "name": "Pareto front", "legendgroup": "front", "showlegend": pi == 0,
                    "visible": gi == 0, "xaxis": xa, "hoverinfo": "skip"})
        counts.append(len(traces) - n0)
        relayouts.append({k: v for xa, vals in axis_values.items()
                          for k, v in _relayout("xaxis" if xa == "x" else f"xaxis{xa[1:]}", vals).items()})
        if gi == 0:
            first_values = axis_values
    metric = esc(ok[0].quality_metric)
    layout = base_layout(440)
    layout["legend"] = {"title": {"text": "variant"}, "orientation": "h", "y": -0.22, "x": 0}
    layout["margin"]["b"] = 110
    for i, (xa, title, _g) in enumerate(panels):
        key = "xaxis" if xa == "x" else f"xaxis{xa[1:]}"
        layout[key] = {**_axis(esc(title), first_values[xa]), "anchor": "y",
                       "domain": [i / 3 + 0.03 * (i > 0), (i + 1) / 3 - 0.03 * (i < 2)]}
    layout["yaxis"] = {"title": {"text": f"{metric} (higher is better)"}}
    layout["updatemenus"] = _dropdown(labels, counts, "group", relayouts)
    if layout["updatemenus"]:
        layout["margin"]["t"] = 72
    return {"data": traces, "layout": layout}


def latency_figure(rows: Sequence[Row], colours: dict[str, str], multi_host: bool) -> dict[str, Any] | None:
    """Box per variant (grouped by runner) from the raw samples, one batch size / scenario at a time."""
    ok = [r for r in rows if r.record.ok and r.record.samples_ms]
    if not ok:
        return None
    runners = sorted({r.runner for r in ok})
    groups: dict[str, list[Row]] = {}
    for r in ok:
        groups.setdefault(_group_label(r, multi_host, with_runner=False), []).append(r)
    traces, counts, relayouts, group_values = [], [], [], []
    runner_colour = {rn: PALETTE[i % len(PALETTE)] for i, rn in enumerate(runners)}
    for gi, label in enumerate(groups):
        n0 = len(traces)
        values: list[float] = []
        seen: set[str] = set()
        for r in sorted(groups[label], key=lambda r: (variant_sort_key(r.variant), r.runner)):
            pts = summarise_samples(r.record.samples_ms)
            values += [pts[0], pts[-1]]
            name = r.runner + (" (emulated)" if r.emulated else "")
            traces.append({
                "type": "box", "y": pts, "x0": esc(r.variant), "name": esc(r.runner),
                "legendgroup": esc(r.runner), "offsetgroup": esc(r.runner),
                "showlegend": r.runner not in seen, "visible": gi == 0,
                "marker": {"color": runner_colour[r.runner], "size": 3}, "boxpoints": "outliers",
                "line": {"width": 1.5}, "hovertext": esc(f"{r.cell_id}: {name}"), "hoverinfo": "y+text"})
            seen.add(r.runner)
        counts.append(len(traces) - n0)
        relayouts.append(_relayout("yaxis", values))
        group_values.append(values)
    layout = base_layout(420)
    layout["boxmode"] = "group"
    layout["legend"] = {"title": {"text": "runner"}}
    xcats = sorted({r.variant for r in ok}, key=variant_sort_key)
    layout["xaxis"] = {"title": {"text": "variant"}, "type": "category",
                       "categoryorder": "array", "categoryarray": [esc(v) for v in xcats]}
    layout["yaxis"] = _axis("latency per call (ms)", group_values[0])
    layout["updatemenus"] = _dropdown(list(groups), counts, "group", relayouts)
    if layout["updatemenus"]:
        layout["margin"]["t"] = 72
    return {"data": traces, "layout": layout}


def throughput_figure(rows: Sequence[Row], colours: dict[str, str], multi_host: bool) -> dict[str, Any] | None:
    """Throughput vs batch size per variant and runner, offline scenario (else every scenario)."""
    ok = [r for r in rows if r.record.ok and r.throughput_ips and r.batch_size]
    offline = [r for r in ok if r.scenario == "offline"]
    ok = offline or ok
    if not ok:
        return None
    runners = sorted({r.runner for r in ok})
    lines: dict[tuple, list[Row]] = {}
    for r in ok:
        key = (r.variant, r.runner, r.host if multi_host else "", r.scenario if not offline else "")
        lines.setdefault(key, []).append(r)
    traces = []
    for (variant, runner, host, scen), members in sorted(lines.items(),
                                                         key=lambda kv: (variant_sort_key(kv[0][0]), kv[0][1:])):
        members.sort(key=lambda r: r.batch_size)
        name = " · ".join(x for x in (variant, runner, host, scen) if x)
        if any(r.emulated for r in members):
            name += " (emulated)"
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": esc(name), "legendgroup": esc(variant),
            "x": [r.batch_size for r in members], "y": [sig(r.throughput_ips) for r in members],
            "line": {"color": colours[variant], "dash": DASHES[runners.index(runner) % len(DASHES)]},
            "marker": {"size": 8}, "hovertext": [hover_text(r) for r in members], "hoverinfo": "text"})
    batches = sorted({r.batch_size for r in ok})
    layout = base_layout(360 + 22 * math.ceil(len(traces) / 4))
    layout["legend"] = {"title": {"text": "variant · runner"}, "orientation": "h", "x": 0, "y": -0.2,
                        "yanchor": "top"}
    layout["xaxis"] = {"title": {"text": "batch size"}, "type": "log" if len(batches) > 1 else "linear",
                       "tickvals": batches, "ticktext": [str(b) for b in batches]}
    layout["yaxis"] = _axis("throughput (items/s)", [r.throughput_ips for r in ok])
    return {"data": traces, "layout": layout}


def macs_figure(row: Row) -> dict[str, Any] | None:
    """MACs by op type for one model's graph, largest first."""
    by_op = row.record.model_stats.by_op if row.record.model_stats else None
    if not by_op:
        return None
    items = [(str(op), v) for op, v in by_op.items() if isinstance(v, dict) and v.get("macs")]
    if not items:
        return None
    items.sort(key=lambda kv: kv[1].get("macs") or 0)
    total = sum((v.get("macs") or 0) for _, v in items) or None
    shares = [v.get("share") if v.get("share") is not None else
              ((v.get("macs") or 0) / total if total else None) for _, v in items]
    trace = {
        "type": "bar", "orientation": "h", "y": [esc(op) for op, _ in items],
        "x": [v.get("macs") or 0 for _, v in items],
        "text": [fmt_pct(s) if s is not None else "" for s in shares], "textposition": "auto",
        "marker": {"color": PALETTE[0]},
        "hovertext": [f"{esc(op)}: {fmt_si(v.get('macs'))} MACs in {v.get('count', '?')} nodes"
                      for op, v in items], "hoverinfo": "text", "name": "MACs"}
    layout = base_layout(max(180, 60 + 28 * len(items)))
    layout["margin"] = {"l": 140, "r": 24, "t": 36, "b": 48}
    layout["showlegend"] = False
    layout["xaxis"] = {"title": {"text": "multiply-accumulates (MACs)"}}
    layout["yaxis"] = {"automargin": True}
    return {"data": [trace], "layout": layout}


# ---------------------------------------------------------------------------------------- pruning
def pruning_level(row: Row) -> tuple[str, float] | None:
    """(method, level) of a pruned variant: the amount asked for (2:4: its measured sparsity, a half)."""
    v = row.record.variant
    sec = (v.pruning or v.sparsity) if v is not None else None
    if not sec or not sec.get("method"):
        return None
    level = sec.get("amount", sec.get("overall"))
    return (str(sec["method"]), float(level)) if isinstance(level, (int, float)) else None


def pruning_text(row: Row) -> str | None:
    """One line on what pruning did, for the hover text."""
    v = row.record.variant
    if v is None or not (v.pruning or v.sparsity):
        return None
    if v.pruning:
        p = v.pruning
        return (f"pruning: {p.get('method')} {fmt_pct(p.get('amount'))} of the channels of {len(p.get('layers') or {})} "
                f"layers, params {fmt_pct(p.get('params_removed'))} fewer; not fine-tuned")
    sp = v.sparsity
    eff = row.record.model_stats.effective_macs if row.record.model_stats else None
    kern = "dense kernels" if sp.get("sparse_kernels") is False else "sparse kernels"
    return (f"pruning: {sp.get('method')}, {fmt_pct(sp.get('overall'))} of the weights zero ({kern}); "
            f"effective MACs {fmt_si(eff)}; not fine-tuned")


def pruning_figure(rows: Sequence[Row], multi_host: bool) -> dict[str, Any] | None:
    """Quality and median latency against the pruning level, one line per method, precision and runner
    (from the unpruned variant of the same precision at 0), one batch size / scenario at a time."""
    ok = [r for r in rows if r.record.ok and r.quality is not None and r.median_ms]
    pruned = [(r, pruning_level(r)) for r in ok]
    if not any(lv for _, lv in pruned):
        return None
    groups: dict[str, list[tuple[Row, tuple[str, float] | None]]] = {}
    for r, lv in pruned:
        groups.setdefault(_group_label(r, multi_host, with_runner=False), []).append((r, lv))
    traces, counts = [], []
    for gi, (label, members) in enumerate(groups.items()):
        n0 = len(traces)
        lines: dict[tuple[str, str, str], list[tuple[float, Row]]] = {}
        for r, lv in members:
            if lv:
                lines.setdefault((lv[0], r.variant.split("+")[0], r.runner), []).append((lv[1], r))
        for (method, base, runner), pts in sorted(lines.items()):
            pts += [(0.0, r) for r, lv in members if lv is None and r.variant == base and r.runner == runner]
            pts.sort(key=lambda p: p[0])
            name = esc(f"{method} · {base} · {runner}")
            colour = PALETTE[len(traces) % len(PALETTE)]
            for yi, (axis, gety) in enumerate((("y", lambda r: r.quality), ("y2", lambda r: r.median_ms))):
                traces.append({"type": "scatter", "mode": "lines+markers", "name": name, "legendgroup": name,
                               "x": [sig(x) for x, _ in pts], "y": [sig(gety(r), 5) for _, r in pts],
                               "yaxis": axis, "showlegend": yi == 0, "visible": gi == 0,
                               "line": {"color": colour, "dash": DASHES[yi]}, "marker": {"size": 8},
                               "hovertext": [hover_text(r) for _, r in pts], "hoverinfo": "text"})
        counts.append(len(traces) - n0)
    metric = esc(ok[0].quality_metric)
    layout = base_layout(420)
    layout["legend"] = {"title": {"text": "method · precision · runner"}, "orientation": "h", "y": -0.25, "x": 0}
    layout["margin"]["b"] = 110
    layout["xaxis"] = {"title": {"text": "pruning level (fraction of channels removed, or of weights zeroed)"},
                       "tickformat": ".0%", "domain": [0, 1]}
    layout["yaxis"] = {"title": {"text": f"{metric} (solid)"}, "domain": [0, 1]}
    layout["yaxis2"] = {"title": {"text": "median latency, ms (dashed)"}, "overlaying": "y", "side": "right"}
    layout["updatemenus"] = _dropdown(list(groups), counts, "group")
    if layout["updatemenus"]:
        layout["margin"]["t"] = 72
    return {"data": traces, "layout": layout}
