"""Published measurements against projections (`effbench profiles check`): each shipped profile's
`references` (a standard model run on the real device, with its source and quote) are projected with
the profile and compared; leave-one-out says how well a calibration on the others predicts each one.

Work comes from the zoo's random-weight copy of the architecture (`effbench.models.standard`), exported
and counted at the reference's batch size; a reference at int8 moves its weights and activations at
the precision's registered bit widths (the count itself is on the FP32 graph).
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from effbench.devices.profile import Profile, Reference


@dataclass(frozen=True)
class ReferenceCheck:
    profile: str
    kind: str
    ref: Reference
    projected_s: float | None            # per inference, with the profile as shipped
    reason: str | None = None            # why there is no projection
    loo_s: float | None = None           # per inference, after calibrating on the other references
    power_w: float | None = None         # the projection's implied average power (system energy / time)
    power_bounds: tuple[float | None, float | None] = (None, None)   # the profile's idle and load power

    @property
    def published_s(self) -> float:
        return self.ref.seconds_per_inference

    @property
    def factor(self) -> float | None:
        """projected / published: above 1 projects too slow, below 1 too fast."""
        return self.projected_s / self.published_s if self.projected_s else None

    @property
    def loo_factor(self) -> float | None:
        return self.loo_s / self.published_s if self.loo_s else None


def _fold(f: float | None) -> float | None:
    """How far off, whichever way: 2.0 for both half and double."""
    return max(f, 1 / f) if f else None


@dataclass
class CheckReport:
    checks: list[ReferenceCheck]
    calibration: dict[str, float] = field(default_factory=dict)   # profile -> latency scale fitted on its references

    def power_outside(self) -> list[ReferenceCheck]:
        """Projections whose implied power lies outside the profile's published idle..load range."""
        return [c for c in self.checks if c.power_w is not None and c.power_bounds[0] is not None
                and not (c.power_bounds[0] - 1e-9 <= c.power_w <= (c.power_bounds[1] or math.inf) + 1e-9)]

    def bands(self) -> dict[str, tuple[float, float] | None]:
        """10th-90th percentile of published / projected: as shipped uncalibrated, and leave-one-out
        calibrated (the prediction interval a profile's `error_band` states)."""
        def band(xs: list[float]) -> tuple[float, float] | None:
            return (float(np.quantile(xs, 0.1)), float(np.quantile(xs, 0.9))) if len(xs) >= 3 else None
        return {"uncalibrated": band([1 / c.factor for c in self.checks if c.factor]),
                "leave_one_out": band([1 / c.loo_factor for c in self.checks if c.loo_factor])}

    def summary(self) -> dict[str, float | int | None]:
        raw = [_fold(c.factor) for c in self.checks if c.factor]
        loo = [_fold(c.loo_factor) for c in self.checks if c.loo_factor]
        return {"references": len(self.checks), "projected": len(raw),
                "profiles": len({c.profile for c in self.checks if c.factor}),
                "median_factor": statistics.median(raw) if raw else None,
                "max_factor": max(raw) if raw else None,
                "loo_median_factor": statistics.median(loo) if loo else None,
                "loo_max_factor": max(loo) if loo else None,
                "with_power": sum(c.power_w is not None for c in self.checks),
                "power_outside_idle_load": len(self.power_outside())}

    def to_json(self) -> dict:
        return {"summary": self.summary(), "bands": self.bands(), "calibration_scale": self.calibration,
                "checks": [{"profile": c.profile, "model": c.ref.model, "batch": c.ref.batch,
                            "precision": c.ref.precision, "runtime": c.ref.runtime, "scenario": c.ref.scenario,
                            "published_ms_per_inference": c.published_s * 1e3,
                            "projected_ms_per_inference": c.projected_s * 1e3 if c.projected_s else None,
                            "projected_over_published": c.factor,
                            "loo_ms_per_inference": c.loo_s * 1e3 if c.loo_s else None,
                            "loo_over_published": c.loo_factor, "implied_power_w": c.power_w,
                            "idle_w": c.power_bounds[0], "load_w": c.power_bounds[1],
                            "reason": c.reason, "source": c.ref.source}
                           for c in self.checks]}

    def text(self) -> str:
        lines = [f"{'profile':<22} {'model':<13} {'b':>4} {'prec':<5} {'published':>11} {'projected':>11} "
                 f"{'x':>7} {'LOO':>11} {'x':>7}  runtime"]
        for c in self.checks:
            def ms(s: float | None) -> str:
                return f"{s * 1e3:.4g} ms" if s else "-"
            fx = f"{c.factor:.2f}" if c.factor else "-"
            lx = f"{c.loo_factor:.2f}" if c.loo_factor else "-"
            lines.append(f"{c.profile:<22} {c.ref.model:<13} {c.ref.batch:>4} {c.ref.precision:<5} "
                         f"{ms(c.published_s):>11} {ms(c.projected_s):>11} {fx:>7} {ms(c.loo_s):>11} {lx:>7}  "
                         f"{c.ref.runtime}" + (f"  ({c.reason})" if c.reason else ""))
        s = self.summary()
        if s["median_factor"]:
            lines.append(f"\n{s['projected']} of {s['references']} references on {s['profiles']} profiles: projected "
                         f"vs published off by a median factor of {s['median_factor']:.2f} (worst {s['max_factor']:.1f}); "
                         + (f"calibrated on the others (leave-one-out): median {s['loo_median_factor']:.2f}, worst "
                            f"{s['loo_max_factor']:.1f}" if s["loo_median_factor"] else "too few references for "
                            "leave-one-out"))
        for name, b in self.bands().items():
            if b:
                lines.append(f"published / projected, 10th-90th percentile ({name.replace('_', '-')}): "
                             f"{b[0]:.2f} to {b[1]:.2f}")
        powered = [c for c in self.checks if c.power_w is not None]
        if powered:
            lines.append(f"implied average power of the projections: {len(powered) - len(self.power_outside())} of "
                         f"{len(powered)} between the profile's published idle and load power ("
                         + ", ".join(f"{c.profile} {c.power_w:.3g} W in [{c.power_bounds[0]:g}, {c.power_bounds[1]:g}]"
                                     for c in powered) + ")")
        for pid, scale in sorted(self.calibration.items()):
            lines.append(f"  {pid}: its references say its uncalibrated projections run x{scale:.3g} (the "
                         f"latency scale a calibration on them applies: derate {1 / scale:.3g})")
        lines.append("published figures, their sources and quotes: `effbench profiles show ID`")
        return "\n".join(lines)


