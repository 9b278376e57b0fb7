"""Calibration: fit the local profile's derates (and per-op overhead) to measured cells, so the
projection error on this machine is known and smaller; the result is cached for later projections.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from effbench.devices.detect import CALIBRATION_FILE, default_cache_dir, detect, fingerprint, local_profile
from effbench.devices.profile import OPS_PER_MAC, Derate, Profile, apply_figures
from effbench.devices.project import project_one, work_per_call
from effbench.errors import UserError
from effbench.results.store import Record


@dataclass
class CellError:
    cell_id: str
    precision: str
    runner: str
    batch_size: int
    measured_ms: float
    before_ms: float
    after_ms: float

    @property
    def before_pct(self) -> float:
        return (self.before_ms - self.measured_ms) / self.measured_ms * 100.0

    @property
    def after_pct(self) -> float:
        return (self.after_ms - self.measured_ms) / self.measured_ms * 100.0


def mdape(errors_pct: list[float]) -> float | None:
    """Median absolute percentage error."""
    return statistics.median(abs(e) for e in errors_pct) if errors_pct else None


@dataclass
class CalibrationReport:
    profile_id: str
    cells: list[CellError]
    compute: float
    memory: float
    compute_by: dict[str, float]
    per_op_overhead_s: float
    skipped: list[tuple[str, str]] = field(default_factory=list)
    loo_after_pct: list[float] = field(default_factory=list)  # leave-one-out errors: honest out-of-sample
    call_overhead_by_runner: dict[str, float] = field(default_factory=dict)
    node_overhead_by_runner: dict[str, dict[str, float]] = field(default_factory=dict)
    error_band: dict[str, Any] | None = None
    memory_by: dict[str, float] = field(default_factory=dict)
    written_to: str | None = None

    @property
    def mdape_before(self) -> float | None:
        return mdape([c.before_pct for c in self.cells])

    @property
    def mdape_after(self) -> float | None:
        return mdape([c.after_pct for c in self.cells])

    @property
    def mdape_loo(self) -> float | None:
        return mdape(self.loo_after_pct)

    def subset(self, *, precisions: tuple[str, ...] | None = None, batch_size: int | None = 32) -> dict[str, Any]:
        """The error over some cells: by default the FP32 reference's and int8's (the registry's 8-bit
        weight-and-activation precision) at batch 32."""
        if precisions is None:
            precisions = headline_pair()
        cells = [c for c in self.cells if c.precision in precisions and (batch_size is None or c.batch_size == batch_size)]
        return {"n": len(cells), "mdape_before": mdape([c.before_pct for c in cells]),
                "mdape_after": mdape([c.after_pct for c in cells])}

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile_id, "compute": self.compute, "memory": self.memory, "memory_by": self.memory_by,
                "compute_by": self.compute_by, "per_op_overhead_s": self.per_op_overhead_s,
                "call_overhead_by_runner": self.call_overhead_by_runner,
                "node_overhead_by_runner": self.node_overhead_by_runner, "error_band": self.error_band,
                "mdape_before": self.mdape_before, "mdape_after": self.mdape_after, "mdape_loo": self.mdape_loo,
                "cells": [{**c.__dict__, "before_pct": c.before_pct, "after_pct": c.after_pct} for c in self.cells],
                "skipped": [{"cell_id": a, "reason": b} for a, b in self.skipped],
                "written_to": self.written_to}

    def text(self) -> str:
        pct = lambda x: "-" if x is None else f"{x:.1f}%"  # noqa: E731
        head = ("cell", "measured ms", "before ms", "err", "after ms", "err")
        rows = [head] + [(c.cell_id, f"{c.measured_ms:.4g}", f"{c.before_ms:.4g}", f"{c.before_pct:+.0f}%",
                          f"{c.after_ms:.4g}", f"{c.after_pct:+.0f}%") for c in self.cells]
        w = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(x.ljust(w[i]) if i == 0 else x.rjust(w[i]) for i, x in enumerate(r)) for r in rows]
        lines.insert(1, "  ".join("-" * x for x in w))
        sub = self.subset()
        lines += [
            "",
            f"profile {self.profile_id}: {len(self.cells)} cells fitted, {len(self.skipped)} skipped",
            f"median absolute % error: before (uncalibrated) {pct(self.mdape_before)}, after {pct(self.mdape_after)}"
            + (f", leave-one-out {pct(self.mdape_loo)}" if self.loo_after_pct else ""),
            f"  {' + '.join(headline_pair())} cells at batch 32 ({sub['n']}): before {pct(sub['mdape_before'])}, after {pct(sub['mdape_after'])}",
            (f"prediction interval of later projections (leave-one-out measured / projected, 10th-90th "
             f"percentile): x{self.error_band['low']:.2f} to x{self.error_band['high']:.2f}"
             if self.error_band else "too few cells for a prediction interval (5 needed)"),
            "derates: memory " + (", ".join(f"{k} {v:.3g}" for k, v in sorted(self.memory_by.items()))
                                  or f"{self.memory:.3g}") + f"; compute (all) {self.compute:.3g}; "
            + ", ".join(f"{k} {v:.3g}" for k, v in sorted(self.compute_by.items())),
            "overheads: " + "; ".join(
                f"{r} {self.call_overhead_by_runner.get(r, 0) * 1e6:.3g} us per call, per node "
                + ", ".join(f"{k} {v * 1e6:.3g} us" for k, v in sorted(d.items()))
                for r, d in sorted(self.node_overhead_by_runner.items())),
        ]
        for cell_id, why in self.skipped[:10]:
            lines.append(f"skipped {cell_id}: {why}")
        if len(self.skipped) > 10:
            lines.append(f"... and {len(self.skipped) - 10} more skipped")
        if self.written_to:
            lines.append(f"written to {self.written_to}")
        return "\n".join(lines)


def _usable(records: list[Record], profile: Profile) -> tuple[list[tuple[Record, dict]], list[tuple[str, str]]]:
    usable, skipped = [], []
    for r in records:
        prec = r.cell.precision
        if r.status != "ok":
            skipped.append((r.cell_id, f"status {r.status}"))
        elif r.emulated:
            skipped.append((r.cell_id, "emulated variant (ran dequantized)"))
        elif not r.median_ms:
            skipped.append((r.cell_id, "no measured median latency"))
        elif not profile.peak_ops_per_s(prec, r.cell.runner):
            skipped.append((r.cell_id, f"{profile.id} declares no {prec} throughput"))
        else:
            work = work_per_call(r)
            if isinstance(work, str):
                skipped.append((r.cell_id, work))
            else:
                usable.append((r, work))
    return usable, skipped


# Shrinkage toward the starting point, in log space (ridge rows of the fit): the overheads are free to
# move (small models tell them well); an efficiency moves off the micro-benchmarked peak only as far as
# the measured cells demand (the quickstart's tiny models say little about big kernels, and pulling on
# them made held-out projections worse: bench/projection_error.json).
# The memory efficiency (per runner) is held three times as firmly: the bandwidth is measured directly,
# and the quickstart's small models cannot tell slow memory from costs the model lacks (thread-pool
# dispatch at batch 32), so a free memory term soaked those up and made every memory-bound held-out
# cell 2-3x too slow (bench/projection_error.py --refit on three measured store sets: max 3.3-3.8x with
# weight 1, 1.7-1.9x with 3).
SHRINK_OVERHEAD = 0.01
SHRINK_EFFICIENCY = 1.0
SHRINK_MEMORY = 3.0


@dataclass(frozen=True)
class _Param:
    kind: str            # call | node | eff | mem
    runner: str = ""
    precision: str = ""
    op_class: str = ""

    @property
    def key(self) -> str:
        return "/".join(x for x in (self.runner, self.precision, self.op_class) if x)


@dataclass
class _Design:
    """The projection as arrays over every node of every cell, so a fit evaluates it in one pass:
    latency = call(runner) + sum over nodes of count x (node overhead(runner, class)
              + max(MACs x 2 / peak x 1/efficiency(runner, precision, class), bytes / bandwidth x 1/memory))."""

    params: list[_Param]
    cell: np.ndarray       # per node: which cell
    count: np.ndarray      # per node: how many equal nodes
    compute: np.ndarray    # per node: seconds at the uncalibrated peak
    memory: np.ndarray     # per node: seconds at the uncalibrated bandwidth
    eff: np.ndarray        # per node: efficiency parameter (or -1: no MACs)
    node: np.ndarray       # per node: overhead parameter
    call: np.ndarray       # per cell: call parameter
    mem: np.ndarray        # per node: the memory parameter (its runner's)

    def predict(self, theta: np.ndarray) -> np.ndarray:
        inv_eff = np.where(self.eff >= 0, theta[np.maximum(self.eff, 0)], 0.0)
        busy = np.maximum(self.compute * inv_eff, self.memory * theta[self.mem])
        per_node = self.count * (theta[self.node] + busy)
        return theta[self.call] + np.bincount(self.cell, weights=per_node, minlength=len(self.call))

    def subset(self, keep: np.ndarray) -> _Design:
        rows = keep[self.cell]
        renumber = np.cumsum(keep) - 1
        return _Design(self.params, renumber[self.cell[rows]], self.count[rows], self.compute[rows],
                       self.memory[rows], self.eff[rows], self.node[rows], self.call[keep], self.mem[rows])


def _design(usable: list[tuple[Record, dict]], base: Profile) -> _Design:
    """Each cell's nodes (model_stats.node_work, the roofline the projection uses where the profile knows
    its on-chip bandwidth) or, for records without them, its classes of op and its bytes as one node each."""
    params: dict[_Param, int] = {}

    def col(p: _Param) -> int:
        return params.setdefault(p, len(params))

    m = base.memory
    dram = m.bandwidth_bytes_per_s.value
    sram_bytes = m.sram_bytes.value if m.sram_bytes and m.sram_bandwidth_bytes_per_s else 0.0
    sram = m.sram_bandwidth_bytes_per_s.value if sram_bytes else dram
    cols: dict[str, list] = {k: [] for k in ("cell", "count", "compute", "memory", "eff", "node", "mem")}
    call = []
    for i, (r, w) in enumerate(usable):
        run, prec = r.cell.runner, r.cell.precision
        call.append(col(_Param("call", run)))
        if w.get("node_work") and sram_bytes:
            nodes = [(c, mac, wb + ab, n) for c, mac, wb, ab, n in w["node_work"]]
        else:  # no per-node work: each class of op as one node, the bytes as another, nodes counted apart
            nodes = [(k, mac, 0.0, 0.0) for k, mac in (w.get("macs_by_class") or {"matmul": w["macs"]}).items() if mac]
            nodes.append(("other", 0.0, w["bytes_moved"], 0.0))
            nodes += [(k, 0.0, 0.0, n) for k, n in (w.get("nodes_by_class") or {"other": w["nodes"] or 0.0}).items() if n]
        for cls, mac, nbytes, n in nodes:
            cols["cell"].append(i)
            cols["mem"].append(col(_Param("mem", run)))
            cols["count"].append(n if n else 1.0)
            peak = base.peak_ops_per_s(prec, run, cls) if mac else None
            cols["compute"].append(mac * OPS_PER_MAC / peak if peak else 0.0)
            cols["memory"].append(nbytes / (sram if nbytes <= sram_bytes else dram))
            cols["eff"].append(col(_Param("eff", run, prec, cls)) if peak else -1)
            cols["node"].append(col(_Param("node", run, op_class=cls)) if n else col(_Param("zero")))
    arr = {k: np.array(v, dtype=float if k in ("count", "compute", "memory") else int) for k, v in cols.items()}
    return _Design(list(params), arr["cell"], arr["count"], arr["compute"], arr["memory"], arr["eff"],
                   arr["node"], np.array(call, dtype=int), arr["mem"])


def _priors(params: list[_Param], base: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Each parameter's starting value (seconds, or 1/efficiency) and its shrinkage weight in log space."""
    node0 = base.per_op_overhead_s.value or 1e-6
    prior = np.array([(base.call_overhead_s(p.runner) or node0) if p.kind == "call" else node0 if p.kind == "node"
                      else 1e-30 if p.kind == "zero" else 1.0 for p in params])
    weight = np.array([SHRINK_OVERHEAD if p.kind in ("call", "node") else 1e3 if p.kind == "zero"
                       else SHRINK_MEMORY if p.kind == "mem" else SHRINK_EFFICIENCY for p in params])
    return prior, weight


