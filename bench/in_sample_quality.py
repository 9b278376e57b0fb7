"""How much a quality figure scored on the calibration samples overstates a static-int8 variant's quality.

A held-out CNN (not the quickstart's: 3 convolutions, 16/32/32 channels, trained here on the digits training
split in seconds) is quantized with ONNX Runtime's static QDQ (per-tensor, MinMax: the setting most prone
to fitting its calibration set), calibrated on K samples of the held-out digits; its top-1 relative to FP32
is then scored on those same K samples (in-sample, what effbench did before the split) and on the other
samples (out-of-sample, what it does now). Seeds vary the draw. Deterministic: no timing.

    .venv/bin/python bench/in_sample_quality.py [--json bench/in_sample_quality.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effbench.models.zoo import digits_split  # noqa: E402
from effbench.variants.integer import quantize_onnx_int8  # noqa: E402


KS = (2, 4, 8, 32, 128)  # calibration samples: few is where a calibration set is fitted


def heldout_cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32 * 16, 10))


def train(model: nn.Module) -> nn.Module:
    xtr, ytr, _, _ = digits_split()
    xt, yt = torch.from_numpy(xtr).reshape(-1, 1, 8, 8), torch.from_numpy(ytr)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(30):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    return model.eval()


def logits(path: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def top1(path: str, x: np.ndarray, y: np.ndarray) -> float:
    return float((logits(path, x).argmax(1) == y).mean())


def sqnr_db(path: str, ref: str, x: np.ndarray) -> float:
    """Signal to quantization noise of the variant's logits against FP32's, in dB (the fidelity figure)."""
    a, r = logits(path, x), logits(ref, x)
    return float(10 * np.log10(np.sum(r ** 2) / max(np.sum((a - r) ** 2), 1e-30)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args()
    _, _, xte, yte = digits_split()
    x, y = xte.reshape(-1, 1, 8, 8).astype(np.float32), yte
    model = train(heldout_cnn())
    rows = []
    with tempfile.TemporaryDirectory() as d:
        fp32 = f"{d}/fp32.onnx"
        torch.onnx.export(model, (torch.from_numpy(x[:1]),), fp32, dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
        for k in KS:
            for seed in range(a.seeds):
                order = np.random.default_rng(seed).permutation(len(x))
                cal, rest = order[:k], order[k:]
                q = f"{d}/int8-{k}-{seed}.onnx"
                quantize_onnx_int8(fp32, q, "static", per_channel=False, calibration={"x": x[cal]}, samples=k)
                ins = top1(q, x[cal], y[cal]) / max(top1(fp32, x[cal], y[cal]), 1e-9)
                out = top1(q, x[rest], y[rest]) / max(top1(fp32, x[rest], y[rest]), 1e-9)
                s_in, s_out = sqnr_db(q, fp32, x[cal]), sqnr_db(q, fp32, x[rest])
                rows.append({"calibration_samples": k, "seed": seed, "in_sample_relative": ins,
                             "out_of_sample_relative": out, "overstated_by": ins - out,
                             "in_sample_sqnr_db": s_in, "out_of_sample_sqnr_db": s_out, "sqnr_overstated_db": s_in - s_out})
    print(f"held-out CNN, static int8 (per-tensor MinMax), {len(x)} held-out digits, {a.seeds} seeds per K")
    print(f"{'K':>5} {'rel. top-1 in / out':>20} {'overstated (median, range)':>28} {'SQNR dB in / out':>18} "
          f"{'overstated dB (median, range)':>30}")
    for k in KS:
        r = [row for row in rows if row["calibration_samples"] == k]
        d = [row["overstated_by"] for row in r]
        e = [row["sqnr_overstated_db"] for row in r]
        print(f"{k:>5} {np.median([row['in_sample_relative'] for row in r]):>9.4f} / "
              f"{np.median([row['out_of_sample_relative'] for row in r]):<8.4f} "
              f"{np.median(d):>+10.4f} [{min(d):+.4f}, {max(d):+.4f}] "
              f"{np.median([row['in_sample_sqnr_db'] for row in r]):>8.1f} / "
              f"{np.median([row['out_of_sample_sqnr_db'] for row in r]):<7.1f} "
              f"{np.median(e):>+8.2f} [{min(e):+.2f}, {max(e):+.2f}]")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
