"""The decision table: one row per cell with its derived figures (speedup vs FP32, calibration error).

The HTML page, the Markdown summary and the charts all read these rows, so a figure is derived once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from effbench.measure.stats import SCOPE_ONE_MOMENT
from effbench.results.record import Cell, Comparison, Latency
from effbench.results.store import Record, Results
from effbench.variants.specs import reference_precision

FP32 = reference_precision()  # the precision every speedup and quality is against (the registry's)
NOT_PAIRED = "not paired: this store has no paired comparison (re-run with this effbench)"
EMULATED = "emulated: not native speed"


@dataclass(frozen=True)
class Speedup:
    """FP32 latency / this cell's latency (> 1 means faster than FP32), paired: both timed in one worker
    in alternating blocks, so both saw the same machine. Only a CI that excludes 1 says which is faster."""

    value: float
    lo: float | None
    hi: float | None
    rounds: int | None
    scope: str | None    # "between rounds" | "one moment (1 round)"
    method: str          # "paired"
    level: float = 0.95

    @classmethod
    def from_comparison(cls, comp: Comparison) -> Speedup | None:
        value = _num(comp.speedup)
        if comp.method != "paired" or value is None:
            return None
        lo, hi = _interval(comp.ci) or (None, None)
        return cls(value, lo, hi, comp.rounds, comp.ci_scope, "paired", _num(comp.ci_level) or 0.95)

    @property
    def clear(self) -> bool:
        return self.lo is not None and self.hi is not None and not self.lo <= 1.0 <= self.hi

    @property
    def direction(self) -> str:
        if not self.clear:
            return "no clear difference"
        return "faster" if self.lo > 1.0 else "slower"

    @property
    def one_moment(self) -> bool:
        return self.scope == SCOPE_ONE_MOMENT

    @property
    def basis(self) -> str:
        """How the figure was made, for a tooltip or hover text."""
        how = "paired in one worker, alternating blocks"
        if self.lo is None:
            return f"{how}; no CI"
        if self.one_moment:
            return f"{how}; {self.level:.0%} CI within 1 round: it covers one moment of the machine only"
        return f"{how}; {self.level:.0%} CI over {self.rounds or 'several'} rounds"


@dataclass
class Row:
    """One record seen by the reader: the raw record plus what the report derives from it."""

    record: Record
    speedup: Speedup | None = None
    speedup_note: str | None = None      # why a non-FP32 cell has no speedup (emulated, not paired...)
    calibration_error: float | None = None  # local projection / measured median - 1
    flags: list[str] = field(default_factory=list)

    # --- plain accessors: None when the section or key is absent, never a made-up zero ---
    @property
    def cell_id(self) -> str:
        return self.record.cell_id

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def cell(self) -> Cell:
        return self.record.cell

    @property
    def model(self) -> str:
        return self.cell.model or self.cell_id.split("/")[0]

    @property
    def variant(self) -> str:
        return self.cell.variant or self.cell.precision

    @property
    def precision(self) -> str:
        return self.cell.precision

    @property
    def runner(self) -> str:
        return self.cell.runner_label or self.cell.runner or "?"

    @property
    def batch_size(self) -> int:
        return self.cell.batch_size

    @property
    def scenario(self) -> str:
        return self.cell.scenario

    @property
    def latency(self) -> Latency | None:
        """The latency statistics of an ok record; None otherwise."""
        return self.record.latency_ms if self.record.ok else None

    @property
    def median_ms(self) -> float | None:
        return _num(self.latency.median) if self.latency else None

    @property
    def ci_ms(self) -> tuple[float, float] | None:
        return _interval(self.latency.ci) if self.latency else None

    @property
    def within_round_ci_ms(self) -> tuple[float, float] | None:
        return _interval(self.latency.within_round_ci) if self.latency else None

    @property
    def latency_one_moment(self) -> bool:
        """The latency CI comes from one worker's samples: stores without `ci_scope` say so by having
        fewer than two round medians."""
        scope = self.latency.ci_scope if self.latency else None
        return scope == SCOPE_ONE_MOMENT if scope else len(self.record.round_medians_ms) < 2

    @property
    def p99_ms(self) -> float | None:
        return _num(self.latency.p99) if self.latency else None

    @property
    def p99_reliable(self) -> bool:
        return bool(self.latency and self.latency.p99_reliable)

    @property
    def unstable_reason(self) -> str | None:
        return self.latency.unstable_reason if self.latency else None

    @property
    def throughput_ips(self) -> float | None:
        return _num(self.record.throughput_ips) if self.record.ok else None

    @property
    def size_bytes(self) -> float | None:
        v = _num(self.record.variant.size_bytes) if self.record.variant else None
        if v is not None:
            return v
        return _num(self.record.model_stats.size_bytes) if self.record.model_stats else None

    @property
    def compression(self) -> float | None:
        return _num(self.record.variant.compression_vs_fp32) if self.record.variant else None

    @property
    def macs(self) -> float | None:
        return _num(self.record.model_stats.macs) if self.record.model_stats else None

    @property
    def flops(self) -> float | None:
        return _num(self.record.model_stats.flops) if self.record.model_stats else None

    @property
    def bops(self) -> float | None:
        return _num(self.record.model_stats.bops) if self.record.model_stats else None

    @property
    def peak_rss_bytes(self) -> float | None:
        mem = self.record.memory
        return _num(mem.peak_rss_bytes) if mem and self.record.ok else None

    @property
    def energy_j(self) -> float | None:
        energy = self.record.energy
        return _num(energy.j_per_inference) if energy and self.record.ok else None

    @property
    def energy_source(self) -> str | None:
        src = self.record.energy.source if self.record.energy else None
        return src if src and self.energy_j is not None else None

    @property
    def energy_modeled(self) -> bool:
        return self.energy_source is not None and not self.energy_source.startswith("measured")

    @property
    def energy_reason(self) -> str | None:
        """Why an ok record has no energy figure, where the record says."""
        return self.record.energy.reason if self.record.ok and self.record.energy else None

    @property
    def quality(self) -> float | None:
        return _num(self.record.quality.value) if self.record.quality else None

    @property
    def quality_metric(self) -> str:
        return (self.record.quality.metric if self.record.quality else None) or "quality"

    @property
    def relative_quality(self) -> float | None:
        return _num(self.record.quality.relative) if self.record.quality else None

    @property
    def emulated(self) -> bool:
        return self.record.emulated

    @property
    def unstable(self) -> bool:
        return self.record.ok and self.record.unstable

    @property
    def drift_flagged(self) -> bool:
        return self.record.ok and bool(self.record.drift and self.record.drift.flagged)

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
    host = record.provenance.host
    if not host:
        return "unknown host"
    for key in ("hostname", "name", "node"):
        if host.get(key):
            return str(host[key])
    return "unnamed host"


def _interval(x: tuple[float, float] | None) -> tuple[float, float] | None:
    if x is not None and _num(x[0]) is not None and _num(x[1]) is not None:
        return float(x[0]), float(x[1])
    return None


def _is_fp32(r: Record) -> bool:
    return r.cell.variant == FP32


def build_rows(results: Results) -> list[Row]:
    """Rows in a stable reading order: model, runner, batch size, scenario, then the suite's order."""
    rows = []
    for r in results.records:
        row = Row(record=r)
        if r.ok:
            _set_speedup(row)
            # the local profile's error on this machine; a fleet node's cell has its own (report.fleet)
            local = r.projections.get("local") if r.measured_on is None else None
            measured = row.median_ms
            if local is not None and measured:
                proj = _num(local.latency_ms)
                if proj is not None:
                    row.calibration_error = proj / measured - 1
        if row.emulated:
            row.flags.append("emulated")
        if r.variant is not None and r.variant.sparsity and r.variant.sparsity.get("sparse_kernels") is False:
            row.flags.append("zeros run on dense kernels")  # pruned weights: its speed is not a sparse runtime's
        if row.unstable:
            row.flags.append("unstable")
        if row.drift_flagged:
            row.flags.append("drift")
        if r.ok and (row.latency_one_moment or (row.speedup and row.speedup.one_moment)):
            row.flags.append("1 round")
        if row.below_floor:
            row.flags.append("below quality floor")
        if r.mixed:  # rounds of differing machines or software merged on request (--allow-mixed)
            row.flags.append(f"mixed: rounds differ in {', '.join(k for k in r.mixed if k != 'host.hostname')}")
        rows.append(row)
    order = {r.cell_id: i for i, r in enumerate(results.records)}
    rows.sort(key=lambda w: (w.model, w.runner, w.batch_size or 0, w.scenario, w.host, order[w.cell_id]))
    return rows


