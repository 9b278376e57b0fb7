"""Fixture stores for the report tests: realistic records built in Python and written as JSONL.

(A uniquely named module, not conftest.py: tests/conftest.py already owns the name `conftest`.)

The latency figures are synthetic (seeded lognormal samples) and their statistics are computed by the
real `LatencyStats`; the paired speedups are seeded per-cycle block ratios summarised by the real
`within_one_round`, per round, as the runner stores them (loading merges rounds). Nothing here pretends to
be a measurement of this machine.

What the paired comparisons hold, by construction: int8-static clearly faster, fp16 clearly slower, int4
as fast as FP32 (its CI contains 1), binary emulated (no speedup), every torch / batch 32 / offline cell
unpaired with a reason (its group's interleaved worker crashed), most cells one round; every ninth cell
has its drift flagged.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from effbench.measure.latency import LatencyStats
from effbench.measure.stats import within_one_round
from effbench.results.record import (
    Cell,
    Comparison,
    Drift,
    Energy,
    Latency,
    Memory,
    ModelStats,
    Projection,
    Provenance,
    Quality,
    VariantInfo,
)
from effbench.results.store import Record

VARIANTS = {  # label: (precision, method, weight_bits, latency factor vs fp32, relative quality, emulated)
    "fp32": ("fp32", None, 32, 1.0, 1.0, False),
    "fp16": ("fp16", "cast", 16, 1.12, 1.0, False),
    "bf16": ("bf16", "cast", 16, 0.8, 0.999, False),
    "int8-static": ("int8", "static-qdq", 8, 0.63, 0.998, False),
    "int8-dynamic": ("int8", "dynamic", 8, 0.55, 0.995, False),
    "int4": ("int4", "matmul-nbits", 4, 1.0, 0.985, False),
    "binary": ("binary", "sign", 1, 1.9, 0.72, True),
}
MODELS = {  # id: (fp32 batch-1 median ms, fp32 size bytes, macs, fp32 top1, by_op)
    "digits-cnn": (0.052, 95_000, 180_000, 0.975,
                   {"Conv": {"count": 2, "macs": 150_000}, "Gemm": {"count": 1, "macs": 30_000},
                    "Relu": {"count": 3, "macs": 0}, "MaxPool": {"count": 1, "macs": 0}}),
    "mlp": (0.021, 420_000, 104_000, 0.961,
            {"Gemm": {"count": 3, "macs": 104_000}, "Relu": {"count": 2, "macs": 0}}),
}
DEVICES = ("local", "raspberry-pi-5", "nvidia-h100", "cortex-m7")
CYCLES = 41               # alternating-block cycles per round of the paired comparison
CRASHED_GROUP = "the group's interleaved worker failed: killed by signal 9; measured alone, so not paired"
EMULATED_REASON = ("emulated: this precision runs as float kernels that emulate it, so its speed is not the "
                   "speed of native kernels")


def _comparison(rng: np.random.Generator, fp32_id: str, true_speedup: float, *, emulated: bool,
                crashed: bool) -> Comparison:
    """One round's paired comparison, as the runner writes it: a round drifts a little, its cycles more."""
    if emulated or crashed:
        return Comparison(baseline=fp32_id, reason=EMULATED_REASON if emulated else CRASHED_GROUP)
    ratios = true_speedup * rng.lognormal(0, 0.02) * rng.lognormal(0, 0.06, CYCLES)
    est = within_one_round(list(ratios))
    return Comparison(baseline=fp32_id, speedup=est.value, ci=(est.lo, est.hi), ci_level=est.level,
                      ci_scope=est.scope, ci_method=est.method, rounds=1, method="paired", cycles=est.n)


def _drift(rng: np.random.Generator, flagged: bool) -> Drift:
    before = 31.2 * rng.lognormal(0, 0.02)
    change = 0.17 if flagged else float(rng.normal(0, 0.02))
    return Drift(threshold=0.10, rounds=[{"before_us": before, "after_us": before * (1 + change), "change": change}],
                 max_abs_change=abs(change), flagged=abs(change) > 0.10)


def _prov(host: str, stamp: str, speed: float) -> Provenance:
    return Provenance(
        effbench="0.1.0", python="3.11.7", suite="quickstart",
        suite_sha256=hashlib.sha256(b"quickstart").hexdigest(), started=stamp, speed_index=speed,
        host={"hostname": host, "cpu": "AMD EPYC 9R14 (2 cores)", "os": "Linux 6.1", "ram_bytes": 8 << 30},
        packages={"onnxruntime": "1.31.1", "torch": "2.13.0+cpu", "onnx": "1.23.2", "numpy": "2.2.1"})


