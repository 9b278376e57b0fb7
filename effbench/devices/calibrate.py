"""Calibration: fit the local profile's derates (and per-op overhead) to measured cells, so the
projection error on this machine is known and smaller; the result is cached for later projections.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from effbench.devices.detect import CALIBRATION_FILE, default_cache_dir, detect, fingerprint, local_profile
from effbench.devices.profile import OPS_PER_MAC, Derate, Figure, Profile
from effbench.devices.project import project_one, work_per_call
from effbench.errors import UserError
from effbench.results import Record

PRIOR_WEIGHT = 1e-3  # pulls a factor no cell informs (e.g. memory when every cell is compute-bound) to its start


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
        return {"profile": self.profile_id, "compute": self.compute, "memory": self.memory,
                "compute_by": self.compute_by, "per_op_overhead_s": self.per_op_overhead_s,
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
            f"derates: memory {self.memory:.3g}, compute (all) {self.compute:.3g}; "
            + ", ".join(f"{k} {v:.3g}" for k, v in sorted(self.compute_by.items())),
            f"per-op overhead: {self.per_op_overhead_s * 1e6:.3g} us",
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
        elif not profile.peak_ops_per_s(str(prec)):
            skipped.append((r.cell_id, f"{profile.id} declares no {prec} throughput"))
        else:
            work = work_per_call(r)
            if isinstance(work, str):
                skipped.append((r.cell_id, work))
            else:
                usable.append((r, work))
    return usable, skipped


def _predict(theta: np.ndarray, X: dict[str, np.ndarray], n_groups: int) -> np.ndarray:
    dc = np.exp(theta[:n_groups])[X["group"]]
    dm = math.exp(theta[n_groups])
    o = math.exp(theta[n_groups + 1])
    return np.maximum(X["compute_s"] / dc, X["memory_s"] / dm) + X["nodes"] * o


def _fit(X: dict[str, np.ndarray], n_groups: int, o0: float) -> np.ndarray:
    lo0 = math.log(o0)
    prior0 = np.zeros(n_groups + 2)
    prior0[-1] = lo0
    y = np.log(X["measured_s"])

    def resid(theta: np.ndarray) -> np.ndarray:
        return np.concatenate([np.log(_predict(theta, X, n_groups)) - y, PRIOR_WEIGHT * (theta - prior0)])

    best = None
    # the max() makes the loss piecewise: start from a few points and keep the best
    for start_dc, start_o in ((0.0, lo0), (math.log(0.3), lo0), (0.0, lo0 - 3.0), (math.log(0.1), lo0 + 1.0)):
        x0 = prior0.copy()
        x0[:n_groups + 1] = start_dc
        x0[-1] = start_o
        sol = least_squares(resid, x0, method="trf", x_scale=1.0)
        if best is None or sol.cost < best.cost:
            best = sol
    return best.x


def calibrate(records: list[Record], *, cache_dir: Path | None = None, write: bool = True,
              profile: Profile | None = None, quick: bool = False, leave_one_out: bool = True) -> CalibrationReport:
    """Fit the local profile's compute derate per runner/precision, memory derate and per-op overhead
    (least squares on log latency) to measured ok cells; write them to the cache for later projections."""
    base = profile or local_profile(cache_dir=cache_dir, quick=quick, calibrated=False)
    base = base.with_derate(Derate())  # "before" is always the uncalibrated profile
    usable, skipped = _usable(records, base)
    if not usable:
        raise UserError("no measured cell can calibrate the local profile"
                        + (f" ({len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""),
                        fix="run a suite first (effbench run SUITE) and pass its results")
    groups = sorted({f"{r.cell.runner}/{r.cell.precision}" for r, _ in usable})
    gi = {g: i for i, g in enumerate(groups)}
    bw = base.memory.bandwidth_bytes_per_s.value
    X = {
        "group": np.array([gi[f"{r.cell.runner}/{r.cell.precision}"] for r, _ in usable]),
        "compute_s": np.array([w["macs"] * OPS_PER_MAC / base.peak_ops_per_s(r.cell.precision) for r, w in usable]),
        "memory_s": np.array([w["bytes_moved"] / bw for _, w in usable]),
        "nodes": np.array([w["nodes"] or 0.0 for _, w in usable]),
        "measured_s": np.array([r.latency_ms.median / 1e3 for r, _ in usable]),
    }
    o0 = base.per_op_overhead_s.value or 1e-6
    theta = _fit(X, len(groups), o0)
    compute_by = {g: float(math.exp(theta[gi[g]])) for g in groups}
    counts = np.bincount(X["group"], minlength=len(groups))
    compute_all = float(math.exp(np.average(theta[:len(groups)], weights=counts)))
    memory, overhead = float(math.exp(theta[len(groups)])), float(math.exp(theta[len(groups) + 1]))

    src = f"calibrated on {len(usable)} measured cells"
    after_profile = base.with_derate(
        Derate(compute=Figure(value=compute_all, source=src, derived=True),
               memory=Figure(value=memory, source=src, derived=True),
               compute_by={g: Figure(value=v, source=src, derived=True) for g, v in compute_by.items()}),
        Figure(value=overhead, source=src, derived=True))
    cells = []
    for r, _ in usable:
        before, after = project_one(r, base), project_one(r, after_profile)
        cells.append(CellError(r.cell_id, r.cell.precision, r.cell.runner,
                               r.cell.batch_size, float(r.latency_ms.median),
                               before.latency_ms, after.latency_ms))
    loo: list[float] = []
    if leave_one_out and 3 <= len(usable) <= 300:
        for i in range(len(usable)):
            keep = np.arange(len(usable)) != i
            Xi = {k: v[keep] for k, v in X.items()}
            th = _fit(Xi, len(groups), o0)
            pred = _predict(th, {k: v[i:i + 1] for k, v in X.items()}, len(groups))[0]
            loo.append((pred - X["measured_s"][i]) / X["measured_s"][i] * 100.0)
    report = CalibrationReport(base.id, cells, compute_all, memory, compute_by, overhead, skipped, loo)
    if write:
        report.written_to = str(_write(cache_dir, report, len(usable)))
    return report


def _write(cache_dir: Path | None, report: CalibrationReport, n: int) -> Path:
    import json
    from effbench.devices.detect import CACHE_VERSION
    path = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / CALIBRATION_FILE
    data = {"version": CACHE_VERSION, "fingerprint": fingerprint(detect()),
            "calibrated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "cells": n,
            "compute": report.compute, "memory": report.memory, "compute_by": report.compute_by,
            "per_op_overhead_s": report.per_op_overhead_s,
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
