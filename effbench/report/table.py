"""The decision table: one row per cell with its derived figures (speedup vs FP32, calibration error).

The HTML page, the Markdown summary and the charts all read these rows, so a figure is derived once.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from effbench.results import Record, Results

FP32 = "fp32"


@dataclass(frozen=True)
class Speedup:
    """FP32 median latency / this cell's median latency (> 1 means faster than FP32)."""

    value: float
    method: str          # "median of N per-round ratios" | "ratio of medians"


@dataclass
class Row:
    """One record seen by the reader: the raw record plus what the report derives from it."""

    record: Record
    speedup: Speedup | None = None
    speedup_note: str | None = None      # why there is no speedup (no FP32 cell, FP32 failed...)
    calibration_error: float | None = None  # local projection / measured median - 1
    flags: list[str] = field(default_factory=list)

    # --- plain accessors: None when the section or key is absent, never a made-up zero ---
    @property
    def cell_id(self) -> str:
        return self.record.cell_id

    @property
    def status(self) -> str:
        return self.record.status

    def cell(self, key: str) -> Any:
        return (self.record.cell or {}).get(key)

    @property
    def model(self) -> str:
        return str(self.cell("model") or self.cell_id.split("/")[0])

    @property
    def variant(self) -> str:
        v = self.cell("variant") or self.cell("precision")
        return str(v if v is not None else "?")

    @property
    def precision(self) -> str:
        return str(self.cell("precision") or "")

    @property
    def runner(self) -> str:
        return str(self.cell("runner_label") or self.cell("runner") or "?")

    @property
    def batch_size(self) -> int | None:
        b = self.cell("batch_size")
        return int(b) if isinstance(b, (int, float)) else None

    @property
    def scenario(self) -> str:
        return str(self.cell("scenario") or "")

    def lat(self, key: str) -> Any:
        return (self.record.latency_ms or {}).get(key) if self.record.ok else None

    @property
    def median_ms(self) -> float | None:
        return _num(self.lat("median"))

    @property
    def ci_ms(self) -> tuple[float, float] | None:
        ci = self.lat("ci")
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(x) is not None for x in ci):
            return float(ci[0]), float(ci[1])
        return None

    @property
    def p99_ms(self) -> float | None:
        return _num(self.lat("p99"))

    @property
    def p99_reliable(self) -> bool:
        return bool(self.lat("p99_reliable"))

    @property
    def throughput_ips(self) -> float | None:
        return _num(self.record.throughput_ips) if self.record.ok else None

    @property
    def size_bytes(self) -> float | None:
        v = _num((self.record.variant or {}).get("size_bytes"))
        return v if v is not None else _num((self.record.model_stats or {}).get("size_bytes"))

    @property
    def compression(self) -> float | None:
        return _num((self.record.variant or {}).get("compression_vs_fp32"))

    def work(self, key: str) -> float | None:
        return _num((self.record.model_stats or {}).get(key))

    @property
    def peak_rss_bytes(self) -> float | None:
        return _num((self.record.memory or {}).get("peak_rss_bytes")) if self.record.ok else None

    @property
    def energy_j(self) -> float | None:
        return _num((self.record.energy or {}).get("j_per_inference")) if self.record.ok else None

    @property
    def energy_source(self) -> str | None:
        src = (self.record.energy or {}).get("source")
        return str(src) if src and self.energy_j is not None else None

    @property
    def energy_modeled(self) -> bool:
        return bool(self.energy_source) and not str(self.energy_source).startswith("measured")

    @property
    def quality(self) -> float | None:
        return _num((self.record.quality or {}).get("value"))

    @property
    def quality_metric(self) -> str:
        return str((self.record.quality or {}).get("metric") or "quality")

    @property
    def relative_quality(self) -> float | None:
        return _num((self.record.quality or {}).get("relative"))

    @property
    def emulated(self) -> bool:
        return self.record.emulated

    @property
    def unstable(self) -> bool:
        return self.record.ok and self.record.unstable

    @property
    def below_floor(self) -> bool:
        return self.record.below_floor

    @property
    def host(self) -> str:
        return host_name(self.record)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def host_name(record: Record) -> str:
    host = (record.provenance or {}).get("host")
    if isinstance(host, dict):
        for key in ("hostname", "name", "node"):
            if host.get(key):
                return str(host[key])
        return "unnamed host"
    return str(host) if host else "unknown host"