def make_records(*, host: str = "bench-a", models: dict | None = None, seed: int = 0, n_samples: int = 300,
                 rounds_every: int = 5, energy_source: str = "modeled:local",
                 stamp: str = "2025-03-02T10:00:00Z") -> list[Record]:
    """Store lines for every cell of models x variants x runners x batch sizes x scenarios."""
    rng = np.random.default_rng(seed)
    models = models or MODELS
    out: list[Record] = []
    k = 0
    for model, (base_ms, size, macs, top1, by_op) in models.items():
        total = sum(v["macs"] for v in by_op.values())
        by_op = {op: {**v, "share": v["macs"] / total} for op, v in by_op.items()}
        for variant, (prec, method, bits, factor, relq, emulated) in VARIANTS.items():
            for runner in ("onnxruntime", "torch"):
                for batch in (1, 32):
                    for scenario in ("single-stream", "offline"):
                        k += 1
                        cell_id = f"{model}/{variant}/{runner}/b{batch}/{scenario}"
                        cell = Cell(model=model, variant=variant, precision=prec, method=method, runner=runner,
                                    runner_label=runner, threads=2, batch_size=batch, scenario=scenario)
                        common = dict(cell_id=cell_id, config_hash=hashlib.sha1(cell_id.encode()).hexdigest()[:12],
                                      cell=cell, provenance=_prov(host, stamp, 1.0 + 0.01 * seed))
                        if runner == "onnxruntime" and variant == "bf16":
                            out.append(Record(status="unsupported", reason="BF16 compute is not implemented "
                                              "on the CPU execution provider (Gemm NOT_IMPLEMENTED)", **common))
                            continue
                        if runner == "torch" and variant == "int4":
                            out.append(Record(status="unsupported", reason="torchao int4 needs CUDA on this "
                                              "machine: every CPU layout failed", **common))
                            continue
                        if variant == "int8-dynamic" and runner == "onnxruntime" and batch == 32 \
                                and scenario == "offline":
                            out.append(Record(status="failed", reason="worker timed out after 120 s", **common))
                            continue
                        n_rounds = 3 if k % rounds_every == 0 else 1
                        f = factor * (3.5 if (variant == "int8-dynamic" and model == "digits-cnn") else 1.0)
                        median = base_ms * f * (1 + 0.9 * (batch - 1)) * (1.3 if runner == "torch" else 1.0)
                        unstable = k % 7 == 0
                        fp32_id = f"{model}/fp32/{runner}/b{batch}/{scenario}"
                        crashed = runner == "torch" and batch == 32 and scenario == "offline"
                        for rnd in range(n_rounds):
                            spread = 0.25 if unstable else 0.06
                            s = median * (1 + rng.normal(0, 0.02)) * rng.lognormal(0, spread, n_samples)
                            st = LatencyStats.from_samples_ms(list(s), unstable=unstable, elapsed_s=2.0)
                            mem = 60_000_000 + size * 3 + rng.integers(0, 2_000_000)
                            vsize = int(size * bits / 32)
                            j = macs * batch * (4.6e-12 if bits >= 16 else 0.2e-12 * bits) + 2e-6 * st.median_ns * 1e-6
                            if energy_source.startswith("measured"):
                                j *= 1.4
                            rel = relq * (0.98 if model == "mlp" and variant == "int4" else 1.0)
                            proj = {}
                            for d in DEVICES:
                                if d == "cortex-m7" and bits == 1:
                                    proj[d] = Projection(status="unsupported",
                                                         reason="no 1-bit kernels in the profile")
                                    continue
                                scale = {"local": 1.15, "raspberry-pi-5": 3.2, "nvidia-h100": 0.05,
                                         "cortex-m7": 40.0}[d]
                                proj[d] = Projection(status="ok", latency_ms=median * scale,
                                                     energy_mj=j * 1e3 * scale,
                                                     bound="memory" if batch == 1 else "compute",
                                                     fits=not (d == "cortex-m7" and vsize > 100_000))
                            out.append(Record(
                                status="ok", round=rnd, rounds=n_rounds, **common,
                                variant=VariantInfo(
                                    label=variant, precision=prec, method=method,
                                    build={"tool": "onnxruntime.quantization" if bits < 16 else None,
                                           "tool_version": "1.31.1", "options": {}},
                                    size_bytes=vsize, weight_bits=bits, compression_vs_fp32=32 / bits,
                                    emulated=emulated),
                                model_stats=ModelStats(params=size // 4, size_bytes=vsize, weight_bytes=vsize,
                                                       weight_bits=bits, macs=macs, flops=2 * macs,
                                                       bops=macs * bits * (8 if bits <= 8 else bits),
                                                       bytes_moved=vsize + 4096, uncounted_ops={}, by_op=by_op),
                                latency_ms=Latency.from_json(st.to_json()),
                                samples_ms=tuple(st.stored_samples_ms()),
                                throughput_ips=batch / (st.median_ns * 1e-9),
                                memory=Memory(baseline_rss_bytes=55_000_000, peak_rss_bytes=int(mem),
                                              model_bytes=vsize),
                                energy=Energy(source=energy_source, j_per_inference=j,
                                              avg_power_w=j / (st.median_ns * 1e-9)),
                                quality=Quality(metric="top1", value=top1 * rel, fp32_value=top1, relative=rel,
                                                below_floor=rel < 0.99,
                                                fidelity={"cosine": 0.999, "top1_agreement": rel,
                                                          "max_abs_err": 0.01, "sqnr_db": 38.0}),
                                projections=proj,
                                comparison=None if variant == "fp32" else _comparison(
                                    rng, fp32_id, 1 / f, emulated=emulated, crashed=crashed),
                                drift=_drift(rng, flagged=k % 9 == 0)))
    return out


def write_store(path: Path, records: list[Record]) -> Path:
    """The store format, written in one go (Store.append fsyncs per line, slow for 1,000 cells)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_json(), separators=(",", ":"), allow_nan=False) + "\n")
    return path
