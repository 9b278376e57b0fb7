"""The mixed-precision advisor (issue 15): candidates guided by the per-layer sensitivity (int8 everywhere,
then the k most fragile layers kept in FP32; and the uniform FP16 graph), each **measured**: its quality
on the inputs, and its latency paired with FP32 in one worker (alternating blocks, as every effbench
comparison). The plan is the candidate that meets the quality floor at the lowest objective: measured
latency; the size of the graph as shipped; or energy per inference from the machine's stated energy
model (`energy_per_inference`) at the candidate's measured latency. Runs in a worker; `effbench advise`
writes plan.json and the chosen graph.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

MAX_KEPT = 6  # the k most fragile layers kept in FP32: 0..MAX_KEPT candidates
OBJECTIVES = ("latency", "energy", "size")


def energy_per_inference(layers: dict[str, str], layer_macs: dict[str, float], other_macs: float,
                         weight_bytes: float, activation_bytes: float, seconds: float | None,
                         model: dict[str, Any]) -> dict[str, Any]:
    """Modeled energy of one inference of a candidate: dynamic = each layer's MACs x the pJ/MAC of the
    precision it runs in (MACs outside the listed layers at FP32) + (stored weight bytes + activation
    bytes) x pJ/DRAM byte; system = idle W x the measured time + dynamic, where the machine's profile
    gives an idle power (else absent, with the reason: the arithmetic alone is a small part of what a
    chip draws). `model`: pj_per_mac {precision: pJ}, pj_per_dram_byte, idle_w, source."""
    from effbench.variants.specs import reference_precision
    pj = model["pj_per_mac"]
    ref = reference_precision()
    compute = sum(m * pj.get(layers.get(n, ref), pj[ref]) for n, m in layer_macs.items()) + other_macs * pj[ref]
    dynamic_j = (compute + (weight_bytes + activation_bytes) * model["pj_per_dram_byte"]) * 1e-12
    out: dict[str, Any] = {"dynamic_j": dynamic_j, "source": model["source"]}
    idle = model.get("idle_w")
    if idle and seconds:
        out["system_j"] = idle * seconds + dynamic_j
    else:
        out["system_j"] = None
        out["reason"] = ("the machine's profile gives no idle power: only the dynamic part (arithmetic and DRAM "
                         "traffic) is modeled" if not idle else "no measured latency")
    return out


def _quality(path: str, inputs: dict[str, np.ndarray], labels, ref: np.ndarray, ref_metric: float) -> dict[str, Any]:
    from effbench.analysis.sensitivity import graph_outputs, score
    s = score(graph_outputs(path, inputs), ref, labels, ref_metric)
    return {"metric": s.metric, "relative_quality": s.metric / ref_metric if ref_metric else None,
            "sqnr_db": s.sqnr_db, "cosine": s.cosine}


def advise(onnx_path: str, inputs: dict[str, np.ndarray], labels, method: str, calibration, ranking: list[str],
           layers: list[str], out_dir: str, *, floor: float, batch_size: int, budget: dict, threads: int = 1,
           op_types: list[str] | None = None, samples: int = 256, seed: int = 0, objective: str = "latency",
           layer_macs: dict[str, float] | None = None, energy_model: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build, score and time the candidates; return the plan (see module docstring)."""
    from effbench.analysis.sensitivity import graph_outputs, score
    from effbench.variants.integer import clean_copy
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = clean_copy(onnx_path, out / "fp32.onnx")
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    ref = graph_outputs(src, inputs)
    ref_metric = score(ref, ref, labels, 0.0).metric
    scored = lambda path: _quality(path, inputs, labels, ref, ref_metric)  # noqa: E731
    candidates, search, not_built = _candidates(src, out, scored, method, calibration if method == "static" else None,
                                                ranking, layers, floor, samples, op_types)
    feeds = {k: np.ascontiguousarray(v[:batch_size]) for k, v in inputs.items()}
    fp32_ms = _time_candidates(src, candidates, feeds, budget, threads, seed, floor)
    if energy_model is not None:
        _energies(candidates, src, fp32_ms, batch_size, layer_macs or {}, energy_model)
    plan: dict[str, Any] = {
        "floor": floor, "objective": objective, "method": method, "fp32_metric": ref_metric,
        "fp32_latency_ms": fp32_ms, "batch_size": batch_size,
        "timing": "each candidate against FP32 in alternating blocks in one worker (one round: the CI covers "
                  "one moment of the machine)",
        "candidates": {n: {k: v for k, v in c.items() if k != "path"} for n, c in candidates.items()},
        "search": search, "not_built": not_built}
    return _choose(plan, candidates, objective, floor, out)


