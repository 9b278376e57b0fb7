"""Roofline projection of a measured record onto device profiles: latency, energy, memory fit.

latency = max(MACs x 2 / (peak ops/s x compute derate), bytes moved / (bandwidth x memory derate))
          + nodes x per-op overhead.  Always labelled "projected"; never raises for a well-formed record.
"""
from __future__ import annotations

import math
from typing import Any

from effbench.devices.profile import OPS_PER_MAC, Profile
from effbench.errors import UserError
from effbench.record import Projection, Record


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        return None
    return float(v)


def _base(profile: Profile) -> dict[str, Any]:
    return {"status": "no-data", "reason": None, "latency_ms": None, "energy_mj": None,
            "energy_source": f"projected:{profile.id}", "fits": None, "shortfall_bytes": None,
            "bound": None, "label": "projected"}


def work_per_call(record: Record) -> dict[str, float | None] | str:
    """Work figures for one call at the cell's batch size, or the reason they are missing.

    model_stats figures are counted on the graph with its batch axis bound; `model_stats.batch_size`
    names that batch when it differs from the cell's (absent: the cell's own batch size).
    """
    stats = record.model_stats
    if stats is None:
        return "no model_stats (the work counter did not run)"
    batch = _num(record.cell.batch_size) or 1.0
    counted_at = _num(stats.batch_size) or batch
    scale = batch / counted_at
    macs, moved = _num(stats.macs), _num(stats.bytes_moved)
    missing = [k for k, v in (("macs", macs), ("bytes_moved", moved)) if v is None]
    if missing:
        return f"model_stats lacks {' and '.join(missing)} (the work counter did not run or failed)"
    acts = _num(stats.activation_bytes)
    weights = _num(stats.weight_bytes)
    if weights is None:
        weights = _num(stats.size_bytes)
    return {"batch": batch, "macs": macs * scale, "bytes_moved": moved * scale,
            "weight_bytes": weights, "activation_bytes": acts * scale if acts is not None else None,
            "nodes": _num(stats.nodes)}


def project_one(record: Record, profile: Profile) -> Projection:
    return Projection.from_json(_project(record, profile))


def _project(record: Record, profile: Profile) -> dict[str, Any]:
    if record.status != "ok":
        return {**_base(profile),
                "reason": f"the cell did not run ({record.status}: {record.reason or 'no reason given'})"}
    work = work_per_call(record)
    if isinstance(work, str):
        return {**_base(profile), "reason": work}
    out = _project_work(work, record.cell.precision, record.cell.runner, profile, emulated=record.emulated)
    if out["status"] == "ok" and profile.describes(record) and record.latency_ms and _num(record.latency_ms.median):
        measured = record.latency_ms.median
        out["measured_latency_ms"] = measured
        out["error_pct"] = (out["latency_ms"] - measured) / measured * 100.0
        if record.emulated:
            out["reason"] = "; ".join(x for x in (out["reason"], "emulated variant: measured latency is of the "
                                                  "dequantized run") if x)
    return out


def project_work(work: dict[str, float | None], precision: str, runner: str | None, profile: Profile) -> Projection:
    """One call's work (`work_per_call`'s keys: batch, macs, bytes_moved, weight_bytes, activation_bytes,
    nodes) projected onto `profile`: what `effbench profiles check` does with a published reference."""
    return Projection.from_json(_project_work(work, precision, runner, profile))


