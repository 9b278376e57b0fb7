"""The dashboard's load section: the server scenario's latency against offered load per variant (with the
bound and each variant's peak), the offline scenario's samples per second and the multi-stream scenario's
latency per query as bars with their CIs, and a table with every LoadGen figure (single-stream's LoadGen run
too), LoadGen's version and settings and its logs.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from effbench.report.figures import DASHES, PALETTE, base_layout, colour_map, esc, sig, variant_sort_key
from effbench.report.table import Row
from effbench.units import fmt_si


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _key(r: Row) -> tuple:
    return (variant_sort_key(r.variant), r.runner, r.batch_size)


def _label(r: Row, runners: int, batches: int) -> str:
    parts = [r.variant] + ([r.runner] if runners > 1 else []) + ([f"b{r.batch_size}"] if batches > 1 else [])
    return " · ".join(parts)


def _rounds_of(s) -> list[list[dict[str, Any]]]:
    """The probes of each round (a merged record keeps them all, with their round), by offered rate;
    a store without probes gives its curve as one round."""
    # LoadGen's runs say `qps` and `valid`; stores from the hand-written generator `offered_qps` and `passed`
    probes = [{**p, "offered_qps": p.get("offered_qps", p.get("qps")), "passed": p.get("passed", p.get("valid"))}
              for p in s.probes]
    probes = [p for p in probes if isinstance(p.get("offered_qps"), (int, float))
              and isinstance(p.get("percentile_ms"), (int, float))]
    if not probes:
        probes = [{"offered_qps": q, "percentile_ms": v} for q, v in s.curve]
    rounds: dict[Any, list[dict[str, Any]]] = {}
    for p in probes:
        rounds.setdefault(p.get("round", 0), []).append(p)
    return [sorted(v, key=lambda p: p["offered_qps"]) for _, v in sorted(rounds.items(), key=lambda kv: str(kv[0]))]


def _probe_text(name: str, pct: float, p: dict[str, Any]) -> str:
    state = ("LoadGen: VALID" if p.get("valid") else "LoadGen: INVALID" if p.get("valid") is False else
             "met the bound" if p.get("passed") else
             "stopped early once the percentile was over the bound: at least this" if p.get("stopped_early") else
             "missed the bound" if "passed" in p else "")
    return esc(f"{name}: {p['offered_qps']:.4g} queries/s offered, p{pct:g} {p['percentile_ms']:.4g} ms"
               + (f" ({state})" if state else "") + (f", {p['queries']} queries" if p.get("queries") else ""))


def server_figure(rows: Sequence[Row], colours: dict[str, str]) -> dict[str, Any] | None:
    """Latency at the bound's percentile against the offered rate: one line per cell and round (every
    probe; an open triangle is a probe stopped early, whose latency is a lower bound), a star at the
    cell's max_qps, the bound as a dashed line."""
    cells = sorted((r for r in rows if r.record.ok and r.record.server and r.record.server.curve), key=_key)
    if not cells:
        return None
    runners = sorted({r.runner for r in cells})
    n_batches = len({r.batch_size for r in cells})
    traces: list[dict[str, Any]] = []
    ys: list[float] = []
    bounds = sorted({r.record.server.latency_bound_ms for r in cells})
    for r in cells:
        s = r.record.server
        name = _label(r, len(runners), n_batches)
        colour = colours.get(r.variant, PALETTE[0])
        dash = DASHES[runners.index(r.runner) % len(DASHES)]
        for i, probes in enumerate(_rounds_of(s)):
            y = [sig(p["percentile_ms"]) for p in probes]
            ys += y
            traces.append({"type": "scatter", "mode": "lines+markers", "name": esc(name), "legendgroup": esc(name),
                           "showlegend": i == 0, "x": [sig(p["offered_qps"]) for p in probes], "y": y,
                           "line": {"color": colour, "dash": dash, "width": 1.5},
                           "marker": {"size": 7, "symbol": ["triangle-up-open" if p.get("stopped_early") else
                                                            "circle" for p in probes]},
                           "hovertext": [_probe_text(name, s.percentile, p) for p in probes], "hoverinfo": "text"})
        if s.max_qps and s.percentile_ms is not None:
            ci = f" (95% CI {s.max_qps_ci[0]:.4g}–{s.max_qps_ci[1]:.4g})" if s.max_qps_ci else ""
            traces.append({"type": "scatter", "mode": "markers", "name": esc(f"{name}: max"), "legendgroup": esc(name),
                           "showlegend": False, "x": [sig(s.max_qps)], "y": [sig(s.percentile_ms)],
                           "marker": {"symbol": "star", "size": 14, "color": colour, "line": {"width": 1}},
                           "hovertext": esc(f"{name}: max {s.max_qps:.4g} queries/s{ci}, p{s.percentile:g} "
                                            f"{s.percentile_ms:.4g} ms within {s.latency_bound_ms:g} ms"),
                           "hoverinfo": "text"})
    layout = base_layout(420)
    layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": b, "y1": b,
                         "line": {"color": "#e15759", "dash": "dash", "width": 1.5}} for b in bounds]
    layout["annotations"] = [{"xref": "paper", "x": 1, "xanchor": "right", "yref": "y", "y": b, "yanchor": "bottom",
                              "text": esc(f"bound {b:g} ms"), "showarrow": False, "font": {"color": "#e15759"}}
                             for b in bounds]
    layout["legend"] = {"title": {"text": "variant"}}
    layout["xaxis"] = {"title": {"text": "offered load (queries/s, Poisson arrivals)"}, "rangemode": "tozero"}
    top = max([*ys, *bounds])
    layout["yaxis"] = {"title": {"text": "latency at the percentile (ms, from scheduled arrival)"},
                       "type": "log" if ys and min(ys) > 0 and top / min(ys) > 20 else "linear"}
    return {"data": traces, "layout": layout}


