"""`index.html`: the self-contained dashboard (plotly.js embedded once, no network request of any kind).

Every string from a suite, model or record is escaped with `html.escape`; JSON embedded in a
<script> block is escaped so that `</script>` and `<!--` inside it cannot end or confuse the block.
"""
from __future__ import annotations

import html
import json
import math
import statistics
from collections.abc import Sequence
from importlib import resources
from typing import Any

from effbench.report import figures, fleet, generation, layers, load, runtimes
from effbench.report.overview import Overview
from effbench.report.table import FP32, Row, fmt_ms, fmt_pct, fmt_quality, fmt_speedup
from effbench.units import fmt_bytes, fmt_si

# The page may load nothing from anywhere: this policy makes a stray request fail loudly in the console.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'")
# Runtime packages worth showing in the header, in this order; the rest stay in the details.
def key_packages() -> tuple[str, ...]:
    from effbench.runners import provenance_packages
    return (*provenance_packages(), "onnx", "numpy")


def e(x: object) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def script_json(obj: Any) -> str:
    """JSON safe to embed in <script type="application/json">: no `</`, `<!--` or `-->` survives."""
    s = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_json_default)
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def _asset(name: str) -> str:
    return resources.files("effbench.report").joinpath("assets", name).read_text(encoding="utf-8")


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs
    js = get_plotlyjs()
    # the bundle holds no "</script" today; if a future one does, break it so the block cannot end early
    return js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


def _num_attr(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else f"{float(x):.6g}"  # sort key: 6 digits suffice


def _tag(kind: str, text: str, title: str) -> str:
    return f'<span class="tag tag-{e(kind)}" title="{e(title)}">{e(text)}</span>'


# ---------------------------------------------------------------- header

def _header(ov: Overview) -> str:
    c = ov.counts
    links = [("ok", "ok", "#decision"), ("unsupported", "unsupported", "#unsupported"),
             ("failed", "failed", "#failed"), ("unstable", "unstable", "#unstable"), ("drift", "drift", "#drift"),
             ("below_floor", "below quality floor", "#below-floor")]
    chips = "".join(
        f'<a class="count count-{e(k)}" href="{href}"><b>{c[k]}</b> {e(label)}</a>' for k, label, href in links)
    hosts = []
    for h in ov.host_info:
        pk = [f"{e(p)} {e(h.packages[p])}" for p in key_packages() if p in h.packages]
        facts = []
        if h.python:
            facts.append(f"Python {e(h.python)}")
        if h.effbench:
            facts.append(f"effbench {e(h.effbench)}")
        if h.speed_index is not None:
            si = h.speed_index
            if isinstance(si, dict) and si.get("gflops"):
                text = f"{si['gflops']:.1f} GFLOP/s ({si.get('name', 'reference workload')}, {si.get('median_ms', 0):.2f} ms)"
            else:
                text = _short(si)
            facts.append(f"speed index {e(text)}")
        details = "".join(f"<tr><th>{e(k)}</th><td>{e(_short(v))}</td></tr>" for k, v in sorted(h.details.items()))
        pkgs = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in sorted(h.packages.items()))
        when = f"{e(h.first)}" + (f" – {e(h.last)}" if h.last and h.last != h.first else "") if h.first else "unknown"
        hosts.append(
            f'<div class="host"><div class="host-name">{e(h.name)}</div>'
            f'<div class="muted">{h.cells} cells · {when}</div>'
            f'<div>{" · ".join(pk + facts) or "no runtime versions recorded"}</div>'
            f'<details><summary>host and packages</summary><table class="kv">{details}{pkgs}</table></details></div>')
    suites = ", ".join(e(s) for s in ov.suites) or "unknown suite"
    warn = ""
    if ov.warnings:
        warn = '<div class="warn">' + "<br>".join(e(w) for w in ov.warnings) + "</div>"
    return f"""
<header class="top">
  <h1>{e(ov.title)}</h1>
  <div class="muted">suite {suites} · {e(ov.date_range or "date unknown")} · {c['total']} cells from
    {len(ov.sources)} store{'s' if len(ov.sources) != 1 else ''}: {", ".join(e(s) for s in ov.sources) or "in memory"}</div>
  <div class="counts">{chips}</div>
  <div class="hosts">{''.join(hosts)}</div>{warn}
  <div class="muted small" id="eb-status" data-state="static">charts need JavaScript; tables work without it</div>
</header>"""


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)
    return s if len(s) <= 200 else s[:197] + "..."