def speedup(base: Record, new: Record) -> Speedup | None:
    """Median of per-round ratios when both have rounds of the same count, else ratio of medians.

    Per-round ratios follow FIELD-NOTES: on this machine only interleaved per-round ratios held steady.
    """
    b, n = base.round_medians_ms, new.round_medians_ms
    if b and n and len(b) == len(n) and all(x and x > 0 for x in n) and all(x and x > 0 for x in b):
        ratios = [bx / nx for bx, nx in zip(b, n)]
        return Speedup(statistics.median(ratios), f"median of {len(ratios)} per-round ratios")
    bm = _num((base.latency_ms or {}).get("median"))
    nm = _num((new.latency_ms or {}).get("median"))
    if bm and nm and bm > 0 and nm > 0:
        return Speedup(bm / nm, "ratio of medians")
    return None


def _is_fp32(r: Record) -> bool:
    cell = r.cell or {}
    label = cell.get("variant")
    return label == FP32 if label is not None else cell.get("precision") == FP32


def group_key(r: Record) -> tuple:
    """Cells comparable with each other: same model, runner, batch size, scenario (and host)."""
    c = r.cell or {}
    return (c.get("model"), c.get("runner_label") or c.get("runner"), c.get("batch_size"),
            c.get("scenario"), host_name(r))


def build_rows(results: Results) -> list[Row]:
    """Rows in a stable reading order: model, runner, batch size, scenario, then the suite's order."""
    fp32: dict[tuple, Record] = {}
    for r in results.records:
        if _is_fp32(r):
            fp32[group_key(r)] = r
    rows = []
    for r in results.records:
        row = Row(record=r)
        if r.ok:
            base = fp32.get(group_key(r))
            if base is None:
                row.speedup_note = "no FP32 cell with the same model, runner, batch size and scenario"
            elif not base.ok:
                row.speedup_note = f"the FP32 cell is {base.status}"
            else:
                row.speedup = speedup(base, r)
                if row.speedup is None:
                    row.speedup_note = "no latency median"
            local = (r.projections or {}).get("local")
            measured = row.median_ms
            if isinstance(local, dict) and measured:
                proj = _num(local.get("latency_ms"))
                if proj is not None:
                    row.calibration_error = proj / measured - 1
        if row.emulated:
            row.flags.append("emulated")
        if row.unstable:
            row.flags.append("unstable")
        if row.below_floor:
            row.flags.append("below quality floor")
        rows.append(row)
    order = {r.cell_id: i for i, r in enumerate(results.records)}
    rows.sort(key=lambda w: (w.model, w.runner, w.batch_size or 0, w.scenario, w.host, order[w.cell_id]))
    return rows


# --- formatting: one place, so every view shows the same units ---

_SI = [(1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")]


def fmt_si(x: float | None, unit: str = "", digits: int = 3) -> str:
    """1234567 -> '1.23 M' + unit; 0.00042 J -> '420 µJ'. '—' when absent."""
    if x is None:
        return "—"
    if x == 0:
        return f"0 {unit}".strip()
    ax = abs(x)
    for scale, prefix in _SI:
        if ax >= scale * 0.9995:
            return f"{x / scale:.{digits}g} {prefix}{unit}".strip()
    return f"{x:.{digits}g} {unit}".strip()


def fmt_bytes(x: float | None) -> str:
    if x is None:
        return "—"
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


def fmt_ms(x: float | None) -> str:
    """Latency always in ms, with enough digits for sub-millisecond cells."""
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:.0f} ms"
    if x >= 1:
        return f"{x:.3g} ms"
    return f"{x:.3f} ms" if x >= 0.01 else f"{x:.2g} ms"


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def fmt_pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def fmt_quality(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"
