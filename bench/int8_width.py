"""Where INT8 starts to pay on this CPU: effbench's default `int8` (static QDQ for CNNs) against FP32
on ONNX Runtime, batch 32, for the same CNN shape (conv-relu-conv-relu-maxpool-linear-relu-linear)
at growing widths and input sizes, through `effbench run` itself (fresh worker per cell, rounds
interleaved, speedup = the paired speedup vs FP32 with its CI over rounds).

The zoo's digits-cnn is the smallest of these (16/32 channels on 8x8). Weights are seeded random and the
dataset is random: this benchmark is about speed only, so its quality figures mean nothing.

    .venv/bin/python bench/int8_width.py [--rounds 5] [--out bench/int8_width.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = [(16, 32, 8), (32, 64, 8), (32, 64, 28), (64, 128, 28)]  # (conv1 channels, conv2 channels, H=W)


def export(c1: int, c2: int, hw: int, d: Path) -> tuple[Path, Path]:
    import torch
    from torch import nn
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c2 * (hw // 2) ** 2, 64), nn.ReLU(),
                      nn.Linear(64, 10)).eval()
    onnx_path = d / f"cnn-{c1}-{c2}-{hw}.onnx"
    torch.onnx.export(m, (torch.rand(1, 1, hw, hw),), str(onnx_path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}}, opset_version=17)
    data = d / f"cnn-{c1}-{c2}-{hw}.npz"
    np.savez(data, inputs=np.random.default_rng(0).random((256, 1, hw, hw), dtype=np.float32))
    return onnx_path, data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import yaml

    from effbench.execution.run import run
    rows = []
    with tempfile.TemporaryDirectory() as td:
        d = Path(td)
        models = []
        for c1, c2, hw in SHAPES:
            onnx_path, data = export(c1, c2, hw, d)
            models.append({"id": f"cnn-{c1}-{c2}-{hw}x{hw}", "source": {"onnx": str(onnx_path)},
                           "dataset": {"npz": str(data)}, "task": "embedding"})
        suite = {"name": "int8-width", "models": models, "precisions": ["fp32", "int8"],
                 "runners": [{"name": "onnxruntime", "threads": 2}], "batch_sizes": [32],
                 "scenarios": ["single-stream"], "devices": ["local"],
                 "measure": {"warmup_s": 0.5, "min_time_s": 1, "max_time_s": 5, "target_rel_ci": 0.01,
                             "rounds": a.rounds},
                 "quality": {"metric": "cosine", "min_relative": 0.5}}
        (d / "suite.yaml").write_text(yaml.safe_dump(suite))
        res = run(d / "suite.yaml", out_dir=d / "out", cache_dir=d / "cache", progress=False)
        by = {}
        for r in res.records:
            by.setdefault(r.cell.model, {})[r.cell.precision] = r
        for mid, recs in by.items():
            f, q = recs.get("fp32"), recs.get("int8")
            if not (f and q and f.ok and q.ok):
                rows.append({"model": mid, "status": "not measured",
                             "reason": (q.reason if q else "") or (f.reason if f else "")})
                continue
            comp = q.comparison
            if comp is None or comp.speedup is None:
                rows.append({"model": mid, "status": "not paired", "reason": comp.reason if comp else None})
                continue
            rows.append({"model": mid, "fp32_ms": f.latency_ms.median, "int8_ms": q.latency_ms.median,
                         "speedup": comp.speedup, "method": f"paired, CI {comp.ci_scope}",
                         "range": list(comp.ci) if comp.ci is not None else None, "int8_method": q.cell.method})
    for r in rows:
        if "speedup" in r:
            print(f"{r['model']:>20}: fp32 {r['fp32_ms']:.3f} ms, int8 {r['int8_ms']:.3f} ms, "
                  f"speedup {r['speedup']:.2f}x [{r['range'][0]:.2f}-{r['range'][1]:.2f}] ({r['method']}; "
                  f"int8 built as {r['int8_method']})")
        else:
            print(f"{r['model']:>20}: {r['status']}: {r['reason']}")
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
