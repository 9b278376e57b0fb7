"""Summary of a GPU check's store (bench/gpu_check.sh): per cell, the measured latency and paired speedup,
NVML-measured energy beside the H100 profile's modeled energy, GPU memory, and the H100 projection's
error against the measurement.

    python bench/gpu_summary.py STORE [--profile nvidia-h100] [--json OUT.json] [--md OUT.md]

Projection error = (projected - measured) / measured, latency per call at the cell's batch size; energy
per inference (one item of the batch). Nothing here is measured: it reads what the run stored.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from effbench.results.record import Comparison, Energy, Memory, Provenance


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def rows(store: str, profile: str) -> tuple[list[dict], Provenance | None]:
    from effbench.results.store import load
    res = load(store)
    out = []
    for r in res.records:
        cell, lat, proj = r.cell, r.latency_ms, r.projections.get(profile)
        energy, mem, comp = r.energy or Energy(), r.memory or Memory(), r.comparison or Comparison()
        measured_ms = _num(lat.median) if lat else None
        projected_ms = _num(proj.latency_ms) if proj else None
        measured_mj = _num(energy.j_per_inference)
        measured_mj = measured_mj * 1e3 if measured_mj is not None else None
        modeled_mj = _num(proj.energy_mj) if proj else None
        out.append({
            "cell": r.cell_id, "status": r.status, "reason": r.reason if r.status != "ok" else None,
            "runner": cell.runner_label, "precision": cell.precision, "batch": cell.batch_size,
            "placement": (r.variant.runtime or {}).get("placement") if r.variant else None,
            "latency_ms": measured_ms, "latency_ci_ms": list(lat.ci) if lat and lat.ci else None, "rounds": r.rounds,
            "speedup_vs_fp32": _num(comp.speedup), "speedup_ci": list(comp.ci) if comp.ci else None,
            "speedup_reason": comp.reason,
            "energy_source": energy.source, "measured_mj_per_inference": measured_mj,
            "avg_power_w": _num(energy.avg_power_w), "gross_power_w": _num(energy.gross_avg_power_w),
            "idle_w": _num(energy.idle_w), "energy_reason": energy.reason,
            "modeled_mj_per_inference": modeled_mj,
            "energy_model_over_measured": (modeled_mj / measured_mj) if modeled_mj and measured_mj else None,
            "gpu_used_over_start_bytes": mem.gpu_used_over_start_bytes,
            "torch_cuda_max_allocated_bytes": mem.torch_cuda_max_allocated_bytes,
            "peak_rss_bytes": mem.peak_rss_bytes,
            "projected_ms": projected_ms, "projection_bound": proj.bound if proj else None,
            "projection_status": proj.status if proj else None, "projection_reason": proj.reason if proj else None,
            "projection_error_pct": ((projected_ms - measured_ms) / measured_ms * 100.0)
            if projected_ms is not None and measured_ms else None,
        })
    return out, (res.records[0].provenance if res.records else None)


def _fmt(v, unit="", digits=3):
    if v is None:
        return "-"
    return f"{v:.{digits}g}{unit}"


def _off_cuda(placement: dict | None) -> str:
    if not placement or "nodes_by_provider" not in placement:
        return (placement or {}).get("reason", "-")[:60]
    total = sum(placement["nodes_by_provider"].values())
    off = placement.get("ops_not_on_cuda") or {}
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(off.items(), key=lambda kv: -kv[1])[:4])
    return f"{sum(off.values())} of {total}" + (f" ({ops})" if ops else "")


def markdown(table: list[dict], provenance: Provenance | None, profile: str) -> str:
    provenance = provenance or Provenance()
    host, gpus = provenance.host, provenance.gpus
    lines = [f"# GPU check: {', '.join(g.get('name') or '?' for g in gpus) or 'no GPU seen by NVML'}", ""]
    for g in gpus:
        lines.append(f"- GPU {g.get('index')}: {g.get('name')}, driver {g.get('driver')}, CUDA (driver) "
                     f"{g.get('cuda_driver')}, {_fmt((g.get('memory_bytes') or 0) / 2**30, ' GiB')}, "
                     f"power limit {_fmt(g.get('power_limit_w'), ' W')}")
    lines.append(f"- packages: {json.dumps(provenance.packages)}")
    lines.append(f"- CPU: {host.get('cpu')} ({host.get('cores_logical')} logical cores)")
    lines += ["", f"| cell | status | median ms [95% CI] | vs FP32 | NVML mJ/inf (net) | GPU W (gross / idle) "
              f"| modeled mJ/inf ({profile}) | model/measured | GPU mem over start | {profile} projected ms | "
              "projection error | nodes not on CUDA |", "|" + "---|" * 12]
    for r in table:
        if r["status"] != "ok":
            lines.append(f"| {r['cell']} | {r['status']}: {(r['reason'] or '')[:120]} |" + " |" * 10)
            continue
        ci = r["latency_ci_ms"]
        lat = f"{_fmt(r['latency_ms'])} [{_fmt(ci[0])}–{_fmt(ci[1])}]" if ci else _fmt(r["latency_ms"])
        sp = (f"{r['speedup_vs_fp32']:.2f}x [{r['speedup_ci'][0]:.2f}–{r['speedup_ci'][1]:.2f}]"
              if r["speedup_vs_fp32"] and r["speedup_ci"] else (r["speedup_reason"] or "-")[:40])
        energy = _fmt(r["measured_mj_per_inference"]) if r["measured_mj_per_inference"] is not None else \
            f"- ({(r['energy_reason'] or r['energy_source'] or '')[:60]})"
        power = f"{_fmt(r['gross_power_w'])} / {_fmt(r['idle_w'])}"
        mem = r["gpu_used_over_start_bytes"]
        err = _fmt(r["projection_error_pct"], "%") if r["projection_error_pct"] is not None else \
            f"- ({(r['projection_reason'] or r['projection_status'] or '')[:60]})"
        lines.append(f"| {r['cell']} | ok | {lat} | {sp} | {energy} | {power} | {_fmt(r['modeled_mj_per_inference'])} "
                     f"| {_fmt(r['energy_model_over_measured'])} | {_fmt(mem / 2**20, ' MiB') if mem else '-'} "
                     f"| {_fmt(r['projected_ms'])} | {err} | {_off_cuda(r['placement'])} |")
    errs = [abs(r["projection_error_pct"]) for r in table if r["projection_error_pct"] is not None]
    ratios = [r["energy_model_over_measured"] for r in table if r["energy_model_over_measured"]]
    ok = [r for r in table if r["status"] == "ok"]
    lines += ["", f"- ok cells: {len(ok)} of {len(table)}"]
    if errs:
        lines.append(f"- {profile} latency projection: median |error| {statistics.median(errs):.0f}% "
                     f"(range {min(errs):.0f}–{max(errs):.0f}%, {len(errs)} cells)")
    if ratios:
        lines.append(f"- modeled / NVML-measured energy: median {statistics.median(ratios):.3g}x "
                     f"(range {min(ratios):.3g}–{max(ratios):.3g}x, {len(ratios)} cells)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--profile", default="nvidia-h100")
    ap.add_argument("--json")
    ap.add_argument("--md")
    a = ap.parse_args(argv)
    table, provenance = rows(a.store, a.profile)
    text = markdown(table, provenance, a.profile)
    if a.json:
        Path(a.json).write_text(json.dumps({"provenance": provenance.to_json() if provenance else {}, "cells": table},
                                           indent=1, default=str))
    if a.md:
        Path(a.md).write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