# ---------------------------------------------------------------- decision table

_COLUMNS = (  # (label, kind, title)
    ("model", "text", ""), ("variant", "text", "variant label; precision and method below it"),
    ("runner", "text", ""), ("batch", "num", "batch size"), ("scenario", "text", ""),
    ("status", "text", ""),
    ("median latency (95% CI)", "num", "median per-call latency with its 95% CI over rounds in fresh workers; "
                                       "with one round, the CI of one worker's samples: one moment only"),
    ("p99", "num", "99th percentile latency; grey italics when fewer than 662 samples"),
    ("throughput", "num", "items per second over the timed window"),
    ("speedup vs FP32", "num", "FP32 / this latency, paired: both timed in one worker in alternating blocks "
                               "(same model, runner, batch size, scenario); 95% CI over rounds in fresh workers. "
                               "Green or red only when the CI excludes 1×"),
    ("quality", "num", "task metric on the dataset"), ("relative quality", "num", "quality / FP32 quality"),
    ("energy / inference", "num", "measured (RAPL/NVML) or modeled from a device profile"),
    ("size (compression)", "num", "artifact size on disk; FP32 size / this size below"),
    ("MACs", "num", "multiply-accumulates counted from the graph; FLOPs = 2 x MACs, BOPs = MACs x weight "
                    "bits x activation bits below"),
    ("peak RSS", "num", "peak resident memory of the worker"),
)


def _td(text: str, value: float | None = None, cls: str = "", title: str = "") -> str:
    attrs = f' data-v="{_num_attr(value)}"' if value is not None else ' data-v=""'
    if cls:
        attrs += f' class="{cls}"'
    if title:
        attrs += f' title="{e(title)}"'
    return f"<td{attrs}>{text}</td>"


def _decision_row(r: Row) -> str:
    cls = [f"st-{e(r.status)}"] + (["below-floor"] if r.below_floor else []) + (["unstable"] if r.unstable else [])
    data = (f' data-batch="{e(r.batch_size)}" data-model="{e(r.model)}" data-runner="{e(r.runner)}"'
            f' data-scenario="{e(r.scenario)}" data-status="{e(r.status)}"')
    variant = e(r.variant)
    if r.emulated:
        variant += " " + _tag("emulated", "emulated", "this precision runs as an emulation, not native kernels: "
                                                      "its latency, throughput and speedup are not native speed")
    method = " · ".join(x for x in (r.precision, r.cell.method) if x)
    if method:
        variant += f'<div class="ci">{e(method)}</div>'
    on = f'<div class="ci">on {e(r.record.measured_on)}</div>' if r.record.measured_on else ""  # a fleet node's
    cells = [_td(e(r.model)), _td(variant), _td(e(r.runner) + on), _td(e(r.batch_size or "—"), r.batch_size),
             _td(e(r.scenario))]
    status = e(r.status)
    if r.unstable:
        status += " " + _tag("unstable", "unstable", r.unstable_reason or "the CI target was not met before max_time_s")
    if r.drift_flagged:
        status += " " + _tag("drift", "drift", _drift_text(r))
    if not r.record.ok:
        cells.append(_td(status, title=r.record.reason or ""))
        reason = e(r.record.reason or "no reason recorded")
        cells.append(f'<td colspan="{len(_COLUMNS) - 6}" class="reason">{reason}</td>')
        return f"<tr class=\"{' '.join(cls)}\"{data}>{''.join(cells)}</tr>"
    cells.append(_td(status))
    med = e(fmt_ms(r.median_ms))
    if r.ci_ms:
        one = " · 1 round" if r.latency_one_moment else ""
        med += f'<div class="ci">{e(fmt_ms(r.ci_ms[0]).removesuffix(" ms"))} – {e(fmt_ms(r.ci_ms[1]))}{one}</div>'
    cells.append(_td(med, r.median_ms, title=_latency_ci_text(r)))
    weak = r.p99_ms is not None and not r.p99_reliable
    cells.append(_td(e(fmt_ms(r.p99_ms)), r.p99_ms, "weak" if weak else "",
                     "fewer than 662 per-call samples: not a reliable p99" if weak else ""))
    cells.append(_td(e(fmt_si(r.throughput_ips, "/s")), r.throughput_ips))
    if r.speedup:
        sp = r.speedup
        # colour only what the CI supports: a point value above 1 with a CI across 1 is no finding
        cls_sp = {"faster": "good", "slower": "bad"}.get(sp.direction, "neutral")
        notes = ([] if sp.clear else ["no clear difference"]) + (["1 round"] if sp.one_moment else [])
        text = e(fmt_speedup(sp)) + (f'<div class="ci">{e(" · ".join(notes))}</div>' if notes else "")
        cells.append(_td(text, sp.value, cls_sp, f"FP32 / variant latency, {sp.basis}"))
    else:
        cells.append(_td("—", None, "", r.speedup_note or ""))
    q = e(fmt_quality(r.quality))
    if r.quality is not None:
        q += f'<div class="ci">{e(r.quality_metric)}</div>'
    cells.append(_td(q, r.quality))
    rel = e(fmt_pct(r.relative_quality))
    if r.below_floor:
        rel += " " + _tag("floor", "below floor", "below the suite's min_relative quality")
    cells.append(_td(rel, r.relative_quality, "bad" if r.below_floor else ""))
    energy = e(fmt_si(r.energy_j, "J"))
    if r.energy_source:
        if r.energy_modeled:
            energy += " " + _tag("modeled", "modeled", f"computed, not measured: {r.energy_source}")
        energy += f'<div class="ci">{e(r.energy_source)}</div>'
    elif r.energy_reason:  # absent, with the reason on the page
        why = r.energy_reason
        energy = f'<span title="{e(why)}">—</span><div class="ci">{e(why[:90])}</div>'
    cells.append(_td(energy, r.energy_j))
    size = e(fmt_bytes(r.size_bytes))
    if r.compression is not None:
        size += f'<div class="ci">{e(f"{r.compression:.3g}")}× smaller</div>' if r.compression != 1 else ""
    cells.append(_td(size, r.size_bytes))
    work = e(fmt_si(r.macs))
    if r.flops is not None or r.bops is not None:
        work += f'<div class="ci">{e(fmt_si(r.flops))} FLOPs · {e(fmt_si(r.bops))} BOPs</div>'
    cells.append(_td(work, r.macs))
    cells.append(_td(e(fmt_bytes(r.peak_rss_bytes)), r.peak_rss_bytes))
    return f"<tr class=\"{' '.join(cls)}\"{data}>{''.join(cells)}</tr>"


