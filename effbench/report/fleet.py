"""The dashboard's fleet section (`effbench run --ray`): the cells grouped by the device and host that
measured them, and each fleet measurement beside its own device profile's projection, with the error.
"""
from __future__ import annotations

import html
import statistics
from collections.abc import Sequence
from typing import Any

from effbench.report.table import Row, fmt_ms, fmt_pct, host_name

LOCAL = "local"


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def has_fleet(rows: Sequence[Row]) -> bool:
    return any(r.record.measured_on for r in rows)


def device_of(r: Row) -> str:
    return r.record.measured_on or LOCAL


def node_of(r: Row) -> dict[str, Any]:
    return r.record.provenance.node or {}


def own_projection(r: Row):
    """The projection onto the profile of the device that measured the cell, when it has the error."""
    p = r.record.projections.get(device_of(r))
    return p if p is not None and p.error_pct is not None else None


def groups(rows: Sequence[Row]) -> dict[tuple[str, str], list[Row]]:
    """{(device, host): rows}, the local device first, then by device and host."""
    out: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        node = node_of(r).get("ray_node_id")
        host = host_name(r.record) + (f" · node {str(node)[:8]}" if node else "")
        out.setdefault((device_of(r), host), []).append(r)
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0] != LOCAL, kv[0])))


def _speed(rows: list[Row]) -> str:
    g = [r.record.provenance.speed_index.get("gflops") for r in rows
         if isinstance(r.record.provenance.speed_index, dict)]
    g = [x for x in g if isinstance(x, (int, float))]
    return f"{statistics.median(g):.3g} GFLOP/s" if g else "—"


def _errors(rows: list[Row]) -> list[float]:
    out = []
    for r in rows:
        p = own_projection(r) if r.record.measured_on else None
        if p is not None:
            out.append(p.error_pct / 100.0)
        elif not r.record.measured_on and r.calibration_error is not None:
            out.append(r.calibration_error)
    return out


def section(rows: Sequence[Row]) -> str:
    if not has_fleet(rows):
        return ""
    summary = []
    for (device, host), members in groups(rows).items():
        ok = sum(r.record.ok for r in members)
        failed = [r for r in members if r.status == "failed"]
        retried = sum(1 for r in members if node_of(r).get("retry_of"))
        errs = _errors(members)
        err = f"{fmt_pct(statistics.median(abs(x) for x in errs))} (median |error|, {len(errs)} cells)" if errs else "—"
        summary.append(f"<tr><td>{_e(device)}</td><td>{_e(host)}</td><td>{ok} of {len(members)}</td>"
                       f"<td>{_e(_speed(members))}</td><td>{_e(err)}</td>"
                       f"<td>{retried or '—'}</td><td title=\"{_e('; '.join(r.record.reason or '' for r in failed))}\">"
                       f"{len(failed) or '—'}</td></tr>")
    detail = []
    for r in sorted((r for r in rows if r.record.measured_on), key=lambda r: (device_of(r), host_name(r.record),
                                                                             r.model, r.variant, r.batch_size or 0)):
        p = own_projection(r)
        lat = r.latency
        med = fmt_ms(lat.median) if lat else f"{r.status}"
        ci = f'<div class="ci">{_e(fmt_ms(lat.ci[0]))} – {_e(fmt_ms(lat.ci[1]))}</div>' if lat and lat.ci else ""
        proj = err = "—"
        if p is not None:
            band = p.latency_band_ms
            proj = _e(fmt_ms(p.latency_ms)) + (f'<div class="ci">likely {_e(fmt_ms(band[0]))} to {_e(fmt_ms(band[1]))}'
                                                f"</div>" if band else "")
            cls = "bad" if abs(p.error_pct) > 50 else ""
            err = f'<span class="{cls}">{_e(fmt_pct(p.error_pct / 100.0, signed=True))}</span>'
        elif r.record.ok:
            q = r.record.projections.get(device_of(r))
            proj = _e(f"{q.status}: {q.reason}" if q is not None and q.reason else "no projection")
        retry = node_of(r).get("retry_of")
        status = _e(r.status) + (f' <span class="tag" title="{_e("; ".join(retry))}">retried</span>' if retry else "")
        if not r.record.ok:
            status += f'<div class="ci">{_e((r.record.reason or "")[:160])}</div>'
        detail.append(f"<tr><td>{_e(device_of(r))}</td><td>{_e(host_name(r.record))}</td><td>{_e(r.model)}</td>"
                      f"<td>{_e(r.variant)}</td><td>{_e(r.runner)}</td><td>{_e(r.batch_size)}</td>"
                      f"<td>{_e(r.scenario)}</td><td>{status}</td><td>{_e(med)}{ci}</td><td>{proj}</td>"
                      f"<td>{err}</td></tr>")
    return f"""
<section id="fleet"><h2>Measured on the fleet</h2>
<p class="muted">Cells measured on Ray nodes of the suite's devices (<code>effbench run --ray</code>), grouped by
the device and host that measured them; each node measured in its own fresh workers with its own speed index and
sentinel. The error is the device profile's projection against that node's measured median
(projected / measured - 1); for <code>local</code> it is the local profile's calibration error.</p>
<div class="scroll"><table class="eb-table compact"><thead><tr><th>device</th><th>host</th><th>ok</th>
<th>speed index</th><th>projection error</th><th>retried</th><th>failed</th></tr></thead>
<tbody>{''.join(summary)}</tbody></table></div>
<div class="scroll"><table class="eb-table compact"><thead><tr><th>device</th><th>host</th><th>model</th>
<th>variant</th><th>runner</th><th>batch</th><th>scenario</th><th>status</th><th>measured</th>
<th>projected for the device</th><th>error</th></tr></thead>
<tbody>{''.join(detail)}</tbody></table></div></section>"""


def markdown(rows: Sequence[Row]) -> str:
    """The same grouping for summary.md: one line per device and host."""
    if not has_fleet(rows):
        return ""
    lines = ["## Measured on the fleet", "", "| device | host | ok | projection error |", "| --- | --- | --- | --- |"]
    for (device, host), members in groups(rows).items():
        errs = _errors(members)
        err = f"{fmt_pct(statistics.median(abs(x) for x in errs))} median abs" if errs else "-"
        lines.append(f"| {device} | {host} | {sum(r.record.ok for r in members)} of {len(members)} | {err} |")
    return "\n".join(lines) + "\n"