def _offline_hover(r: Row, value: float, ci: tuple[float, float] | None) -> str:
    o = r.record.offline
    where = f" (95% CI {fmt_si(ci[0])}–{fmt_si(ci[1])}, {o.ci_scope})" if ci else ""
    return f"{r.cell_id}: {fmt_si(value, 'samples/s')}{where}; pool of {o.queries} queries at batch {r.batch_size}"


def _bars(cells: list[Row], colours: dict[str, str], value, ci, hover, ytitle: str) -> dict[str, Any]:
    """One bar per cell, grouped by runner, with its CI over rounds as the error bar."""
    runners = sorted({r.runner for r in cells})
    n_batches = len({r.batch_size for r in cells})
    traces = []
    for rn in runners:
        mine = [r for r in cells if r.runner == rn]
        xs = [esc(_label(r, 1, n_batches)) for r in mine]
        vals = [value(r) for r in mine]
        cis = [ci(r) for r in mine]
        traces.append({"type": "bar", "name": esc(rn), "x": xs, "y": [sig(v) for v in vals],
                       "offsetgroup": esc(rn), "marker": {"color": [colours.get(r.variant, PALETTE[0]) for r in mine],
                                                        "line": {"width": 1}},
                       "error_y": {"type": "data", "symmetric": False,
                                   "array": [sig(c[1] - v) if c else 0 for c, v in zip(cis, vals)],
                                   "arrayminus": [sig(v - c[0]) if c else 0 for c, v in zip(cis, vals)]},
                       "hovertext": [esc(hover(r, v, c)) for r, v, c in zip(mine, vals, cis)],
                       "hoverinfo": "text"})
    layout = base_layout(380)
    layout["barmode"] = "group"
    layout["legend"] = {"title": {"text": "runner"}}
    layout["xaxis"] = {"title": {"text": "variant"}, "type": "category"}
    layout["yaxis"] = {"title": {"text": ytitle}, "rangemode": "tozero"}
    return {"data": traces, "layout": layout}