def _project_work(work: dict[str, Any], precision: str, runner: str | None, profile: Profile, *,
                  emulated: bool = False) -> dict[str, Any]:
    out = _base(profile)
    notes: list[str] = []

    # memory fit: weights + activations against the device's memory (weights in flash on an MCU)
    fits, shortfall = _fit(profile, work, notes)
    out["fits"], out["shortfall_bytes"] = fits, shortfall

    if precision not in profile.peak_ops and precision not in profile.peak_ops_by_runner.get(runner or "", {}):
        out["status"] = "unsupported"
        declared = ", ".join(profile.peak_ops)
        out["reason"] = (f"{profile.id} cannot run {precision or 'this precision'} (declares {declared})"
                         + ("; this variant ran emulated (dequantized) here" if emulated else ""))
        return out
    peak = profile.peak_ops_per_s(precision, runner)
    if not peak:
        out["reason"] = (f"{profile.id} runs {precision} but publishes no throughput for it: "
                         f"{profile.peak_ops[precision].unpublished}")  # type: ignore[index]
        return out

    dc = profile.compute_derate(precision, runner)
    dm = profile.derate.memory.value
    bandwidth = profile.memory.bandwidth_bytes_per_s.value
    m = profile.memory
    working = (work["weight_bytes"] or 0) + (work["activation_bytes"] or 0)
    if (m.sram_bytes and m.sram_bandwidth_bytes_per_s and work["weight_bytes"] is not None
            and working <= m.sram_bytes.value):
        bandwidth = m.sram_bandwidth_bytes_per_s.value
        notes.append("working set fits on-chip memory: on-chip bandwidth used")
    compute_s = work["macs"] * OPS_PER_MAC / (peak * dc)
    memory_s = work["bytes_moved"] / (bandwidth * dm) if bandwidth > 0 else math.inf
    if work["nodes"] is None:
        overhead_s = 0.0
        if profile.per_op_overhead_s.value > 0:
            notes.append("model_stats lacks nodes: per-op overhead left out")
    else:
        overhead_s = work["nodes"] * profile.per_op_overhead_s.value
    latency_s = max(compute_s, memory_s) + overhead_s
    if not math.isfinite(latency_s):
        out["reason"] = f"{profile.id} declares zero memory bandwidth"
        return out
    out.update(status="ok", latency_ms=latency_s * 1e3, bound="compute" if compute_s >= memory_s else "memory",
               compute_ms=compute_s * 1e3, memory_ms=memory_s * 1e3, overhead_ms=overhead_s * 1e3,
               batch_size=int(work["batch"]), precision=precision)
    if not fits and fits is not None:
        notes.append(f"does not fit: {shortfall:.0f} bytes short")

    busy = max(compute_s, memory_s) / latency_s if latency_s > 0 else None
    energy, why, extra = _energy(profile, precision, work, latency_s, busy)
    out["energy_mj"] = energy
    out.update(extra)
    if why:
        notes.append(why)
    out["reason"] = "; ".join(notes) or None
    return out


def _fit(profile: Profile, work: dict[str, Any], notes: list[str]) -> tuple[bool | None, float | None]:
    m = profile.memory
    weights, acts = work["weight_bytes"], work["activation_bytes"]
    if weights is None and acts is None:
        notes.append("model_stats lacks weight_bytes and activation_bytes: memory fit unknown")
        return None, None
    if weights is None or acts is None:
        notes.append(f"model_stats lacks {'weight_bytes' if weights is None else 'activation_bytes'}: "
                     "memory fit checked on the rest")
    weights, acts = weights or 0.0, acts or 0.0
    if m.flash_bytes is not None and m.capacity_bytes is not None:
        short = max(0.0, weights - m.flash_bytes.value) + max(0.0, acts - m.capacity_bytes.value)
    elif m.capacity_bytes is not None:
        short = max(0.0, weights + acts - m.capacity_bytes.value)
    else:
        notes.append("no capacity declared (the device uses host memory): assumed to fit")
        return True, 0.0
    return short == 0.0, short


def _energy(profile: Profile, precision: str, work: dict[str, Any], latency_s: float,
            busy: float | None) -> tuple[float | None, str | None, dict[str, Any]]:
    """(system mJ per inference, why not, the dynamic part and the range in mJ). `busy`: the roofline's
    busy fraction of the projected time, the utilisation that sets the power between idle and load."""
    from effbench.measure.energy import modeled_energy
    model = profile.energy()
    if precision not in model.pj_per_mac:
        return None, f"energy not projected: the energy model has no pJ/MAC for {precision}", {}
    batch = work["batch"] or 1.0
    try:
        result = modeled_energy(macs=work["macs"] / batch, bytes_moved=work["bytes_moved"] / batch,
                                precision=precision, seconds_per_inference=latency_s / batch,
                                model=model, profile_id=profile.id, utilisation=busy)
    except (UserError, ValueError) as e:
        return None, f"energy not projected: {e}", {}
    extra: dict[str, Any] = {}
    if result.get("dynamic_j_per_inference") is not None:
        extra["dynamic_energy_mj"] = result["dynamic_j_per_inference"] * 1e3
    if result.get("range_j"):
        extra["energy_range_mj"] = [x * 1e3 if x is not None else None for x in result["range_j"]]
    j = result.get("j_per_inference")
    if j is None:
        return None, "energy not projected: " + str(result.get("reason") or "the energy model returned none"), extra
    extra["avg_power_w"] = result.get("avg_power_w")
    return float(j) * 1e3, None, extra


def project_record(record: Record, profiles: list[Profile]) -> dict[str, Projection]:
    """{profile_id: projection} for one record; `energy_mj` is per inference (one item of the batch),
    `latency_ms` per call at the cell's batch size (the same unit as the measured median)."""
    return {p.id: project_one(record, p) for p in profiles}
