"""The report's header: suite, dates, hosts with their runtime versions, and the status counts."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from effbench.report.table import Row, host_name
from effbench.results.record import Provenance
from effbench.results.store import Results


@dataclass
class HostInfo:
    """What one machine contributed: its description, packages and how many cells it measured."""

    name: str
    details: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    python: str | None = None
    effbench: str | None = None
    speed_index: Any = None
    suites: set[str] = field(default_factory=set)
    cells: int = 0
    first: str | None = None
    last: str | None = None


@dataclass
class Overview:
    title: str
    suites: list[str]
    counts: dict[str, int]
    hosts: list[str]
    host_info: list[HostInfo]
    date_range: str | None
    sources: list[str]
    warnings: list[str]


def _suite_label(prov: Provenance) -> str | None:
    name, sha = prov.suite, prov.suite_sha256
    if name and sha:
        return f"{name} (sha256 {sha[:12]})"
    if name:
        return str(name)
    return f"sha256 {sha[:12]}" if sha else None


def _started(prov: Provenance) -> str | None:
    """When the record was made: `started`, or the `timestamp`/`time` of stores written by other tools."""
    ts = prov.started
    return str(ts) if ts else None


def build_overview(results: Results, rows: Sequence[Row], title: str | None = None) -> Overview:
    counts = {"total": len(rows), "ok": 0, "unsupported": 0, "failed": 0, "unstable": 0, "drift": 0,
              "below_floor": 0}
    for r in rows:
        if r.status in counts:
            counts[r.status] += 1
        counts["unstable"] += r.unstable
        counts["drift"] += r.drift_flagged
        counts["below_floor"] += r.below_floor
    hosts: dict[str, HostInfo] = {}
    suites: list[str] = []
    stamps: list[str] = []
    cells: dict[str, set[str]] = {}
    # every round, not only each merged cell's last: a cell merged with --allow-mixed has rounds of several hosts
    for rec in results.raw or results.records:
        prov = rec.provenance
        name = host_name(rec)
        info = hosts.setdefault(name, HostInfo(name=name))
        cells.setdefault(name, set()).add(rec.cell_id)
        info.cells = len(cells[name])
        info.details.update({k: v for k, v in prov.host.items() if k not in ("hostname", "name")})
        info.packages.update({str(k): str(v) for k, v in prov.packages.items()})
        info.python = prov.python or info.python
        info.effbench = prov.effbench or info.effbench
        if prov.speed_index is not None:
            info.speed_index = prov.speed_index
        label = _suite_label(prov)
        if label:
            info.suites.add(label)
            if label not in suites:
                suites.append(label)
        ts = _started(prov)
        if ts:
            stamps.append(ts)
            info.first = min(info.first or ts, ts)
            info.last = max(info.last or ts, ts)
    date_range = None
    if stamps:
        lo, hi = min(stamps), max(stamps)
        date_range = lo if lo[:10] == hi[:10] and lo == hi else f"{lo} – {hi}"
    if title is None:
        names = [s.split(" (")[0] for s in suites]
        title = f"effbench report: {', '.join(dict.fromkeys(names))}" if names else "effbench report"
    return Overview(title=title, suites=suites, counts=counts, hosts=list(hosts),
                    host_info=list(hosts.values()), date_range=date_range,
                    sources=list(results.sources), warnings=list(results.warnings))