def offline_figure(rows: Sequence[Row], colours: dict[str, str]) -> dict[str, Any] | None:
    """Samples per second of each offline cell, bars grouped by runner, with the CI over rounds."""
    cells = sorted((r for r in rows if r.record.ok and r.record.offline and r.record.offline.samples_per_s), key=_key)
    if not cells:
        return None
    return _bars(cells, colours, lambda r: r.record.offline.samples_per_s, lambda r: r.record.offline.ci,
                 _offline_hover, "samples per second (offline, whole passes)")


def _multi_stream_hover(r: Row, value: float, ci: tuple[float, float] | None) -> str:
    m = r.record.multi_stream
    where = f" (95% CI {ci[0]:.4g}–{ci[1]:.4g}, {m.ci_scope})" if ci else ""
    return (f"{r.cell_id}: p{m.percentile:g} {value:.4g} ms per query of {m.samples_per_query} samples{where}; "
            f"LoadGen {m.verdict} ({m.runs_valid} of {m.runs} runs VALID)")


def multi_stream_figure(rows: Sequence[Row], colours: dict[str, str]) -> dict[str, Any] | None:
    """LoadGen's multi-stream figure of each cell (the latency of a query at the percentile), bars grouped
    by runner, with the CI over rounds."""
    cells = sorted((r for r in rows if r.record.ok and r.record.multi_stream
                    and r.record.multi_stream.percentile_ms is not None), key=_key)
    if not cells:
        return None
    pct = sorted({r.record.multi_stream.percentile for r in cells})
    return _bars(cells, colours, lambda r: r.record.multi_stream.percentile_ms, lambda r: r.record.multi_stream.ci,
                 _multi_stream_hover,
                 f"latency per query at p{'/'.join(f'{p:g}' for p in pct)} (ms, multi-stream; lower is better)")


def _logs(lg: dict[str, Any]) -> str:
    """Links to a LoadGen run's own logs (relative to the report, which sits beside `loadgen/`)."""
    links = [f'<a href="{_e(lg[k])}">{name}</a>' for k, name in (("summary", "summary"), ("detail", "detail"))
             if lg.get(k)]
    return " ".join(links)


def _early_stopping_text(es: dict[str, Any]) -> str:
    if not es:
        return "—"
    if "met" in es:  # LoadGen's own verdict and its line
        return ("satisfied" if es["met"] else "not satisfied") + (f": {es['lines'][0]}" if es.get("lines") else "")
    return ("bounded" if es.get("passed") else f"needs {es.get('min_queries')} queries (has {es.get('queries')})")


def _stream_early_stopping(s) -> str:
    """LoadGen's early-stopping estimate of a single- or multi-stream figure, and whether it was satisfied."""
    if s.early_stopping_ms is None:
        return "—"
    met = "" if s.early_stopping_met is None else " (satisfied)" if s.early_stopping_met else " (not satisfied)"
    return f"p{s.percentile:g} estimate {s.early_stopping_ms:.4g} ms{met}"


