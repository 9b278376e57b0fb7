"""Benchmark the precision variants: digits-cnn and MiniLM, ONNX Runtime and torch, batch 1 and 32.

For each model and runtime, one worker process per variant loads it with effbench's own runner and
waits; the parent then runs interleaved rounds (fp32, v1, v2, ..., fp32, v1, ...), one worker active
at a time, and reports the median over rounds of the per-round ratio fp32/variant with its range
(docs/runtime-notes.md: this machine is noisy and bimodal; only per-round ratios were stable).

    .venv/bin/python bench/variants.py [--rounds 5] [--models digits-cnn,minilm] [--out bench/variants.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))



def _worker(conn, runner_name: str, variant: dict, artifact: dict, threads: int) -> None:
    from effbench.runners import Unsupported, get_runner
    from effbench.variants import Variant
    try:
        v = Variant.from_json(variant)
        r = get_runner(runner_name)
        s = r.supports(v)
        if not s.ok:
            raise Unsupported(s.reason)
        sess = r.load(v, threads, {"artifact": artifact, "compile": False})
        conn.send(("ok", sess.info.get("built")))
    except Exception as e:
        conn.send(("unsupported", f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"))
        return
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            return
        if msg[0] == "quality":
            from effbench.execution.tasks import quality_pass
            try:
                conn.send(("ok", quality_pass(**msg[1])))
            except Exception as e:
                conn.send(("error", f"{type(e).__name__}: {e}"))
            continue
        _, feeds, seconds = msg
        call = sess.timed_call(feeds)
        t_end = time.perf_counter() + 0.1
        while time.perf_counter() < t_end:
            call()
        samples = []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(samples) < 5:
            t0 = time.perf_counter_ns()
            call()
            samples.append(time.perf_counter_ns() - t0)
        conn.send(("ok", float(np.median(samples)) / 1e6))


def prepare(model: str, cache: Path):
    from effbench.config.suite import load_suite
    from effbench.models.datasets import load_dataset
    from effbench.models.sources import prepare as prep
    suite = load_suite(ROOT / "suites" / ("minilm.yaml" if model == "minilm" else "quickstart.yaml"))
    idx = next(i for i, m in enumerate(suite.spec.models) if m.id == model)
    spec = suite.spec.models[idx]
    art = prep(spec, idx, base_dir=suite.base_dir, suite_file=str(suite.path), cache_dir=cache)
    shapes = {i.name: (list(i.concrete(1, art.dims)[1:]), i.dtype) for i in art.inputs}
    ds = load_dataset(spec.dataset, shapes, base_dir=suite.base_dir, suite_file=str(suite.path), field="dataset")
    return art, ds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5, help="timed seconds per variant per round")
    ap.add_argument("--models", default="digits-cnn,minilm")
    ap.add_argument("--runners", default="onnxruntime,torch")
    ap.add_argument("--batches", default="1,32")
    from effbench.variants import precision_labels
    ap.add_argument("--precisions", default=",".join(precision_labels()), help="fp32 is always included")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "effbench-bench-cache"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "variants.json"))
    a = ap.parse_args()
    from effbench.config.suite import parse_precision
    from effbench.results.record import Cell
    from effbench.variants import build_variant, validate_options
    cache = Path(a.cache)
    ctx = mp.get_context("spawn")
    results = []
    for model in a.models.split(","):
        art, ds = prepare(model, cache)
        calib = {k: v[:256] for k, v in ds.inputs.items()}
        variants = {}
        for label in ["fp32"] + [p for p in a.precisions.split(",") if p and p != "fp32"]:
            c = parse_precision(label)
            t0 = time.perf_counter()
            v = build_variant(art, c.label, c.precision, c.method, validate_options(c.precision, c.options), cache,
                              calibration=calib)
            variants[label] = v
            print(f"[{model}] built {label} in {time.perf_counter() - t0:.1f}s: method={v.method} "
                  f"onnx={'ok' if v.onnx_path else v.onnx_reason} torch={'ok' if v.torch else v.torch_reason}",
                  flush=True)
        for runner in a.runners.split(","):
            side = "onnx" if runner == "onnxruntime" else "torch"
            workers = {}
            for label, v in variants.items():
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker, args=(child, runner, v.to_json(), art.to_json(), a.threads))
                p.start()
                status, info = parent.recv()
                if status != "ok":
                    p.join()
                    results.append({"model": model, "runner": runner, "variant": label, "status": "unsupported",
                                    "reason": info})
                    print(f"  {model}/{runner}/{label}: unsupported: {info}", flush=True)
                    continue
                workers[label] = (p, parent)
            # quality: fp32 first (writes the reference), then the others
            quality = {}
            ref = cache / "bench-ref" / f"{model}-{runner}.npz"
            fp32_value = None
            for label, (p, conn) in workers.items():
                v = variants[label]
                # the quality pass opens the session by the cell (runner, threads, compile, device); batch 1
                # stands for "no batch": quality_pass batches the dataset itself
                cell = Cell(model=model, variant=label, precision=v.precision, method=v.method, runner=runner,
                            runner_label=runner, threads=a.threads, compile=False, batch_size=1)
                conn.send(("quality", {"cell": cell, "variant": variants[label], "artifact": art.to_json(),
                                       "inputs": ds.inputs, "labels": ds.labels, "metric": None,
                                       "reference_path": str(ref), "min_relative": 0.99, "fp32_value": fp32_value}))
                status, q = conn.recv()
                quality[label] = q if status == "ok" else {"error": q}
                if label == "fp32" and status == "ok":
                    fp32_value = q["value"]
            for b in [int(x) for x in a.batches.split(",")]:
                feeds = art.feeds(b, ds)
                per_round: dict[str, list[float]] = {label: [] for label in workers}
                for r in range(a.rounds):
                    for label, (p, conn) in workers.items():
                        # let the previous worker's spinning OpenMP / ORT pool threads park before timing
                        time.sleep(0.3)
                        conn.send(("time", feeds, a.seconds))
                        status, ms = conn.recv()
                        per_round[label].append(ms)
                for label in workers:
                    ratios = [f / v for f, v in zip(per_round["fp32"], per_round[label])] if "fp32" in per_round else []
                    v = variants[label]
                    st = v.stats.get(side, {})
                    row = {"model": model, "runner": runner, "variant": label, "status": "ok", "batch": b,
                           "method": (v.build.get(side) or {}).get("method", v.method), "emulated": v.emulated,
                           "median_ms": statistics.median(per_round[label]), "round_ms": per_round[label],
                           "speedup": statistics.median(ratios) if ratios else None,
                           "speedup_range": [min(ratios), max(ratios)] if ratios else None,
                           "size_bytes": st.get("size_bytes"), "compression": st.get("compression_vs_fp32"),
                           "weight_bits": st.get("weight_bits"),
                           "matmul_weight_ratio": (st.get("matmul_weight_bytes") or {}).get("ratio"),
                           "quality": quality.get(label)}
                    results.append(row)
                    q = row["quality"] or {}
                    fid = q.get("fidelity") or {}
                    print(f"  {model}/{runner}/b{b}/{label:13s} {row['median_ms']:8.3f} ms  x{row['speedup']:.2f} "
                          f"[{row['speedup_range'][0]:.2f}, {row['speedup_range'][1]:.2f}]  {row['size_bytes']} B "
                          f"(/{row['compression']})  {q.get('metric')}={q.get('value')}  "
                          f"cos={fid.get('cosine')}{'  EMULATED' if v.emulated else ''}", flush=True)
            for p, conn in workers.values():
                conn.send(("stop",))
                p.join()
    Path(a.out).write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
