"""The report's "Where time goes" section: the per-layer profiles `effbench layers` wrote beside the
store (layers/<cell>/layers.json), top layers first, with the time the MAC count does not explain."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

TOP = 12


def load_profiles(out_dir: Path) -> list[dict[str, Any]]:
    """Every layers.json under out_dir/layers/ that reads as one (a broken file is left out, never fatal)."""
    out = []
    for p in sorted((Path(out_dir) / "layers").glob("*/layers.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("rows"), list) and isinstance(data.get("summary"), dict):
            out.append(data)
    return out


def _num(x: Any, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and not isinstance(x, bool) else "—"


def section(profiles: list[dict[str, Any]]) -> str:
    if not profiles:
        return ""
    e = lambda x: html.escape(str(x), quote=True)  # noqa: E731
    parts = []
    for prof in profiles:
        s = prof["summary"]
        rows = []
        for r in prof["rows"][:TOP]:
            if not isinstance(r, dict):
                continue
            added = " (added by the runtime)" if r.get("added_by_runtime") else ""
            rows.append(f"<tr><td>{e(r.get('layer'))}{e(added)}</td><td>{e(r.get('op_type') or '')}</td>"
                        f"<td>{e(r.get('kernel'))}</td><td>{e(r.get('precision') or '')}</td>"
                        f"<td>{_num(r.get('time_us'), '.1f')}</td>"
                        f"<td>{_num(r.get('share'), '.1%')}</td><td>{_num(r.get('macs'), ',')}</td>"
                        f"<td>{_num(r.get('gflops'), '.1f')}</td></tr>")
        by = (f"{prof['profiler']} ({prof.get('runtime', '')} {prof.get('runtime_version', '')}): "
              if prof.get("profiler") else "")
        if any(isinstance(r, dict) and r.get("macs") for r in prof["rows"]):
            macs = (f"{_num(s.get('share_without_macs'), '.0%')} in layers without MACs and "
                    f"{_num(s.get('share_added_by_runtime'), '.0%')} in kernels the runtime added: time the MAC count "
                    "does not explain.")
        else:
            macs = "no MACs: this profile's operators are not matched to the graph's layers."
        notes = " ".join(str(n) + "." for n in prof.get("notes") or [] if isinstance(n, str))
        parts.append(
            f"<h3>{e(prof.get('cell_id'))}</h3><p class=\"muted\">{e(by)}{_num(s.get('total_us'), '.1f')} us of kernel "
            f"time per call ({e(prof.get('timing', ''))}); {e(macs)} {e(notes)}</p>"
            "<div class=\"scroll short\"><table class=\"eb-table compact\"><thead><tr><th>layer</th>"
            "<th>op</th><th>kernel</th><th>precision</th><th>us</th><th>share</th><th>MACs</th><th>GFLOP/s</th></tr>"
            "</thead><tbody>"
            + "".join(rows) + "</tbody></table></div>")
    return ('<section id="layers"><h2>Where time goes</h2><p class="muted">Per-layer profiles written by '
            "<code>effbench layers</code>: the cell's runtime's own profiler (named with each table), its per-kernel "
            "durations folded onto the graph's layers where they can be matched, each with its MACs and the rate it "
            "achieved.</p>" + "".join(parts) + "</section>")


def load_precision_views(out_dir: Path) -> list[dict[str, Any]]:
    """Per model, the sensitivity table and the advisor's plan that `effbench sensitivity` / `advise` wrote
    beside the store (sensitivity/<model>/sensitivity.json, advise/<model>/plan.json)."""
    out: dict[str, dict[str, Any]] = {}
    for kind, pattern in (("sensitivity", "sensitivity/*/sensitivity.json"), ("plan", "advise/*/plan.json")):
        for p in sorted(Path(out_dir).glob(pattern)):
            try:
                data = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                out.setdefault(p.parent.name, {"model": p.parent.name})[kind] = data
    return list(out.values())


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def sensitivity_figure(sens: dict[str, Any]) -> dict[str, Any] | None:
    """Each layer: its share of FP32 time (x) against the quality it loses alone in int8 (y). Top left is
    where FP32 is cheap to keep and worth it."""
    from effbench.report.figures import esc
    pts = [r for r in (sens.get("rows") or []) if isinstance(r, dict) and _is_num(r.get("time_share"))
           and _is_num((r.get("only_this") or {}).get("metric_drop"))]
    if not pts:
        return None
    return {"data": [{"type": "scatter", "mode": "markers", "name": "layers",
                      "x": [r["time_share"] * 100 for r in pts], "y": [r["only_this"]["metric_drop"] for r in pts],
                      "text": [esc(f"{r.get('layer')} ({r.get('op_type')}), SQNR "
                                   f"{_num((r.get('only_this') or {}).get('sqnr_db'), '.1f')} dB") for r in pts],
                      "hoverinfo": "text+x+y", "marker": {"size": 9}}],
            "layout": {"height": 340, "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
                       "xaxis": {"title": {"text": "share of FP32 time (%)"}},
                       "yaxis": {"title": {"text": esc(f"{sens.get('metric', 'metric')} lost, this layer alone int8")}},
                       "title": {"text": "int8 sensitivity against time share", "font": {"size": 13}}}}


def candidates_figure(plan: dict[str, Any]) -> dict[str, Any] | None:
    """The advisor's candidates: paired speedup vs FP32 (x, with its CI) against quality kept (y); the
    uniform variants and the plan marked, the floor as a line, the Pareto front joined."""
    from effbench.report.figures import esc
    cands = {n: c for n, c in (plan.get("candidates") or {}).items() if isinstance(c, dict)
             and _is_num((c.get("speedup_vs_fp32") or {}).get("value")) and _is_num(c.get("relative_quality"))}
    if not cands:
        return None
    data = []
    for label, pick, symbol in (("mixed (k most fragile layers kept FP32)", lambda c: not c.get("uniform"), "circle"),
                                ("uniform", lambda c: c.get("uniform"), "square")):
        names = [n for n, c in cands.items() if pick(c)]
        if not names:
            continue
        sp = [cands[n]["speedup_vs_fp32"] for n in names]
        data.append({"type": "scatter", "mode": "markers", "name": esc(label), "x": [s["value"] for s in sp],
                     "y": [cands[n]["relative_quality"] for n in names], "text": [esc(n) for n in names],
                     "hoverinfo": "text+x+y", "marker": {"size": 10, "symbol": symbol},
                     "error_x": {"type": "data", "symmetric": False,
                                 "array": [(s.get("ci") or [0, s["value"]])[1] - s["value"] for s in sp],
                                 "arrayminus": [s["value"] - (s.get("ci") or [s["value"], 0])[0] for s in sp]}})
    front = sorted((cands[n]["speedup_vs_fp32"]["value"], cands[n]["relative_quality"]) for n in plan.get("pareto") or []
                   if n in cands)
    if len(front) > 1:
        data.append({"type": "scatter", "mode": "lines", "name": "Pareto front", "x": [p[0] for p in front],
                     "y": [p[1] for p in front], "line": {"dash": "dash", "width": 1}, "hoverinfo": "skip"})
    chosen = plan.get("chosen")
    if chosen in cands:
        c = cands[chosen]
        data.append({"type": "scatter", "mode": "markers", "name": esc(f"plan: {chosen}"),
                     "x": [c["speedup_vs_fp32"]["value"]], "y": [c["relative_quality"]], "hoverinfo": "name",
                     "marker": {"size": 18, "symbol": "circle-open", "line": {"width": 2}}})
    layout: dict[str, Any] = {"height": 340, "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
                              "xaxis": {"title": {"text": "speedup vs FP32 (paired, 95% CI)"}},
                              "yaxis": {"title": {"text": "quality kept vs FP32"}},
                              "title": {"text": "advisor candidates, measured", "font": {"size": 13}}}
    if _is_num(plan.get("floor")):
        layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": plan["floor"], "y1": plan["floor"],
                             "line": {"dash": "dot", "width": 1, "color": "#b00"}}]
    return {"data": data, "layout": layout}


def precision_section(views: list[dict[str, Any]], figs: dict[str, Any] | None = None) -> str:
    """"Where to spend precision": each layer's int8 sensitivity against its share of FP32 time, and the
    advisor's measured candidates (quality against paired speedup) with the uniform variants among them;
    as charts (registered in `figs`) and tables."""
    if not views:
        return ""
    e = lambda x: html.escape(str(x), quote=True)  # noqa: E731
    parts = []
    for i, v in enumerate(views):
        sens, plan = v.get("sensitivity") or {}, v.get("plan") or {}
        parts.append(f"<h3>{e(v['model'])}</h3>")
        if figs is not None:
            for kind, fig in (("sens", sensitivity_figure(sens)), ("cands", candidates_figure(plan))):
                if fig is not None:
                    fid = f"fig-precision-{kind}-{i}"
                    figs[fid] = fig
                    parts.append(f'<div class="chart" id="{fid}"></div>')
        rows = []
        for r in (sens.get("rows") or [])[:TOP]:
            if not isinstance(r, dict):
                continue
            a, b = r.get("only_this") or {}, r.get("all_but_this") or {}
            rows.append(f"<tr><td>{e(r.get('layer'))}</td><td>{e(r.get('op_type'))}</td>"
                        f"<td>{_num(r.get('time_share'), '.1%')}</td><td>{_num(a.get('metric_drop'), '+.4f')}</td>"
                        f"<td>{_num(a.get('sqnr_db'), '.1f')}</td><td>{_num(b.get('metric_drop'), '+.4f')}</td></tr>")
        if rows:
            parts.append(f"<p class=\"muted\">int8 sensitivity, most fragile first ({e(sens.get('method', ''))} int8, "
                         f"{e(sens.get('samples', ''))} samples, metric {e(sens.get('metric', ''))}): a fragile layer "
                         "with a small share of time is where FP32 is cheap to keep.</p><div class=\"scroll short\">"
                         "<table class=\"eb-table compact\"><thead><tr><th>layer</th><th>op</th><th>FP32 time</th>"
                         "<th>drop, alone int8</th><th>SQNR dB</th><th>drop, all but it int8</th></tr></thead><tbody>"
                         + "".join(rows) + "</tbody></table></div>")
        cands = plan.get("candidates") or {}
        if isinstance(cands, dict) and cands:
            crow = []
            for name, c in cands.items():
                sp = c.get("speedup_vs_fp32") or {}
                ci = sp.get("ci") or [None, None]
                mark = " (plan)" if name == plan.get("chosen") else ""
                crow.append(f"<tr><td>{e(name)}{e(mark)}</td><td>{_num(c.get('relative_quality'), '.4f')}</td>"
                            f"<td>{_num(sp.get('value'), '.2f')}x [{_num(ci[0], '.2f')}, {_num(ci[1], '.2f')}]</td>"
                            f"<td>{'yes' if name in (plan.get('pareto') or []) else ''}</td>"
                            f"<td>{'meets' if c.get('meets_floor') else 'below'}</td></tr>")
            parts.append(f"<p class=\"muted\">Advisor (floor {_num(plan.get('floor'), '.2%')}): every candidate measured, "
                         f"{e(plan.get('timing', ''))}. {e(plan.get('note', ''))}</p><div class=\"scroll short\">"
                         "<table class=\"eb-table compact\"><thead><tr><th>candidate</th><th>quality vs FP32</th>"
                         "<th>speedup (paired)</th><th>Pareto</th><th>floor</th></tr></thead><tbody>"
                         + "".join(crow) + "</tbody></table></div>")
    return ('<section id="precision"><h2>Where to spend precision</h2>' + "".join(parts) + "</section>")