def _candidates(src: str, out: Path, scored, method: str, calib, ranking: list[str], layers: list[str], floor: float,
                samples: int, op_types: list[str] | None) -> tuple[dict[str, dict], dict, dict[str, str]]:
    """The candidates, built and scored (not yet timed): int8 keeping the 0..MAX_KEPT most fragile layers FP32
    (and the fewest that meet the floor, searched beyond), uniform fp16 and int4 weight-only."""
    import onnx

    from effbench.variants.floating import fp16_graph
    from effbench.variants.integer import quantize_onnx_int8
    candidates: dict[str, dict[str, Any]] = {}

    def keep(k: int) -> dict[str, Any]:
        """int8 with the k most fragile layers kept FP32: built and scored (not yet timed)."""
        kept = ranking[:k]
        path = out / f"int8-keep{k}.onnx"
        quantize_onnx_int8(src, str(path), method, per_channel=True, calibration=calib, samples=samples,
                           op_types=op_types, nodes_to_exclude=kept)
        name = "int8" if k == 0 else f"int8, {k} layer{'s' if k > 1 else ''} kept FP32"
        c = {"path": str(path), "layers": {n: ("fp32" if n in kept else "int8") for n in layers}, "uniform": k == 0,
             "kept": k, **scored(str(path))}
        candidates[name] = c
        return c

    for k in range(0, min(MAX_KEPT, len(ranking)) + 1):
        keep(k)
    tried = min(MAX_KEPT, len(ranking))
    search, found = _search_kept(keep, floor, len(ranking), tried, list(candidates.values()))
    for n in [n for n, c in candidates.items() if c["kept"] > tried and c["kept"] != found]:
        del candidates[n]  # the search's misses were scored only; the one that meets the floor is timed
    fp16 = out / "fp16.onnx"
    onnx.save(fp16_graph(src, True), str(fp16))
    candidates["fp16"] = {"path": str(fp16), "layers": dict.fromkeys(layers, "fp16"), "uniform": True,
                          **scored(str(fp16))}
    not_built: dict[str, str] = {}
    int4 = _int4_candidate(src, out, layers)
    if isinstance(int4, str):
        not_built["int4"] = int4
    else:
        candidates["int4"] = {**int4, **scored(int4["path"])}
    for c in candidates.values():
        c["size_bytes"] = Path(c["path"]).stat().st_size
    return candidates, search, not_built


def _time_candidates(src: str, candidates: dict[str, dict], feeds: dict[str, np.ndarray], budget: dict,
                     threads: int, seed: int, floor: float) -> float:
    """Every candidate timed against FP32 in alternating blocks in this one worker: its paired speedup,
    latency and whether it meets the floor go into it; returns FP32's median ms."""
    from effbench.measure.latency import Budget, block_ratios, loop_overhead_ns, measure_interleaved
    from effbench.measure.stats import with_floor, within_one_round
    from effbench.runners.onnxruntime import cpu_session
    sessions = {"fp32": cpu_session(src, threads), **{n: cpu_session(c["path"], threads) for n, c in candidates.items()}}
    calls = {n: (lambda s=s: s.run(None, feeds)) for n, s in sessions.items()}
    timed = measure_interleaved(calls, Budget(**budget), overhead_ns=loop_overhead_ns(),
                                references={n: "fp32" for n in candidates}, seed=seed)
    for n, c in candidates.items():
        est = within_one_round(block_ratios(timed.block_ms["fp32"], timed.block_ms[n]))
        est = with_floor(est) if est is not None else None
        c["speedup_vs_fp32"] = ({"value": est.value, "ci": [est.lo, est.hi], "ci_scope": est.scope,
                                 "cycles": est.n} if est else None)
        c["latency_ms"] = timed.stats[n].median_ns / 1e6
        c["meets_floor"] = c["relative_quality"] is not None and c["relative_quality"] >= floor
    return timed.stats["fp32"].median_ns / 1e6


