"""`summary.md`: the decision table in Markdown, for a CI job summary or a pull request comment."""
from __future__ import annotations

import html
import re
from collections.abc import Sequence

from effbench.report import fleet, generation, runtimes
from effbench.report.load import load_notes
from effbench.report.overview import Overview
from effbench.report.table import Row, fmt_ms, fmt_pct, fmt_quality, fmt_speedup
from effbench.units import fmt_bytes, fmt_si

COLUMNS = ("model", "variant", "runner", "batch", "scenario", "median latency (95% CI)", "p99",
           "throughput", "speedup vs FP32", "size (compression)", "MACs", "peak RSS",
           "energy / inference", "quality (relative)", "notes")


def md_cell(text: object) -> str:
    """Text safe inside a Markdown table cell: HTML escaped (GitHub renders raw HTML), pipes escaped."""
    out = html.escape(str(text), quote=False).replace("\n", " ")
    # Markdown's own syntax too: no link, image or code span can come out of a field
    return re.sub(r"([\\`\[\]|])", r"\\\1", out)


def row_cells(row: Row) -> list[str]:
    """One decision-table row as display strings (also used by the HTML table's plain-text export)."""
    runner = row.runner + (f" @{row.record.measured_on}" if row.record.measured_on else "")  # a fleet node's
    base = [row.model, row.variant, runner, str(row.batch_size or "—"), row.scenario]
    if not row.record.ok:
        note = f"{row.status.upper()}: {row.record.reason or 'no reason recorded'}"
        return base + ["—"] * 9 + [note]
    med = fmt_ms(row.median_ms)
    if row.ci_ms:
        med += f" [{fmt_ms(row.ci_ms[0]).removesuffix(' ms')}, {fmt_ms(row.ci_ms[1])}]"
    p99 = fmt_ms(row.p99_ms) + ("" if row.p99_ms is None or row.p99_reliable else " (n too small)")
    tput = fmt_si(row.throughput_ips, "/s")
    sp = fmt_speedup(row.speedup)
    if row.speedup and not row.speedup.clear:
        sp += " (no clear difference)"
    size = fmt_bytes(row.size_bytes)
    if row.compression is not None:
        size += f" ({row.compression:.2g}×)"
    energy = fmt_si(row.energy_j, "J")
    if row.energy_source:
        energy += f" ({row.energy_source})"
    q = fmt_quality(row.quality)
    if row.relative_quality is not None:
        q += f" ({fmt_pct(row.relative_quality)})"
    notes = list(row.flags) + load_notes(row)
    if row.speedup_note and not row.emulated:  # "emulated" is already a flag
        notes.append(row.speedup_note)
    if row.record.reason:
        notes.append(row.record.reason)
    return base + [med, p99, tput, sp, size, fmt_si(row.macs), fmt_bytes(row.peak_rss_bytes),
                   energy, q, "; ".join(notes)]


def render_markdown(rows: Sequence[Row], overview: Overview, *, verdict_rows: list[dict] | None = None,
                    verdict_note: str | None = None) -> str:
    out = [f"# {md_cell(overview.title)}", ""]
    c = overview.counts
    out.append(f"**{c['total']} cells:** {c['ok']} ok, {c['unsupported']} unsupported, {c['failed']} failed, "
               f"{c['unstable']} unstable, {c['drift']} with drift, {c['below_floor']} below the quality floor.")
    out.append("")
    out.append("Hosts: " + ", ".join(md_cell(h) for h in overview.hosts) + ".")
    if overview.date_range:
        out.append(f"Measured: {md_cell(overview.date_range)}.")
    out.append("")
    out.append("Speedup = FP32 latency / variant latency on the same model, runner, batch size and scenario, "
               "paired: both timed in one worker in alternating blocks, so both saw the same machine; its 95% "
               "CI is over rounds in fresh workers, and \"(no clear difference)\" means the CI contains 1×. "
               "Latency CIs are over rounds too. `1 round`: there was one round, so a CI covers one moment "
               "of the machine only. `drift`: the machine's speed moved more than the threshold while the "
               "cell was measured, so its absolute latency is less certain (paired speedups are "
               "unaffected). Energy marked `modeled:` is computed from a device profile, not measured; "
               "`emulated` variants run an emulation of their precision, so they have no speedup: their "
               "speed is not the speed of native kernels.")
    for batch in sorted({r.batch_size for r in rows}, key=lambda b: (b is None, b or 0)):
        sub = [r for r in rows if r.batch_size == batch]
        out += ["", f"## Batch size {batch if batch is not None else 'unknown'}", ""]
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + "|".join("---" for _ in COLUMNS) + "|")
        for r in sub:
            out.append("| " + " | ".join(md_cell(x) for x in row_cells(r)) + " |")
    out += ["", runtimes.markdown(rows, md_cell)]  # the fastest runtime x precision; compare:'s comparisons
    if generation.has_generation(rows):
        out += ["", generation.markdown(rows, md_cell)]
    if fleet.has_fleet(rows):
        out += ["", fleet.markdown(rows)]
    if verdict_rows is not None or verdict_note:
        out += ["", "## Regression check against the baseline", ""]
        if verdict_note:
            out.append(md_cell(verdict_note))
        if verdict_rows:
            keys = ("cell_id", "metric", "base", "new", "ratio", "p_value", "verdict")
            out.append("| " + " | ".join(keys) + " |")
            out.append("|" + "|".join("---" for _ in keys) + "|")
            for v in verdict_rows:
                out.append("| " + " | ".join(md_cell(_fmt_any(v.get(k))) for k in keys) + " |")
    out.append("")
    return "\n".join(out)


def _fmt_any(x: object) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)