def _drift_text(r: Row) -> str:
    d = r.record.drift
    change, threshold = (_f(d.max_abs_change), _f(d.threshold)) if d else (None, None)
    how = f" by {change:.0%}" if change is not None else ""
    if threshold is not None:
        how += f" (more than {threshold:.0%})"
    return (f"the machine's speed moved{how} while this cell was measured, by a sentinel workload timed before "
            "and after: its absolute latency is less certain; paired speedups are unaffected")


def _latency_ci_text(r: Row) -> str:
    if r.ci_ms is None:
        return ""
    if r.latency_one_moment:
        return "one round: this CI covers one moment only"
    text = "95% CI over rounds in fresh workers"
    if r.latency and r.latency.ci_method:
        text += f" ({r.latency.ci_method})"
    if r.within_round_ci_ms:
        lo, hi = r.within_round_ci_ms
        text += f"; within one worker: {fmt_ms(lo).removesuffix(' ms')} – {fmt_ms(hi)}"
    return text


def _select(name: str, label: str, values: Sequence[str]) -> str:
    opts = "".join(f'<option value="{e(v)}">{e(v)}</option>' for v in values)
    return (f'<label>{e(label)} <select data-filter="{e(name)}"><option value="">all</option>{opts}'
            f"</select></label>")


def _decision(rows: Sequence[Row]) -> str:
    batches = sorted({r.batch_size for r in rows if r.batch_size is not None})
    tabs = ['<button type="button" class="tab active" data-batch="">all batch sizes</button>']
    tabs += [f'<button type="button" class="tab" data-batch="{b}">batch {b}</button>' for b in batches]
    filters = "".join([
        _select("model", "model", sorted({r.model for r in rows})),
        _select("runner", "runner", sorted({r.runner for r in rows})),
        _select("scenario", "scenario", sorted({r.scenario for r in rows})),
        _select("status", "status", sorted({r.status for r in rows})),
    ])
    head = "".join(f'<th data-type="{k}" title="{e(t)}" tabindex="0">{e(label)}</th>' for label, k, t in _COLUMNS)
    body = "\n".join(_decision_row(r) for r in rows)
    return f"""
<section id="decision"><h2>Decision table</h2>
<p class="muted">One row per cell. Click a column to sort. Speedup vs FP32 is paired: FP32 and the variant
timed in one worker in alternating blocks, with its 95% CI over rounds in fresh workers; it is green or red
only when the CI excludes 1×, otherwise it says "no clear difference". "1 round": a CI from one round covers
one moment of the machine only. Emulated variants have no speedup. Marks:
{_tag("emulated", "emulated", "")} speed of an emulation, not of native kernels;
{_tag("modeled", "modeled", "")} computed from a device profile, not measured;
{_tag("floor", "below floor", "")} quality below the suite's floor;
{_tag("unstable", "unstable", "")} the latency's CI over rounds is wider than +-10% of its median (hover for why);
{_tag("drift", "drift", "")} the machine's speed moved while the cell was measured (its latency is less
certain, its paired speedup is not);
<span class="weak">grey italics</span>: a p99 from fewer than 662 samples.</p>
<div class="controls"><div class="tabs" role="tablist">{''.join(tabs)}</div>
{filters}<label>find <input type="search" data-filter="text" placeholder="text in any column"></label>
<span class="muted" id="decision-count"></span></div>
<div class="scroll"><table class="eb-table" id="decision-table"><thead><tr>{head}</tr></thead>
<tbody>{body}</tbody></table></div></section>"""


