"""The table `effbench run` prints when it finishes, and the line under it that names the clear wins.

What a first reader needs from it: which variant is faster than FP32 (the paired speedup and its CI), at
what quality (held-out samples, relative to FP32), and which absolute latencies moved between rounds.
"""
from __future__ import annotations

import os
import sys

# The marks under the table. `unstable` is about the absolute latency only: the paired speedup is measured
# within each round (FP32 and the variant alternate in one worker) and carries its own CI.
# Only the marks the table shows are explained under it.
LEGEND = {
    "~": "~ the speedup's CI contains 1: no clear difference from FP32\n",
    "!": "! unstable: the median moved between rounds (its 95% CI over rounds is wider than +-10% of it): the\n"
         "  machine's speed changed during the run. Trust the paired speedup (measured within each round), not\n"
         "  this absolute latency; for one, rerun on a quieter machine or with more rounds (--rounds).\n",
    "*": "* p99 from fewer than 662 per-call samples (or timed blocks): not reliable\n",
    "fewer threads": "fewer threads (N): another process kept cores busy past measure.contention.wait_s, so a round"
                     " ran with\n  the N cores it left free (the FP32 twin too: the paired speedup compares like"
                     " with like)\n",
}


def legend(marks: set[str]) -> str:
    """The legend lines for the marks in `marks`, in a fixed order."""
    return "".join(text for mark, text in LEGEND.items() if mark in marks)


def summary_table(results) -> str:
    """cell, status, paired speedup vs FP32 with its CI, quality vs FP32, median ms with its CI over rounds,
    p99, throughput, peak RSS; then the legend and the clear wins."""
    from rich.console import Console
    from rich.table import Table

    from effbench.report.table import build_rows, fmt_speedup
    t = Table(title="effbench results", show_lines=False)
    for col, just in (("cell", "left"), ("status", "left"), ("vs FP32 (paired, 95% CI)", "right"),
                      ("quality vs FP32", "right"), ("median ms [95% CI]", "right"), ("p99 ms", "right"),
                      ("items/s", "right"), ("peak RSS MiB", "right")):
        t.add_column(col, justify=just, no_wrap=col == "cell", max_width=28 if col == "status" else None)
    rows = {row.cell_id: row for row in build_rows(results)}
    marks: set[str] = set()
    for r in results:
        lat = r.latency_ms
        row = rows[r.cell_id]
        if r.ok and lat:
            ci = f" [{lat.ci[0]:.4g}, {lat.ci[1]:.4g}]" if lat.ci else ""
            med = f"{lat.median:.4g}{ci}" + (" !" if row.unstable else "")
            p99 = "-" if lat.p99 is None else f"{lat.p99:.4g}" + ("" if lat.p99_reliable else "*")
            threads = _threads_flag(r)
            flags = [f for f in ("emulated", "drift", "1 round") if f in row.flags] + threads
            status = " ".join(["ok", *flags, *(["below floor"] if row.below_floor else [])])
            tput = f"{r.throughput_ips:,.0f}" if r.throughput_ips else "-"
            peak = r.memory.peak_rss_bytes if r.memory else None
            rss = f"{peak / 2**20:.0f}" if peak else "-"
            sp = row.speedup
            vs = "-" if sp is None else fmt_speedup(sp) + ("" if sp.clear else " ~")
            quality = _quality(row)
            marks |= {m for m, shown in (("!", row.unstable), ("*", lat.p99 is not None and not lat.p99_reliable),
                                         ("~", sp is not None and not sp.clear),
                                         ("fewer threads", bool(threads))) if shown}
        else:
            med, p99, tput, rss, vs, quality = "-", "-", "-", "-", "-", "-"
            status = f"{r.status}: {(r.reason or '')[:60]}"
        t.add_row(r.cell_id, status, vs, quality, med, p99, tput, rss)
    console = Console(width=max(100, min(220, os.get_terminal_size(1).columns if sys.stdout.isatty() else 220)),
                      record=True, file=open(os.devnull, "w"))
    console.print(t)
    return console.export_text() + legend(marks) + clear_wins(rows.values()) + cross_lines(results)


def cross_lines(results) -> str:
    """The suite's `compare:` pairings (another runtime's or model's FP32 timed in the same worker), one line
    per cell and baseline: the paired speedup with its CI, or why there is none."""
    from effbench.report.table import Speedup, fmt_speedup
    lines = []
    for r in results:
        for key, comp in sorted((r.comparisons or {}).items()):
            sp = Speedup.from_comparison(comp)
            what = (fmt_speedup(sp) + ("" if sp.clear else " ~")) if sp else f"none ({comp.reason or 'not paired'})"
            lines.append(f"  {r.cell_id} vs {key.replace(':', ' ')} FP32: {what}")
    return ("Paired against the suite's compare: baseline (same worker, alternating blocks, 95% CI over rounds):\n"
            + "\n".join(lines) + "\n") if lines else ""


def _threads_flag(record) -> list[str]:
    """'fewer threads' where another process kept cores busy and a round ran with the ones it left
    (`measure.contention`; the drift section's rounds say how many and why)."""
    rounds = record.drift.rounds if record.drift else []
    used = sorted({str(x.get("threads_used")) for x in rounds if isinstance(x, dict) and x.get("action") == "fewer threads"})
    return [f"fewer threads ({'/'.join(used)})"] if used else []


def _agreement(record) -> float | None:
    """A generative cell's quality: next-token agreement with FP32, teacher-forced on held text."""
    gen = getattr(record, "generation", None)
    value = (gen.quality or {}).get("next_token_agreement") if gen is not None else None
    return float(value) if isinstance(value, (int, float)) else None


def _quality(row) -> str:
    rel = row.relative_quality
    if rel is None:
        agree = _agreement(row.record)
        return "-" if agree is None else f"agree {agree:.3f}"
    held = "" if (row.record.quality and row.record.quality.split) else " (in-sample)"
    return f"{rel:.3f}{held}"


def clear_wins(rows) -> str:
    """One line per variant whose paired speedup's CI lies above 1x and whose quality is not below the floor."""
    from effbench.report.table import fmt_speedup
    wins = [r for r in rows if r.speedup is not None and r.speedup.clear and r.speedup.direction == "faster"
            and not r.below_floor and not r.emulated]
    if not wins:
        return "No variant is clearly faster than FP32 here (no paired speedup whose 95% CI lies above 1x).\n"
    lines = ["Clear wins (paired speedup whose 95% CI lies above 1x, quality not below the floor):"]
    for r in sorted(wins, key=lambda r: -r.speedup.value):
        q = r.relative_quality
        held = "held-out" if (r.record.quality and r.record.quality.split) else "in-sample"
        agree = _agreement(r.record)
        qtext = (f", {r.quality_metric} {q:.3f} of FP32 ({held})" if q is not None else
                 f", next-token agreement with FP32 {agree:.3f} (held text)" if agree is not None else
                 ", quality not measured")
        lines.append(f"  {r.cell_id}: {fmt_speedup(r.speedup)}{qtext}")
    return "\n".join(lines) + "\n"
