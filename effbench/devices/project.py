"""Roofline projection of a measured record onto device profiles: latency, energy, memory fit.

latency = max(sum over classes of op (conv, matmul) of MACs x 2 / (peak ops/s x compute derate),
              bytes moved / (bandwidth x memory derate))
          + one call's overhead + sum over classes of nodes x per-node overhead;
node by node where the profile knows its on-chip bandwidth (the local profile measures it) and the
record has `model_stats.node_work`: sum over nodes of max(the node's MACs at its class's peak, its bytes
at the bandwidth of where they fit) + its per-node overhead, + one call's overhead.
The peak of a class is the runner's own where the profile measured it (the local profile times each
runtime's convolution and matrix-product kernels). Always labelled "projected"; never raises for a
well-formed record.
"""
from __future__ import annotations

import math
from typing import Any

from effbench.devices.llm_roofline import (  # noqa: F401  (re-exported: the generation projection's arithmetic)
    DECODER_OPS_PER_FORWARD,
    DECODER_OPS_PER_LAYER,
    GenerationTimes,
    generation_times,
)
from effbench.devices.profile import OPS_PER_MAC, Profile
from effbench.errors import UserError
from effbench.results.record import Projection, Record

# ONNX operator types by class of op (model_stats.by_op counts them): a runtime's convolution kernels
# reach another rate than its matrix products; everything else is per-node cost and data movement.
CONV_OPS = frozenset({"Conv", "ConvInteger", "QLinearConv", "ConvTranspose"})
OP_CLASSES = ("conv", "matmul", "other")


def op_class(op_type: str, macs: float) -> str:
    return "conv" if op_type in CONV_OPS else "matmul" if macs else "other"


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
    by_class = {"macs": dict.fromkeys(OP_CLASSES, 0.0), "nodes": dict.fromkeys(OP_CLASSES, 0.0)}
    for op, row in (stats.by_op or {}).items():
        if isinstance(row, dict):
            k = op_class(op, _num(row.get("macs")) or 0.0)
            by_class["macs"][k] += (_num(row.get("macs")) or 0.0) * scale
            by_class["nodes"][k] += _num(row.get("count")) or 0.0
    counted = sum(by_class["macs"].values())
    split = counted > 0 and abs(counted - macs * scale) <= 1e-6 * macs * scale
    node_work = [[c, float(m) * scale, float(w), float(a) * scale, float(n)] for c, m, w, a, n in stats.node_work
                 if c in OP_CLASSES]
    node_macs = sum(m * n for _, m, _, _, n in node_work)
    return {"batch": batch, "macs": macs * scale, "bytes_moved": moved * scale,
            # the node-by-node roofline's input, where it accounts for every MAC
            "node_work": node_work if node_work and abs(node_macs - macs * scale) <= 1e-6 * max(macs * scale, 1) else None,
            "weight_bytes": weights, "activation_bytes": acts * scale if acts is not None else None,
            "nodes": _num(stats.nodes),
            # by class of op where model_stats.by_op accounts for every MAC; else all MACs count as matmul
            "macs_by_class": by_class["macs"] if split else None,
            "nodes_by_class": by_class["nodes"] if split else None}


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

    dm = profile.memory_derate(runner)
    bandwidth = profile.memory.bandwidth_bytes_per_s.value
    m = profile.memory
    working = (work["weight_bytes"] or 0) + (work["activation_bytes"] or 0)
    if (m.sram_bytes and m.sram_bandwidth_bytes_per_s and work["weight_bytes"] is not None
            and working <= m.sram_bytes.value):
        bandwidth = m.sram_bandwidth_bytes_per_s.value
        notes.append("working set fits on-chip memory: on-chip bandwidth used")
    overhead_s = profile.call_overhead_s(runner)
    if work.get("node_work") and m.sram_bytes and m.sram_bandwidth_bytes_per_s and bandwidth > 0:
        # node by node: each node is compute- or memory-bound on its own, then they add up. Only where
        # the profile knows its on-chip bandwidth: intermediates costed at the DRAM rate would be wrong
        # (they stay in caches or on chip), so profiles without it keep the whole-graph roofline.
        compute_s, memory_s, busy_s, node_s = node_roofline(work["node_work"], precision, runner, profile, peak)
        overhead_s += node_s
        notes = [n for n in notes if not n.startswith("working set fits")]
    else:
        macs_by = work.get("macs_by_class") or {"matmul": work["macs"]}
        compute_s = sum(m * OPS_PER_MAC / ((profile.peak_ops_per_s(precision, runner, k) or peak)
                                           * profile.compute_derate(precision, runner, k))
                        for k, m in macs_by.items() if m)
        memory_s = work["bytes_moved"] / (bandwidth * dm) if bandwidth > 0 else math.inf
        busy_s = max(compute_s, memory_s)
        if work.get("nodes_by_class"):
            overhead_s += sum(n * profile.node_overhead_s(runner, k) for k, n in work["nodes_by_class"].items())
        elif work["nodes"] is None:
            if profile.per_op_overhead_s.value > 0:
                notes.append("model_stats lacks nodes: per-op overhead left out")
        else:
            overhead_s += work["nodes"] * profile.per_op_overhead_s.value
    latency_s = busy_s + overhead_s
    if not math.isfinite(latency_s):
        out["reason"] = f"{profile.id} declares zero memory bandwidth"
        return out
    if profile.error_band is not None:
        out["latency_band_ms"] = [latency_s * 1e3 * profile.error_band.low, latency_s * 1e3 * profile.error_band.high]
        out["band_source"] = profile.error_band.source
    out.update(status="ok", latency_ms=latency_s * 1e3, bound="compute" if compute_s >= memory_s else "memory",
               compute_ms=compute_s * 1e3, memory_ms=memory_s * 1e3, overhead_ms=overhead_s * 1e3,
               batch_size=int(work["batch"]), precision=precision)
    if not fits and fits is not None:
        notes.append(f"does not fit: {shortfall:.0f} bytes short")

    busy = busy_s / latency_s if latency_s > 0 else None
    energy, why, extra = _energy(profile, precision, work, latency_s, busy)
    out["energy_mj"] = energy
    out.update(extra)
    if why:
        notes.append(why)
    out["reason"] = "; ".join(notes) or None
    return out