# ---------------------------------------------------------------- chart sections

def _charts(rows: Sequence[Row], figs: dict[str, Any]) -> tuple[str, str, str, str]:
    colours = figures.colour_map(rows)
    multi_host = len({r.host for r in rows}) > 1
    models = sorted({r.model for r in rows})
    pareto, latency, tput, work = [], [], [], []
    for mi, model in enumerate(models):
        mrows = [r for r in rows if r.model == model]
        for kind, build, out in (("pareto", figures.pareto_figure, pareto),
                                 ("latency", figures.latency_figure, latency),
                                 ("throughput", figures.throughput_figure, tput)):
            fig = build(mrows, colours, multi_host)
            if fig is None:
                why = {"pareto": "no ok cell with a quality figure",
                       "latency": "no ok cell with raw samples",
                       "throughput": "no ok cell with a throughput figure"}[kind]
                out.append(f'<h3>{e(model)}</h3><p class="muted">No chart: {why}.</p>')
                continue
            fid = f"fig-{kind}-{mi}"
            figs[fid] = fig
            out.append(f'<h3>{e(model)}</h3><div class="chart" id="{fid}"></div>')
            pfig = figures.pruning_figure(mrows, multi_host) if kind == "pareto" else None
            if pfig is not None:  # pruned variants: quality and latency against the pruning level, by method
                figs[f"fig-pruning-{mi}"] = pfig
                out.append(f'<div class="chart" id="fig-pruning-{mi}"></div>')
        src = _work_source(mrows)
        fig = figures.macs_figure(src) if src else None
        if fig is None:
            work.append(f'<div class="work-card"><h3>{e(model)}</h3>'
                        f'<p class="muted">No per-op breakdown recorded.</p></div>')
        else:
            fid = f"fig-work-{mi}"
            figs[fid] = fig
            ms = src.record.model_stats
            assert ms is not None  # _work_source picks a record with a per-op breakdown
            unc = ms.uncounted_ops
            zero = sorted(op for op, v in ms.by_op.items() if isinstance(v, dict) and not v.get("macs"))
            note = (f'<p class="muted small">Not counted: {e(", ".join(map(str, unc)))}.</p>' if unc
                    else '<p class="muted small">Every op with arithmetic was counted.</p>')
            if zero:
                note += f'<p class="muted small">No multiply-accumulates in: {e(", ".join(zero))}.</p>'
            work.append(f'<div class="work-card"><h3>{e(model)}</h3><p class="muted small">'
                        f'{e(fmt_si(src.macs))} MACs in total, from the {e(src.variant)} graph '
                        f'({e(src.runner)}).</p><div class="chart" id="{fid}"></div>{note}</div>')
    return "".join(pareto), "".join(latency), "".join(tput), "".join(work)