def _set_speedup(row: Row) -> None:
    """The speedup comes only from the paired comparison the measurement stored: a ratio of two cells
    timed apart moved 2-3x between identical runs, so the report never makes one up."""
    if _is_fp32(row.record):
        return
    if row.emulated:  # the speed of float kernels emulating the precision, whatever the store says
        row.speedup_note = EMULATED
        return
    comp = row.record.comparison
    row.speedup = Speedup.from_comparison(comp) if comp else None
    if row.speedup is None:
        row.speedup_note = (comp.reason if comp else None) or NOT_PAIRED


# --- formatting: one place, so every view shows the same units ---

def fmt_ms(x: float | None) -> str:
    """Latency always in ms, with enough digits for sub-millisecond cells."""
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:.0f} ms"
    if x >= 1:
        return f"{x:.3g} ms"
    return f"{x:.3f} ms" if x >= 0.01 else f"{x:.2g} ms"


def fmt_speedup(sp: Speedup | None) -> str:
    """'1.92× [1.85–2.01]': the paired speedup and its CI; '—' when there is none."""
    if sp is None:
        return "—"
    ci = f" [{_bound(sp.lo)}–{_bound(sp.hi)}]" if sp.lo is not None and sp.hi is not None else ""
    return f"{sp.value:.2f}×{ci}"


def _bound(x: float) -> str:
    """A CI bound with enough digits to stay on its side of 1: a CI of 0.80–0.998 must not read 0.80–1.00."""
    for digits in (2, 3, 4):
        text = f"{x:.{digits}f}"
        if float(text) != 1 or x == 1:
            return text
    return text


def fmt_pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def fmt_quality(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"