def _stream_row(r: Row) -> tuple[str, str, str, str, dict[str, Any]] | None:
    """(figure, at the figure, early stopping, runs, LoadGen section) of a multi-stream cell or of a
    single-stream cell's LoadGen run; None for a single-stream cell without one."""
    if r.record.multi_stream and r.record.multi_stream.percentile_ms is not None:
        m = r.record.multi_stream
        ci = f" [{m.ci[0]:.4g}, {m.ci[1]:.4g}]" if m.ci else ""
        calls = (f"{m.calls_per_query} calls of batch {m.batch_size}" if (m.calls_per_query or 1) > 1 else
                 f"one call of batch {m.batch_size}" + (" (padded)" if (m.batch_size or 0) > m.samples_per_query else ""))
        return (f"p{m.percentile:g} {m.percentile_ms:.4g}{ci} ms per query of {m.samples_per_query} samples",
                f"multi-stream: LoadGen {m.verdict} ({m.runs_valid} of {m.runs} runs VALID), p50 "
                + (f"{m.p50_ms:.4g} ms" if m.p50_ms is not None else "—") + f"; {calls} per query",
                _stream_early_stopping(m), f"{m.runs} runs alternated with FP32's", m.loadgen)
    s = r.record.single_stream
    if s and s.percentile_ms is not None:
        ci = f" [{s.ci[0]:.4g}, {s.ci[1]:.4g}]" if s.ci else ""
        return (f"p{s.percentile:g} {s.percentile_ms:.4g}{ci} ms",
                f"single-stream: LoadGen {s.verdict}, p99 " + (f"{s.p99_ms:.4g} ms" if s.p99_ms is not None else "—")
                + (f", {s.queries} queries" if s.queries else ""),
                _stream_early_stopping(s), "after the paired loop, one run per round", s.loadgen)
    return None


def _table(rows: Sequence[Row]) -> str:
    cells = sorted((r for r in rows if r.record.ok and (r.record.server or r.record.offline or _stream_row(r))),
                   key=lambda r: (r.model, *_key(r)))
    if not cells:
        return ""
    out = []
    for r in cells:
        stream = _stream_row(r)
        if stream:
            peak, what, es, search, lg = stream
        elif r.record.server:
            s = r.record.server
            ci = f" [{s.max_qps_ci[0]:.4g}, {s.max_qps_ci[1]:.4g}]" if s.max_qps_ci else ""
            peak = f"{s.max_qps:.4g}{ci} queries/s" if s.max_qps else f"none ({s.reason or s.search or ''})"
            at = f"{s.percentile_ms:.4g}" if s.percentile_ms is not None else "—"
            what = f"p{s.percentile:g} {at} ms (bound {s.latency_bound_ms:g})"
            es, search, lg = _early_stopping_text(s.early_stopping or {}), s.search or "", s.extra.get("loadgen") or {}
            judged = [p for p in s.probes if isinstance(p.get("valid"), bool)]
            if judged:  # LoadGen's verdict on every rate tried (the chart's hover gives each one)
                search += (f"{'; ' if search else ''}LoadGen: {sum(p['valid'] for p in judged)} of {len(judged)} "
                           "rates tried VALID")
        else:
            o = r.record.offline
            ci = f" [{o.ci[0]:.4g}, {o.ci[1]:.4g}]" if o.ci else ""
            peak, what, es = f"{o.samples_per_s:.4g}{ci} samples/s", f"pool of {o.queries}, {o.passes} runs", "—"
            search, lg = "", o.extra.get("loadgen") or {}
        gen = lg.get("generator") or "effbench's own generator (a store from before LoadGen)"
        if lg.get("limited_by_generator"):
            peak += " (limited by the load generator: " + (lg.get("generator_check") or "") + ")"
        out.append(f"<tr><td>{_e(r.cell_id)}</td><td class=\"num\">{_e(peak)}</td><td>{_e(what)}</td>"
                   f"<td>{_e(es)}</td><td>{_e(search)}</td><td class=\"muted\">{_e(gen)} {_logs(lg)}</td></tr>")
    skipped = sorted({r.batch_size for r in rows if r.record.ok and r.record.single_stream
                      and r.record.single_stream.percentile_ms is None and r.record.single_stream.reason})
    note = ("" if not skipped else '<p class="muted">Single-stream cells of batch ' + _e(", ".join(map(str, skipped)))
            + " have no LoadGen run: LoadGen's single-stream query is one sample (a query of several samples is "
              "what multi-stream measures).</p>")
    return ('<table class="small"><thead><tr><th>cell</th><th>max rate / throughput / latency [95% CI over rounds]'
            '</th><th>at the figure</th><th title="MLPerf LoadGen early stopping at 99% confidence">early stopping'
            '</th><th>search / runs</th><th>load generator and its logs</th></tr></thead><tbody>' + "".join(out) +
            "</tbody></table>" + note)