def _work_source(rows: Sequence[Row]) -> Row | None:
    have = [r for r in rows if r.record.model_stats and r.record.model_stats.by_op]
    if not have:
        return None
    fp32 = [r for r in have if r.variant == FP32] or [r for r in have if r.precision == FP32]
    return (fp32 or have)[0]


# ---------------------------------------------------------------- projections

def _projections(rows: Sequence[Row]) -> str:
    with_proj = [r for r in rows if r.record.ok and r.record.projections]
    if not with_proj:
        return '<section id="projections"><h2>Device projections</h2><p class="muted">No projections recorded.</p></section>'
    devices = sorted({d for r in with_proj for d in r.record.projections}, key=lambda d: (d != "local", d))
    head = "".join(f"<th>{e(d)}</th>" for d in devices)
    body = []
    for r in with_proj:
        tds = []
        for d in devices:
            p = r.record.projections.get(d)
            if p is None:
                tds.append('<td class="na">—</td>')
                continue
            status = p.status or "ok"
            if status != "ok":
                tds.append(f'<td class="proj-unsupported" title="{e(p.reason or "")}">'
                           f'{_tag("unsupported", status, p.reason or "")}'
                           f'<div class="ci">{e(p.reason or "")}</div></td>')
                continue
            fits = p.fits
            badge = (_tag("fits", "fits", "fits in the device's memory") if fits is True else
                     _tag("nofit", "does not fit", "exceeds the device's memory") if fits is False else "")
            bound = f'<div class="ci">{e(p.bound)}-bound</div>' if p.bound else ""
            band = p.latency_band_ms
            if band:
                bound += (f'<div class="ci" title="{e(p.band_source or "")}">likely {e(fmt_ms(_f(band[0])))} to '
                          f'{e(fmt_ms(_f(band[1])))}</div>')
            energy = _f(p.energy_mj)
            tds.append(f'<td class="{"proj-nofit" if fits is False else ""}">'
                       f'{e(fmt_ms(_f(p.latency_ms)))} · {e(fmt_si(energy * 1e-3 if energy is not None else None, "J"))}'
                       f" {badge}{bound}</td>")
        cal = "—"
        local_proj = r.record.projections.get("local")
        if r.calibration_error is not None and local_proj is not None:
            local = _f(local_proj.latency_ms)
            cls = "bad" if abs(r.calibration_error) > 0.5 else ""
            cal = (f'<span class="{cls}">{e(fmt_pct(r.calibration_error, signed=True))}</span>'
                   f'<div class="ci">projected {e(fmt_ms(local))} vs measured {e(fmt_ms(r.median_ms))}</div>')
        body.append(f'<tr data-batch="{e(r.batch_size)}"><td>{e(r.model)}</td><td>{e(r.variant)}</td><td>{e(r.runner)}</td>'
                    f'<td>{e(r.batch_size)}</td><td>{e(r.scenario)}</td>'
                    f'<td data-v="{_num_attr(r.calibration_error)}">{cal}</td>{"".join(tds)}</tr>')
    errs = [abs(r.calibration_error) for r in with_proj if r.calibration_error is not None]
    summary = (f"The local profile's projection is off from the measured median by {fmt_pct(statistics.median(errs))} "
               f"(median of |error| over {len(errs)} cells); read the other devices' figures with that error in mind."
               if errs else "No cell has both a local projection and a measured median, so the projection "
                            "model's error on this machine is unknown.")
    return f"""
<section id="projections"><h2>Device projections</h2>
<p class="muted">Projected, not measured: latency (ms) · energy per inference from the roofline and energy
model of each device profile; "likely" is the profile's prediction interval (10th to 90th percentile of
measured / projected on held-out checks: its source is on hover). {e(summary)}</p>
<div class="scroll"><table class="eb-table compact"><thead><tr><th>model</th><th>variant</th><th>runner</th>
<th>batch</th><th>scenario</th><th title="local projection / measured median - 1">local calibration error</th>{head}</tr></thead>
<tbody>{''.join(body)}</tbody></table></div></section>"""