def _choose(plan: dict[str, Any], candidates: dict[str, dict], objective: str, floor: float, out: Path) -> dict[str, Any]:
    """The plan's choice: the cheapest candidate by the objective among those that meet the floor (ties on
    latency go to the smallest graph), the best uniform one, the Pareto front and notes."""
    cost = _cost(objective)
    meeting = {n: c for n, c in candidates.items() if c["meets_floor"] and cost(c) is not None}
    best_name = min(meeting, key=lambda n: cost(meeting[n])) if meeting else None
    tied = _tied(meeting, best_name) if objective == "latency" and best_name else []
    if len(tied) > 1:  # speedups the CIs cannot tell apart: the smallest graph (fewest FP32 layers) wins
        best_name = min(tied, key=lambda n: (meeting[n]["size_bytes"], -(meeting[n]["relative_quality"] or 0)))
    uniform_ok = {n: c for n, c in candidates.items() if c["uniform"] and c["meets_floor"] and cost(c) is not None}
    best_uniform = min(uniform_ok, key=lambda n: cost(uniform_ok[n])) if uniform_ok else None
    big = float("inf")
    plan["pareto"] = [n for n, c in candidates.items()
                      if not any((cost(o) or big) <= (cost(c) or big)
                                 and (o["relative_quality"] or 0) >= (c["relative_quality"] or 0)
                                 and ((cost(o) or big) < (cost(c) or big)
                                      or (o["relative_quality"] or 0) > (c["relative_quality"] or 0))
                                 for o in candidates.values())]
    plan["best_uniform"] = ({"precision": best_uniform, "relative_quality": uniform_ok[best_uniform]["relative_quality"],
                             "speedup_vs_fp32": uniform_ok[best_uniform]["speedup_vs_fp32"],
                             "size_bytes": uniform_ok[best_uniform]["size_bytes"],
                             "energy": uniform_ok[best_uniform].get("energy")} if best_uniform else None)
    if best_name is None:
        plan.update(meets_floor=False, chosen=None, layers=None,
                    reason=f"no candidate keeps {floor:.2%} of FP32's quality" + (
                        "" if not any(c["meets_floor"] for c in candidates.values())
                        else f" with a known {objective}") + "; FP32 stays the choice")
        return plan
    best = candidates[best_name]
    chosen = out / "plan.onnx"
    shutil.copyfile(best["path"], chosen)
    plan.update(chosen=best_name, meets_floor=True, layers=best["layers"], relative_quality=best["relative_quality"],
                speedup_vs_fp32=best["speedup_vs_fp32"], size_bytes=best["size_bytes"], energy=best.get("energy"),
                artifact=str(chosen))
    notes = []
    if best_uniform and best_name != best_uniform and cost(best) >= cost(candidates[best_uniform]):
        notes.append(f"no mixed plan beats the uniform {best_uniform}")
    if len(tied) > 1:
        notes.append(f"{len(tied)} candidates are as fast within their CIs ({'; '.join(tied)}): the smallest is chosen")
    if objective == "latency" and (best["speedup_vs_fp32"] is None or best["speedup_vs_fp32"]["ci"][0] <= 1.0):
        notes.append("no candidate is clearly faster than FP32 here (the chosen one's CI reaches 1): FP32 is as good")
    if objective == "energy" and (best.get("energy") or {}).get("reason"):
        notes.append(f"energy: {best['energy']['reason']}")
    if notes:
        plan["note"] = "; ".join(notes)
    return plan


def _cost(objective: str):
    """The figure a candidate minimises (None where it is unknown)."""
    def cost(c: dict) -> float | None:
        if objective == "size":
            return float(c["size_bytes"])
        if objective == "energy":
            e = c.get("energy") or {}
            return e.get("system_j") if e.get("system_j") is not None else e.get("dynamic_j")
        s = c.get("speedup_vs_fp32")
        return 1.0 / s["value"] if s else None
    return cost


