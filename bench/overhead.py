"""effbench's measured median vs a bare `session.run` loop, on a tiny and a mid-size ONNX model.

Interleaved rounds (effbench, bare, effbench, bare, ...), each side in a fresh process, because this
machine drifts by tens of percent between moments (docs/runtime-notes.md). Reports the median of per-round
ratios with its range, the timing mode effbench chose, and the overhead in microseconds. Both sides time a
64-byte-aligned input (an unaligned one made the tiny model's bare loop 30-40% slower here).
Run: .venv/bin/python bench/overhead.py [--rounds 5] [--seconds 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BARE = r"""
import sys, time, json, numpy as np, onnxruntime as ort
path, threads, batch, seconds, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
a = np.random.default_rng(0).random((batch, width), dtype=np.float32)
buf = np.empty(a.nbytes + 64, np.uint8); off = (-buf.ctypes.data) % 64  # 64-byte aligned, as effbench's inputs are
x = {"x": buf[off:off + a.nbytes].view(np.float32).reshape(a.shape)}
x["x"][...] = a
names = [o.name for o in s.get_outputs()]
run = s.run
for _ in range(50): run(names, x)
t_end = time.perf_counter() + 0.5
while time.perf_counter() < t_end: run(names, x)
# a bare loop: wall time over many calls, no per-call clock reads
calls, t0 = 0, time.perf_counter_ns()
end = t0 + int(seconds * 1e9)
per = []
while True:
    a = time.perf_counter_ns()
    for _ in range(100): run(names, x)
    b = time.perf_counter_ns()
    per.append((b - a) / 100)
    if b >= end: break
print(json.dumps({"median_ms": float(np.median(per)) / 1e6}))
"""


def mlp(path: Path, width: int, layers: int) -> None:
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]))
        nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"]))
        prev = f"r{i}"
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["batch", width])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    onnx.save(m, str(path))


def effbench_round(path: Path, threads: int, batch: int, seconds: float, cache: Path) -> dict:
    from effbench.config.suite import ModelSpec
    from effbench.execution.workers import run_in_worker
    from effbench.models.sources import prepare
    from effbench.results.record import Cell
    from effbench.variants import build_variant
    spec = ModelSpec.model_validate({"id": path.stem, "source": {"onnx": str(path)}})
    art = prepare(spec, 0, base_dir=path.parent, suite_file="bench", cache_dir=cache)
    var = build_variant(art, "fp32", "fp32", None, {}, cache)
    cell = Cell(model=path.stem, variant="fp32", precision="fp32", method=None, runner="onnxruntime",
                runner_label="onnxruntime", threads=threads, compile=False, batch_size=batch, scenario="single-stream")
    budget = {"warmup_s": 0.5, "min_time_s": seconds, "max_time_s": seconds, "target_rel_ci": 1e-9}
    out = run_in_worker("effbench.execution.tasks:measure_cell", {"cell": cell, "variant": var,
                        "artifact": art.to_json(), "feeds": art.feeds(batch), "budget": budget,
                        "runner_options": {}}, timeout_s=600)
    assert out.kind == "ok", out.reason
    return out.value


def bare_round(path: Path, threads: int, batch: int, seconds: float, width: int) -> float:
    res = subprocess.run([sys.executable, "-c", BARE, str(path), str(threads), str(batch), str(seconds), str(width)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout)["median_ms"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        cases = [("tiny", d / "tiny.onnx", 16, 1, 1), ("mid", d / "mid.onnx", 1024, 4, 32)]
        for name, path, width, layers, batch in cases:
            mlp(path, width, layers)
            ratios, eff, bare, mode = [], [], [], None
            for r in range(a.rounds):
                res = effbench_round(path, a.threads, batch, a.seconds, d / "cache")
                b = bare_round(path, a.threads, batch, a.seconds, width)
                e = res["latency_ms"]["median"]
                mode = (res["latency_ms"]["timing"], res["latency_ms"]["block_size"], res["loop_overhead_ns"])
                eff.append(e)
                bare.append(b)
                ratios.append(e / b)
                print(f"  {name} round {r + 1}: effbench {e:.5f} ms, bare {b:.5f} ms, ratio {e / b:.3f}", flush=True)
            med = statistics.median(ratios)
            print(f"{name}: median per-round ratio effbench/bare = {med:.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); "
                  f"effbench median {statistics.median(eff) * 1e3:.2f} us vs bare {statistics.median(bare) * 1e3:.2f} us; "
                  f"overhead {statistics.median([e - b for e, b in zip(eff, bare)]) * 1e3:+.2f} us per call; "
                  f"timing={mode[0]} block={mode[1]} loop overhead {mode[2]:.0f} ns", flush=True)


if __name__ == "__main__":
    main()