def _fit(design: _Design, measured_s: np.ndarray, prior: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Least squares on log(projected / measured) over log parameters (so they stay positive), each
    pulled toward its prior in log space: a parameter a factor e away costs as much as `weight` cells
    off by a factor e."""
    from scipy.optimize import least_squares
    lp = np.log(prior)

    def resid(theta: np.ndarray) -> np.ndarray:
        # log of projected / measured: a cell 5x too fast costs as much as one 5x too slow (a relative
        # error would cap the first at 1 and let a fit buy its other cells with it)
        return np.concatenate([np.log(design.predict(np.exp(theta)) / measured_s), weight * (theta - lp)])

    best = None
    for shift in (0.0, -1.5, 1.5):  # a sum of maxima is not convex: a few starts, the best kept
        start = lp.copy()
        free = np.array([p.kind != "zero" for p in design.params])
        start[free] += shift
        sol = least_squares(resid, start, method="trf", x_scale=1.0)
        if best is None or sol.cost < best.cost:
            best = sol
    return np.exp(best.x)


def _calibrated(base: Profile, params: list[_Param], theta: np.ndarray, src: str) -> tuple[Profile, dict[str, Any]]:
    """The profile the fitted parameters describe, and the figures the cache keeps."""
    eff = {p.key: 1.0 / max(v, 1e-9) for p, v in zip(params, theta) if p.kind == "eff"}
    mem_by = {p.runner: 1.0 / max(v, 1e-9) for p, v in zip(params, theta) if p.kind == "mem"}
    mem = statistics.geometric_mean(mem_by.values()) if mem_by else 1.0
    call = {p.runner: float(v) for p, v in zip(params, theta) if p.kind == "call"}
    node: dict[str, dict[str, float]] = {}
    for p, v in zip(params, theta):
        if p.kind == "node":
            node.setdefault(p.runner, {})[p.op_class] = float(v)
    figures = {"compute_by": eff, "memory": mem, "memory_by": mem_by, "call_overhead_by_runner": call,
               "node_overhead_by_runner": node}
    return apply_figures(base, figures, src), figures


def calibrate(records: list[Record], *, cache_dir: Path | None = None, write: bool = True,
              profile: Profile | None = None, quick: bool = False, leave_one_out: bool = True) -> CalibrationReport:
    """Fit the local profile's per-call and per-node overheads (per runner and class of op), its
    compute efficiency per runner, precision and class of op, and its memory efficiency, to measured ok
    cells (non-negative least squares on relative error, shrunk toward the micro-benchmarked start);
    write them to the cache for later projections. Leave-one-out errors say how well it predicts."""
    base = profile or local_profile(cache_dir=cache_dir, quick=quick, calibrated=False)
    base = base.with_derate(Derate()).model_copy(update={"call_overhead_by_runner": {}, "node_overhead_by_runner": {}})
    usable, skipped = _usable(records, base)
    if not usable:
        raise UserError("no measured cell can calibrate the local profile"
                        + (f" ({len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""),
                        fix="run a suite first (effbench run SUITE) and pass its results")
    design = _design(usable, base)
    params = design.params
    measured = np.array([r.latency_ms.median / 1e3 for r, _ in usable])
    prior, weight = _priors(params, base)
    theta = _fit(design, measured, prior, weight)
    src = f"calibrated on {len(usable)} measured cells"
    after_profile, figures = _calibrated(base, params, theta, src)
    cells = []
    for r, _ in usable:
        before, after = project_one(r, base), project_one(r, after_profile)
        cells.append(CellError(r.cell_id, r.cell.precision, r.cell.runner, r.cell.batch_size,
                               float(r.latency_ms.median), before.latency_ms, after.latency_ms))
    loo: list[float] = []
    if leave_one_out and 3 <= len(usable) <= 300:
        for i, (r, _) in enumerate(usable):
            keep = np.arange(len(usable)) != i
            th = _fit(design.subset(keep), measured[keep], prior, weight)  # what only this cell informs stays put
            pred = project_one(r, _calibrated(base, params, th, src)[0]).latency_ms
            loo.append((pred - measured[i] * 1e3) / (measured[i] * 1e3) * 100.0)
    if len(loo) >= 5:  # the prediction interval later projections carry: LOO measured / projected
        ratios = np.sort(1.0 / (1.0 + np.array(loo) / 100.0))
        figures["error_band"] = {"low": float(np.quantile(ratios, 0.1)), "high": float(np.quantile(ratios, 0.9)),
                                 "source": f"10th-90th percentile of measured / projected over {len(loo)} cells, "
                                           "each left out of the calibration that projected it"}
        after_profile = apply_figures(base, figures, src)
    node_mean = [v for d in figures["node_overhead_by_runner"].values() for v in d.values()]
    eff = figures["compute_by"]
    report = CalibrationReport(base.id, cells, statistics.geometric_mean(eff.values()) if eff else 1.0,
                               figures["memory"], eff, statistics.median(node_mean) if node_mean else 0.0,
                               skipped, loo, call_overhead_by_runner=figures["call_overhead_by_runner"],
                               node_overhead_by_runner=figures["node_overhead_by_runner"],
                               error_band=figures.get("error_band"), memory_by=figures["memory_by"])
    if write:
        report.written_to = str(_write(cache_dir, report, len(usable)))
    return report


def _write(cache_dir: Path | None, report: CalibrationReport, n: int) -> Path:
    import json

    from effbench.devices.detect import CACHE_VERSION
    path = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / CALIBRATION_FILE
    data = {"version": CACHE_VERSION, "fingerprint": fingerprint(detect()),
            "calibrated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "cells": n,
            "compute": report.compute, "memory": report.memory, "memory_by": report.memory_by,
            "compute_by": report.compute_by,
            "per_op_overhead_s": report.per_op_overhead_s,
            "call_overhead_by_runner": report.call_overhead_by_runner,
            "node_overhead_by_runner": report.node_overhead_by_runner, "error_band": report.error_band,
            "mdape_before": report.mdape_before, "mdape_after": report.mdape_after}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
    except OSError as e:
        raise UserError(f"cannot write the calibration: {e.strerror or e}", file=path,
                        fix="make the cache folder writable or pass another --cache-dir") from None
    return path


def headline_pair() -> tuple[str, ...]:
    """The reference precision and the 8-bit integer one (weights and activations), from the registry."""
    from effbench.variants.specs import PRECISIONS, reference_precision
    eight = [s.name for s in PRECISIONS.values() if s.weight_bits == 8 and s.activation_bits == 8]
    return (reference_precision(), *eight[:1])