def _energies(candidates: dict[str, dict], fp32_path: str, fp32_ms: float, batch_size: int,
              layer_macs: dict[str, float], model: dict[str, Any]) -> None:
    """Each candidate's modeled energy per inference, and against FP32 with the CI its paired speedup gives."""
    from effbench.measure.flops import count_work
    total = count_work(fp32_path, batch_size=1)
    acts = total.activation_bytes
    other = max(total.macs - sum(layer_macs.values()), 0.0)
    from effbench.variants.specs import reference_precision
    ref_layers = dict.fromkeys(layer_macs, reference_precision())
    ref = energy_per_inference(ref_layers, layer_macs, other, total.weight_bytes, acts, fp32_ms / 1e3 / batch_size, model)
    for c in candidates.values():
        w = count_work(c["path"], batch_size=1).weight_bytes
        s = c.get("speedup_vs_fp32")
        t = fp32_ms / 1e3 / batch_size / s["value"] if s else None
        e = energy_per_inference(c["layers"], layer_macs, other, w, acts, t, model)
        key = "system_j" if e["system_j"] is not None and ref["system_j"] else "dynamic_j"
        e["vs_fp32"] = e[key] / ref[key] if ref[key] else None
        if s and key == "system_j":  # the time share of the energy moves with the speedup's CI
            lo_t, hi_t = (fp32_ms / 1e3 / batch_size / x for x in (s["ci"][1], s["ci"][0]))
            e["vs_fp32_ci"] = [energy_per_inference(c["layers"], layer_macs, other, w, acts, x, model)["system_j"]
                               / ref["system_j"] for x in (lo_t, hi_t)]
        e["basis"] = "system (idle power x measured time + dynamic)" if key == "system_j" else "dynamic part only"
        c["energy"] = e


def _search_kept(keep, floor: float, n_layers: int, tried: int,
                 tried_candidates: list[dict]) -> tuple[str, int | None]:
    """Where keeping the 0..`tried` most fragile layers in FP32 all miss the floor: keep more, by quality
    alone (doubling, then bisection; quality rises, if not strictly, with the layers kept), and add the
    fewest-kept candidate that meets it, to be timed with the rest. Returns what was done (for plan.json)
    and how many layers that candidate keeps."""
    def meets(c: dict) -> bool:
        return c["relative_quality"] is not None and c["relative_quality"] >= floor
    if any(meets(c) for c in tried_candidates):
        return f"kept 0..{tried} most fragile layers FP32 (at least one meets the floor)", None
    if n_layers <= tried:
        return f"every 0..{tried} most fragile layers kept FP32 tried (all the quantizable layers)", None
    lo, hi, tested = tried, None, []
    k = max(2 * tried, 1)
    while hi is None:
        k = min(k, n_layers)
        c = keep(k)
        tested.append(k)
        if meets(c):
            hi = k
        elif k == n_layers:
            return (f"kept 0..{tried} most fragile layers FP32, then {', '.join(map(str, tested))}: none meets the "
                    "floor (quantizing any layer costs more than it allows)"), None
        else:
            lo, k = k, 2 * k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        tested.append(mid)
        if meets(keep(mid)):
            hi = mid
        else:
            lo = mid
    return (f"kept 0..{tried} most fragile layers FP32, none met the floor; searched on quality alone "
            f"(kept {', '.join(map(str, tested))}): the fewest that meet it, {hi}, timed with the rest"), hi


def _tied(meeting: dict[str, dict], best: str) -> list[str]:
    """The candidates as fast as the fastest one within both CIs: each one's speedup inside the other's CI
    (one CI made wide by a noisy moment does not tie a slower candidate)."""
    top = meeting[best].get("speedup_vs_fp32") or {}
    if not top.get("ci"):
        return [best]
    out = []
    for n, c in meeting.items():
        s = c.get("speedup_vs_fp32")
        if s and s.get("ci") and s["value"] >= top["ci"][0] and top["value"] <= s["ci"][1]:
            out.append(n)
    return out


def _int4_candidate(src: str, out: Path, layers: list[str]) -> dict[str, Any] | str:
    """Uniform int4 weight-only (the int4 precision's own ONNX build, MatMulNBits, with its default
    options): the layers the quantizer turned into MatMulNBits in int4, the rest (convolutions, matrix
    products smaller than a block) FP32. The reason where it cannot be built."""
    from types import SimpleNamespace

    from effbench.variants import validate_options
    from effbench.variants.integer import onnx_int4
    name = "int4"
    folder = out / "int4"
    folder.mkdir(exist_ok=True)
    try:
        built = onnx_int4(SimpleNamespace(onnx_path=src), validate_options(name, {}), folder)
    except Exception as e:  # noqa: BLE001 - any failure of the quantizer is the candidate's reason
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    import onnx
    quantized = set()
    for node in onnx.load(built["path"], load_external_data=False).graph.node:
        if node.op_type == "MatMulNBits":  # named <layer>_Q4, or <layer>_matmul_Q4 for a Gemm rewritten as MatMul
            base = node.name.removesuffix("_Q4")
            quantized |= {base, base.removesuffix("_matmul")}
    return {"path": built["path"], "uniform": True,
            "layers": {n: (name if n in quantized else "fp32") for n in layers}}