def node_roofline(node_work: list[list], precision: str, runner: str | None, profile: Profile,
                  peak: float) -> tuple[float, float, float, float]:
    """(compute s, memory s, busy s, per-node overhead s) of one call, node by node: a node takes the
    longer of its MACs at its class's peak and its bytes at the bandwidth of where they fit (on-chip
    when the node's bytes fit the on-chip memory), plus its class's per-node overhead."""
    m = profile.memory
    dm = profile.memory_derate(runner)
    dram = m.bandwidth_bytes_per_s.value
    sram_bytes = m.sram_bytes.value if m.sram_bytes and m.sram_bandwidth_bytes_per_s else 0.0
    sram = m.sram_bandwidth_bytes_per_s.value if sram_bytes else dram
    rate = {k: (profile.peak_ops_per_s(precision, runner, k) or peak) * profile.compute_derate(precision, runner, k)
            for k in ("conv", "matmul")}
    compute = memory = busy = overhead = 0.0
    for cls, macs, wbytes, abytes, n in node_work:
        c = macs * OPS_PER_MAC / rate[cls] if macs and cls in rate else 0.0
        b = wbytes + abytes
        mem = b / ((sram if b <= sram_bytes else dram) * dm)
        compute += n * c
        memory += n * mem
        busy += n * max(c, mem)
        overhead += n * profile.node_overhead_s(runner, cls)
    return compute, memory, busy, overhead


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


# ---- generative cells: TTFT and TPOT ----
GENERATION_MODEL = ("modelled: TTFT = max(prefill MACs x 2 / (peak x derate), weight bytes / (bandwidth x derate)) "
                    "+ one forward's overhead; TPOT = max(bytes one decode step reads / (bandwidth x derate), its MACs "
                    "x 2 / (peak x derate)) + one forward's overhead (the call's, plus per-op x the decoder's ops); the "
                    "peak is the kernel's arithmetic precision's")


def project_generation(record: Record, profiles: list[Profile]) -> dict[str, Projection]:
    """{profile_id: projection} of a generative (single-stream) record: TTFT (prefill, compute-bound) and
    TPOT (decode at batch 1, bandwidth-bound) projected onto each profile, in `extra` with their bands;
    `latency_ms` is the request's end to end (TTFT + (new tokens - 1) x TPOT), the unit of the record's
    measured latency. Every figure is modelled, and the error band (fitted on the profile's CNN
    references) is applied as such."""
    return {p.id: Projection.from_json(_project_generation(record, p)) for p in profiles}