def reference_work(model: str, batch: int, precision: str, cache_dir: Path) -> dict[str, float | None]:
    """Work of one call of zoo `model` at `batch`, bytes at `precision`'s registered bit widths."""
    from effbench.config.suite import ModelSpec
    from effbench.measure.flops import count_work
    from effbench.models.sources import prepare
    from effbench.variants.specs import bits
    art = prepare(ModelSpec.model_validate({"id": model, "source": {"builtin": model}}), 0, base_dir=Path.cwd(),
                  suite_file="<profiles check>", cache_dir=cache_dir)
    w = count_work(art.onnx_path, batch_size=batch, dims=art.dims)
    wbits, abits = bits(precision) or (32, 32)
    weights = w.weight_bytes * wbits / 32
    acts = w.activation_bytes * abits / 32
    moved = weights + max(0, w.bytes_moved - w.weight_bytes) * abits / 32
    node_work = [[c, float(m), wb * wbits / 32, ab * abits / 32, float(n)] for c, m, wb, ab, n in w.node_work]
    whole = sum(m * n for _, m, _, _, n in node_work) == w.macs
    return {"batch": float(batch), "macs": float(w.macs), "bytes_moved": moved, "weight_bytes": weights,
            "activation_bytes": acts, "nodes": float(w.nodes), "node_work": node_work if whole else None}


def check_references(profiles: list[Profile], cache_dir: Path) -> CheckReport:
    """Project every reference of `profiles` with the profile's peaks and no derate (uncalibrated), then
    leave each out: calibrated on the same device's other references where it has some, else on the
    median over every other reference (a device with one published figure borrows the others')."""
    from effbench.devices.profile import Derate
    from effbench.devices.project import project_work
    work_cache: dict[tuple, dict] = {}
    checks: list[ReferenceCheck] = []
    for shipped in profiles:
        p = shipped.with_derate(Derate())
        for ref in p.references:
            key = (ref.model, ref.batch, ref.precision)
            if key not in work_cache:
                work_cache[key] = reference_work(ref.model, ref.batch, ref.precision, cache_dir)
            proj = project_work(work_cache[key], ref.precision, None, p)
            s = proj.latency_ms / 1e3 / ref.batch if proj.status == "ok" and proj.latency_ms else None
            load = p.power.load_w or p.power.tdp_w
            checks.append(ReferenceCheck(p.id, p.kind, ref, s, None if s else (proj.reason or proj.status),
                                         power_w=proj.avg_power_w,
                                         power_bounds=(p.power.idle_w.value if p.power.idle_w else None,
                                                       load.value if load else None)))
    logs = [math.log(c.published_s / c.projected_s) if c.projected_s else None for c in checks]
    out = []
    for i, c in enumerate(checks):
        if c.projected_s is None:
            out.append(c)
            continue
        own = [logs[j] for j, o in enumerate(checks) if j != i and logs[j] is not None and o.profile == c.profile]
        others = own or [logs[j] for j in range(len(checks)) if j != i and logs[j] is not None]
        loo = c.projected_s * math.exp(statistics.median(others)) if others else None
        out.append(dataclasses.replace(c, loo_s=loo))
    scale = {}
    for pid in dict.fromkeys(c.profile for c in checks):
        own = [logs[i] for i, c in enumerate(checks) if c.profile == pid and logs[i] is not None]
        if own:
            scale[pid] = math.exp(statistics.median(own))
    return CheckReport(out, scale)
