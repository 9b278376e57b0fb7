"""The mixed-precision advisor (issue 15): candidates guided by the per-layer sensitivity (int8 everywhere,
then the k most fragile layers kept in FP32; and the uniform FP16 graph), each **measured**: its quality
on the inputs, and its latency paired with FP32 in one worker (alternating blocks, as every effbench
comparison). The plan is the candidate that meets the quality floor at the lowest measured latency.
Runs in a worker; `effbench advise` writes plan.json and the chosen graph.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

MAX_KEPT = 6  # the k most fragile layers kept in FP32: 0..MAX_KEPT candidates


def _quality(path: str, inputs: dict[str, np.ndarray], labels, ref: np.ndarray, ref_metric: float) -> dict[str, Any]:
    from effbench.variants.sensitivity import _outputs, _score
    s = _score(_outputs(path, inputs), ref, labels, ref_metric)
    return {"metric": s.metric, "relative_quality": s.metric / ref_metric if ref_metric else None,
            "sqnr_db": s.sqnr_db, "cosine": s.cosine}


def advise(onnx_path: str, inputs: dict[str, np.ndarray], labels, method: str, calibration, ranking: list[str],
           layers: list[str], out_dir: str, *, floor: float, batch_size: int, budget: dict, threads: int = 1,
           op_types: list[str] | None = None, samples: int = 256, seed: int = 0) -> dict[str, Any]:
    """Build, score and time the candidates; return the plan (see module docstring)."""
    from effbench.measure.latency import Budget, block_ratios, loop_overhead_ns, measure_interleaved
    from effbench.measure.stats import with_floor, within_one_round
    from effbench.runners.onnxruntime import cpu_session
    from effbench.variants.floating import _fp16_graph
    from effbench.variants.integer import _clean_copy, quantize_onnx_int8
    from effbench.variants.sensitivity import _outputs, _score
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = _clean_copy(onnx_path, out / "fp32.onnx")
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    ref = _outputs(src, inputs)
    ref_metric = _score(ref, ref, labels, 0.0).metric
    calib = calibration if method == "static" else None

    candidates: dict[str, dict[str, Any]] = {}
    for k in range(0, min(MAX_KEPT, len(ranking)) + 1):
        kept = ranking[:k]
        path = out / f"int8-keep{k}.onnx"
        quantize_onnx_int8(src, str(path), method, per_channel=True, calibration=calib, samples=samples,
                           op_types=op_types, nodes_to_exclude=kept)
        name = "int8" if k == 0 else f"int8, {k} layer{'s' if k > 1 else ''} kept FP32"
        candidates[name] = {"path": str(path), "layers": {n: ("fp32" if n in kept else "int8") for n in layers},
                            "uniform": k == 0}
    import onnx
    fp16 = out / "fp16.onnx"
    onnx.save(_fp16_graph(src, True), str(fp16))
    candidates["fp16"] = {"path": str(fp16), "layers": dict.fromkeys(layers, "fp16"), "uniform": True}
    for c in candidates.values():
        c.update(_quality(c["path"], inputs, labels, ref, ref_metric))
        c["size_bytes"] = Path(c["path"]).stat().st_size

    # latency: every candidate timed against FP32 in alternating blocks in this one worker
    feeds = {k: np.ascontiguousarray(v[:batch_size]) for k, v in inputs.items()}
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

    def speed(c: dict) -> float:
        return c["speedup_vs_fp32"]["value"] if c["speedup_vs_fp32"] else 0.0

    meeting = {n: c for n, c in candidates.items() if c["meets_floor"]}
    best_name = max(meeting, key=lambda n: speed(meeting[n])) if meeting else None
    uniform_ok = {n: c for n, c in candidates.items() if c["uniform"] and c["meets_floor"]}
    best_uniform = max(uniform_ok, key=lambda n: speed(uniform_ok[n])) if uniform_ok else None
    pareto = [n for n, c in candidates.items()
              if not any(speed(o) >= speed(c) and (o["relative_quality"] or 0) >= (c["relative_quality"] or 0)
                         and (speed(o) > speed(c) or (o["relative_quality"] or 0) > (c["relative_quality"] or 0))
                         for o in candidates.values())]
    plan: dict[str, Any] = {
        "floor": floor, "objective": "latency", "method": method, "fp32_metric": ref_metric,
        "fp32_latency_ms": timed.stats["fp32"].median_ns / 1e6, "batch_size": batch_size,
        "timing": "each candidate against FP32 in alternating blocks in one worker (one round: the CI covers "
                  "one moment of the machine)",
        "candidates": {n: {k: v for k, v in c.items() if k != "path"} for n, c in candidates.items()},
        "pareto": pareto,
        "best_uniform": ({"precision": best_uniform, "relative_quality": uniform_ok[best_uniform]["relative_quality"],
                          "speedup_vs_fp32": uniform_ok[best_uniform]["speedup_vs_fp32"]} if best_uniform else None)}
    if best_name is None:
        plan.update(meets_floor=False, chosen=None, layers=None,
                    reason=f"no candidate keeps {floor:.2%} of FP32's quality; FP32 stays the choice")
        return plan
    best = candidates[best_name]
    chosen = out / "plan.onnx"
    shutil.copyfile(best["path"], chosen)
    plan.update(chosen=best_name, meets_floor=True, layers=best["layers"], relative_quality=best["relative_quality"],
                speedup_vs_fp32=best["speedup_vs_fp32"], size_bytes=best["size_bytes"], artifact=str(chosen))
    notes = []
    if best_uniform and best_name != best_uniform and speed(best) <= speed(candidates[best_uniform]):
        notes.append(f"no mixed plan beats the uniform {best_uniform}")
    if best["speedup_vs_fp32"] is None or best["speedup_vs_fp32"]["ci"][0] <= 1.0:
        notes.append("no candidate is clearly faster than FP32 here (the chosen one's CI reaches 1): FP32 is as good")
    if notes:
        plan["note"] = "; ".join(notes)
    return plan