def _project_generation(record: Record, profile: Profile) -> dict[str, Any]:
    out = _base(profile)
    g = record.generation
    if record.status != "ok":
        return {**out, "reason": f"the cell did not run ({record.status}: {record.reason or 'no reason given'})"}
    if g is None or not g.prefill_macs or not g.decode_macs_per_token or not g.decode_bytes_per_token \
            or not g.weight_bytes or not g.layers:
        return {**out, "reason": "the generation section lacks the work counts (prefill and decode MACs, bytes per "
                                 "decode step, weights, layers) the projection needs"}
    runner = record.cell.runner
    precision = g.kernel.get("compute_precision") or record.cell.precision
    fits, shortfall = _fit(profile, {"weight_bytes": float(g.weight_bytes),
                                     "activation_bytes": float(g.kv_cache_bytes_analytic or 0)}, [])
    out["fits"], out["shortfall_bytes"] = fits, shortfall
    times = generation_times(profile, precision, runner, layers=g.layers, prefill_macs=g.prefill_macs,
                             weight_bytes=g.weight_bytes, decode_macs_per_token=g.decode_macs_per_token,
                             decode_bytes_per_token=g.decode_bytes_per_token, compute=g.kernel.get("compute"))
    if isinstance(times, tuple):
        status, reason = times
        return {**out, "reason": reason, **({"status": status} if status == "unsupported" else {})}
    overhead_s = times.overhead_s
    pre_c, pre_m = times.prefill_compute_s, times.prefill_memory_s
    dec_c, dec_m = times.decode_compute_s, times.decode_memory_s
    ttft_s, tpot_s = times.ttft_s, times.tpot_s
    e2e_s = ttft_s + (g.new_tokens - 1) * tpot_s
    extra: dict[str, Any] = {
        "ttft_ms": ttft_s * 1e3, "tpot_ms": tpot_s * 1e3, "decode_tokens_per_s": 1.0 / tpot_s,
        "ttft_bound": "compute" if pre_c >= pre_m else "memory", "tpot_bound": "memory" if dec_m >= dec_c else "compute",
        "overhead_per_forward_ms": overhead_s * 1e3, "compute_precision": precision, "model": GENERATION_MODEL}
    if profile.error_band is not None:
        lo, hi = profile.error_band.low, profile.error_band.high
        extra["ttft_band_ms"] = [ttft_s * 1e3 * lo, ttft_s * 1e3 * hi]
        extra["tpot_band_ms"] = [tpot_s * 1e3 * lo, tpot_s * 1e3 * hi]
        out["latency_band_ms"] = [e2e_s * 1e3 * lo, e2e_s * 1e3 * hi]
        from effbench.devices.llm_references import llm_reference_note
        out["band_source"] = (f"{profile.error_band.source} - fitted on CNN references, applied to a decoder LLM's "
                              f"TTFT and TPOT as modelled; {llm_reference_note(profile)}")
    if profile.describes(record):
        for k, measured in (("ttft", g.ttft_ms), ("tpot", g.tpot_ms)):
            if measured:
                extra[f"measured_{k}_ms"] = measured
                extra[f"{k}_error_pct"] = (extra[f"{k}_ms"] - measured) / measured * 100.0
        if record.latency_ms and _num(record.latency_ms.median):
            out["measured_latency_ms"] = record.latency_ms.median
            out["error_pct"] = (e2e_s * 1e3 - record.latency_ms.median) / record.latency_ms.median * 100.0
    macs = g.prefill_macs + (g.new_tokens - 1) * g.decode_macs_per_token
    moved = g.weight_bytes + (g.new_tokens - 1) * g.decode_bytes_per_token
    busy = (max(pre_c, pre_m) + (g.new_tokens - 1) * max(dec_c, dec_m)) / e2e_s
    energy, why, energy_extra = _energy(profile, precision, {"batch": 1.0, "macs": macs, "bytes_moved": moved},
                                        e2e_s, busy)
    out.update(status="ok", latency_ms=e2e_s * 1e3, precision=precision, batch_size=1,
               bound=f"TTFT {extra['ttft_bound']}, TPOT {extra['tpot_bound']}",
               compute_ms=(pre_c + (g.new_tokens - 1) * dec_c) * 1e3,
               memory_ms=(pre_m + (g.new_tokens - 1) * dec_m) * 1e3, overhead_ms=g.new_tokens * overhead_s * 1e3,
               energy_mj=energy, energy_unit="one request", label="projected (modelled)",
               reason="; ".join(x for x in (why, None if fits is not False else
                                             f"does not fit: {shortfall:.0f} bytes short") if x) or None)
    out.update(energy_extra)
    out.update(extra)          # keys the Projection section does not name: they land in its `extra`
    return out
