"""Quality: an untimed pass of a variant over the model's dataset; the task metric (top-1 for
classifiers, embedding cosine vs FP32 otherwise) and fidelity to the FP32 outputs on the same inputs.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass


def fidelity(out: np.ndarray, ref: np.ndarray, *, logits: bool) -> dict:
    """Cosine (mean over samples), top-1 agreement (classifiers), max abs error and SQNR in dB."""
    a = np.asarray(out, dtype=np.float64).reshape(len(out), -1)
    r = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    if a.shape != r.shape:
        raise ValueError(f"output shape {list(np.shape(out))} differs from the FP32 reference {list(np.shape(ref))}")
    na, nr = np.linalg.norm(a, axis=1), np.linalg.norm(r, axis=1)
    denom = na * nr
    cos = np.where(denom > 0, (a * r).sum(axis=1) / np.where(denom > 0, denom, 1.0), np.where(na == nr, 1.0, 0.0))
    noise = float(((a - r) ** 2).sum())
    signal = float((r ** 2).sum())
    if noise == 0.0:
        sqnr = None  # identical outputs: SQNR is infinite, not a number to store
    elif signal == 0.0:
        sqnr = -math.inf
    else:
        sqnr = 10.0 * math.log10(signal / noise)
    return {"cosine": float(cos.mean()), "cosine_min": float(cos.min()),
            "top1_agreement": float((a.argmax(1) == r.argmax(1)).mean()) if logits else None,
            "max_abs_err": float(np.abs(a - r).max()), "sqnr_db": sqnr, "identical": noise == 0.0}


def top1(out: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(out).reshape(len(out), -1).argmax(1) == np.asarray(labels)).mean())


def run_outputs(session, inputs: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    """The session's first output over all samples, in batches (the last batch may be smaller)."""
    n = len(next(iter(inputs.values())))
    outs = []
    for i in range(0, n, batch_size):
        feeds = {k: np.ascontiguousarray(v[i:i + batch_size]) for k, v in inputs.items()}
        outs.append(np.asarray(session.run(feeds)[0], dtype=np.float32))
    return np.concatenate(outs, axis=0)