def load_notes(r: Row) -> list[str]:
    """A decision-table note with the cell's offline or server figure (Markdown summary)."""
    rec = r.record
    if not rec.ok:
        return []
    out = []
    if rec.server:
        s = rec.server
        ci = f" [{fmt_si(s.max_qps_ci[0])}, {fmt_si(s.max_qps_ci[1])}]" if s.max_qps_ci else ""
        out.append(f"server: max {fmt_si(s.max_qps)}{ci} queries/s with p{s.percentile:g} within "
                   f"{s.latency_bound_ms:g} ms" if s.max_qps else f"server: {s.reason or 'no rate met the bound'}")
    if rec.offline and rec.offline.samples_per_s:
        o = rec.offline
        ci = f" [{fmt_si(o.ci[0])}, {fmt_si(o.ci[1])}]" if o.ci else ""
        out.append(f"offline: {fmt_si(o.samples_per_s)}{ci} samples/s over a pool of {o.queries}")
    for kind, s in (("multi-stream", rec.multi_stream), ("single-stream (LoadGen)", rec.single_stream)):
        if s and s.percentile_ms is not None:
            ci = f" [{s.ci[0]:.4g}, {s.ci[1]:.4g}]" if s.ci else ""
            per = f" per query of {s.samples_per_query} samples" if kind == "multi-stream" else ""
            out.append(f"{kind}: p{s.percentile:g} {s.percentile_ms:.4g}{ci} ms{per}, LoadGen {s.verdict}")
    return out


def section(rows: Sequence[Row], figs: dict[str, Any]) -> str:
    """The 'Load' section (empty when no cell ran offline, server, multi-stream or single-stream's LoadGen)."""
    if not has_load(rows):
        return ""
    colours = colour_map(rows)
    parts = []
    whats = {"server": "server: latency against load", "offline": "offline: throughput",
             "multi-stream": "multi-stream: latency per query"}
    for mi, model in enumerate(sorted({r.model for r in rows})):
        mrows = [r for r in rows if r.model == model]
        for kind, build in (("server", server_figure), ("offline", offline_figure),
                            ("multi-stream", multi_stream_figure)):
            fig = build(mrows, colours)
            if fig is not None:
                fid = f"fig-load-{kind}-{mi}"
                figs[fid] = fig
                parts.append(f'<h3>{_e(model)} — {_e(whats[kind])}</h3><div class="chart" id="{fid}"></div>')
    return f"""<section id="load"><h2>Under load</h2>
<p class="muted">These scenarios run through MLPerf LoadGen (the load generator of every MLPerf submission; these
are MLPerf-style runs, not MLPerf results: no audit, no submission checker). Server: queries arrive as a Poisson
process at each offered rate; latency runs from each query's scheduled arrival, so a backlog counts. The search
brackets then bisects for the highest rate LoadGen calls VALID (its latency percentile within the bound and its
early stopping satisfied); a star marks it. Offline: LoadGen's one query of a pool of samples, all available at
once, worked through at the cell's batch size; samples per second from LoadGen's summary, runs alternated with
FP32's so the ratio is paired, with the 95% CI over rounds. Multi-stream: LoadGen issues one query of several
samples (8 unless the suite says) at a time, the next when it completes; the figure is its latency of queries at
the 99th percentile, from LoadGen's summary, runs alternated with FP32's. Single-stream's LoadGen run (batch-1
cells, after the paired loop): LoadGen's 90th percentile and its early-stopping estimate. Each row gives LoadGen's
version and settings and links its own logs.</p>
{"".join(parts)}{_table(rows)}</section>"""


def has_load(rows: Sequence[Row]) -> bool:
    return any(r.record.ok and (r.record.server or r.record.offline or _stream_row(r)) for r in rows)