def _f(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


# ---------------------------------------------------------------- lists

def _list_section(sid: str, title: str, rows: Sequence[Row], empty: str, extra: str = "") -> str:
    if not rows:
        return f'<h3 id="{sid}">{e(title)} (0)</h3><p class="muted">{e(empty)}</p>'
    items = "".join(f"<tr><td>{e(r.cell_id)}</td><td>{e(r.host)}</td><td>{e(_why(r, sid))}</td></tr>"
                    for r in rows)
    return (f'<h3 id="{sid}">{e(title)} ({len(rows)})</h3>{extra}<div class="scroll short"><table class="eb-table compact">'
            f"<thead><tr><th>cell</th><th>host</th><th>reason</th></tr></thead><tbody>{items}</tbody></table></div>")


def _why(r: Row, kind: str) -> str:
    if kind in ("failed", "unsupported"):
        return r.record.reason or "no reason recorded"
    if kind == "below-floor":
        return f"relative quality {fmt_pct(r.relative_quality)} ({r.quality_metric} {fmt_quality(r.quality)})"
    if kind == "unstable":
        if r.unstable_reason:
            return r.unstable_reason
        rel = r.latency.rel_ci_halfwidth if r.latency else None
        return f"median CI half-width {fmt_pct(rel)} of the median" if rel is not None else "CI target not met"
    if kind == "drift":
        return _drift_text(r)
    return "no reason recorded"


def _failures(rows: Sequence[Row]) -> str:
    return ('<section id="failures"><h2>Failures, unsupported combinations and flags</h2>'
            + _list_section("failed", "Failed", [r for r in rows if r.status == "failed"], "Nothing failed.")
            + _list_section("unsupported", "Unsupported", [r for r in rows if r.status == "unsupported"],
                            "Every combination was supported.")
            + _list_section("unstable", "Unstable", [r for r in rows if r.unstable],
                            "Every ok cell met its confidence-interval target.")
            + _list_section("drift", "Machine speed drifted", [r for r in rows if r.drift_flagged],
                            "The machine's speed held steady while every cell was measured.")
            + _list_section("below-floor", "Below the quality floor", [r for r in rows if r.below_floor],
                            "No variant fell below the quality floor.")
            + "</section>")


def _regression(verdict_rows: list[dict] | None, note: str | None) -> str:
    if verdict_rows is None and not note:
        return ""
    parts = ['<section id="regression"><h2>Regression check against the baseline</h2>']
    if note:
        parts.append(f'<p class="warn">{e(note)}</p>')
    if verdict_rows:
        counts: dict[str, int] = {}
        for v in verdict_rows:
            counts[str(v.get("verdict"))] = counts.get(str(v.get("verdict")), 0) + 1
        parts.append('<p class="counts">' + "".join(
            f'<span class="count verdict-{e(k)}"><b>{n}</b> {e(k)}</span>' for k, n in sorted(counts.items())) + "</p>")
        keys = ("cell_id", "metric", "base", "new", "ratio", "p_value", "verdict")
        head = "".join(f'<th data-type="{"num" if k in ("base", "new", "ratio", "p_value") else "text"}" tabindex="0">'
                       f"{e(k)}</th>" for k in keys)
        body = []
        for v in verdict_rows:
            tds = []
            for k in keys:
                val = v.get(k)
                num = _f(val)
                txt = f"{num:.4g}" if num is not None else ("—" if val is None else str(val))
                cls = f' class="verdict-{e(val)}"' if k == "verdict" else ""
                tds.append(f'<td data-v="{_num_attr(num)}"{cls}>{e(txt)}</td>')
            body.append(f"<tr>{''.join(tds)}</tr>")
        parts.append(f'<div class="scroll"><table class="eb-table compact sortable"><thead><tr>{head}</tr></thead>'
                     f"<tbody>{''.join(body)}</tbody></table></div>")
    elif verdict_rows is not None:
        parts.append('<p class="muted">The verdict has no rows: no cell in common with the baseline.</p>')
    parts.append("</section>")
    return "".join(parts)


# ---------------------------------------------------------------- page

def pack_figures(figs: dict[str, Any]) -> dict[str, Any]:
    """Hover texts stored once: the same record's text appears in several charts and panels.

    Traces carry `_hv` (an index, or a list of indices, into `texts`) instead of `hovertext`;
    report.js puts the strings back before plotting. This keeps 1,000 records well under 10 MB.
    """
    texts: list[str] = []
    index: dict[str, int] = {}

    def ref(t: str) -> int:
        if t not in index:
            index[t] = len(texts)
            texts.append(t)
        return index[t]

    packed = {}
    for fid, fig in figs.items():
        data = []
        for tr in fig["data"]:
            hv = tr.get("hovertext")
            if isinstance(hv, str):
                tr = {k: v for k, v in tr.items() if k != "hovertext"} | {"_hv": ref(hv)}
            elif isinstance(hv, list) and all(isinstance(t, str) for t in hv):
                tr = {k: v for k, v in tr.items() if k != "hovertext"} | {"_hv": [ref(t) for t in hv]}
            data.append(tr)
        packed[fid] = {"data": data, "layout": fig["layout"]}
    return {"figures": packed, "texts": texts}


def unpack_figures(packed: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `pack_figures` (what report.js does), for tests and tools."""
    texts = packed["texts"]
    out = {}
    for fid, fig in packed["figures"].items():
        data = []
        for tr in fig["data"]:
            if "_hv" in tr:
                hv = tr["_hv"]
                tr = {k: v for k, v in tr.items() if k != "_hv"}
                tr["hovertext"] = [texts[i] for i in hv] if isinstance(hv, list) else texts[hv]
            data.append(tr)
        out[fid] = {"data": data, "layout": fig["layout"]}
    return out


def render_html(rows: Sequence[Row], overview: Overview, *, verdict_rows: list[dict] | None = None,
                verdict_note: str | None = None, layer_profiles: list[dict] | None = None,
                precision_views: list[dict] | None = None) -> str:
    figs: dict[str, Any] = {}
    pareto, latency, tput, work = _charts(rows, figs)
    nav = [("decision", "Decision table"), ("pareto", "Pareto"), ("latency", "Latency"),
           ("throughput", "Throughput"), ("projections", "Devices"), ("work", "Work"),
           ("failures", "Failures")]
    if layer_profiles:
        nav.insert(5, ("layers", "Layers"))
    if precision_views:
        nav.insert(5, ("precision", "Precision"))
    if load.has_load(rows):
        nav.insert(4, ("load", "Under load"))
    if generation.has_generation(rows):
        nav.insert(1, ("generation", "Generation"))
    if fleet.has_fleet(rows):
        nav.insert(nav.index(("projections", "Devices")), ("fleet", "Fleet"))
    nav.insert(1, ("runtimes", "Fastest"))  # runtime x precision per model; compare:'s paired comparisons
    if verdict_rows is not None or verdict_note:
        nav.append(("regression", "Regression"))
    nav_html = "".join(f'<a href="#{k}">{e(v)}</a>' for k, v in nav)
    body = f"""{_header(overview)}
<nav class="nav">{nav_html}</nav>
<main>
{_decision(rows)}
{runtimes.section(rows)}
{generation.section(rows, figs)}
<section id="pareto"><h2>Quality against cost</h2>
<p class="muted">Each point is a cell; the dashed line is the Pareto front (no other variant is both faster
and better). Diamonds are emulated variants, open markers on the energy panel are modeled energy, a red ring
marks quality below the floor. Pick the runner, batch size and scenario in the menu; hover for the full record.</p>
{pareto}</section>
<section id="latency"><h2>Latency distributions</h2>
<p class="muted">Per-call latency from the raw samples (on the page: at most {figures.MAX_POINTS} quantiles per cell).
Boxes show the quartiles, whiskers 1.5 IQR, points the outliers.</p>{latency}</section>
<section id="throughput"><h2>Throughput against batch size</h2>
<p class="muted">Offline scenario where measured. Line style tells the runner apart.</p>{tput}</section>
{load.section(rows, figs)}
{fleet.section(rows)}
{_projections(rows)}
{layers.section(layer_profiles or [])}
{layers.precision_section(precision_views or [], figs)}
<section id="work"><h2>Work breakdown</h2><p class="muted">Multiply-accumulates by op type, from the FLOPs
counter.</p><div class="work-grid">{work}</div></section>
{_failures(rows)}
{_regression(verdict_rows, verdict_note)}
</main>
<footer class="muted small">Rendered by effbench. This file is self-contained and makes no network request.</footer>"""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{e(overview.title)}</title>
<script>{_asset("errors.js")}</script>
<style>{_asset("report.css")}</style>
</head><body>
{body}
<script type="application/json" id="eb-figures">{script_json(pack_figures(figs))}</script>
<script>{_plotly_js()}</script>
<script>{_asset("report.js")}</script>
</body></html>
"""
