"""Quality: an untimed pass of a variant over the model's dataset; the task metric (top-1 for
classifiers, embedding cosine vs FP32 otherwise) and fidelity to the FP32 outputs on the same inputs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from effbench.record import Cell
    from effbench.variants import Variant


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


def quality_pass(cell: Cell, variant: Variant, artifact: dict, inputs: dict[str, np.ndarray],
                 labels: np.ndarray | None, metric: str | None, reference_path: str,
                 min_relative: float, fp32_value: float | None = None, batch_size: int = 64) -> dict:
    """The record's `quality` section for one variant on one runner. Runs in a worker; the FP32 pass of
    the same model and runner must run first: it writes `reference_path` for the others."""
    from effbench.measuring import open_session
    opened = open_session(cell, variant, artifact)
    session, v = opened.session, opened.variant
    arrays = {k: np.asarray(a) for k, a in inputs.items()}
    out = run_outputs(session, arrays, batch_size)
    n = len(out)
    metric = metric or ("top1" if labels is not None else "cosine")
    from effbench.variants.specs import reference_precision
    is_fp32 = v.label == reference_precision()  # the reference itself, not a pruned FP32 variant
    ref_file = Path(reference_path)
    if is_fp32:
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref_file.with_name(ref_file.stem + ".tmp.npz")
        np.savez(tmp, outputs=out)
        tmp.replace(ref_file)
    ref, fid, fid_reason = None, None, None
    if ref_file.is_file():
        with np.load(ref_file, allow_pickle=False) as z:
            ref = z["outputs"]
        if ref.shape != out.shape:
            fid_reason = f"the FP32 reference has shape {list(ref.shape)}, this variant {list(out.shape)}"
            ref = None
    else:
        fid_reason = "no FP32 reference outputs (the FP32 quality pass did not run or failed)"
    if ref is not None:
        fid = fidelity(out, ref, logits=metric == "top1")
    if metric == "top1":
        if labels is None:
            raise ValueError("metric top1 needs labels in the dataset")
        value: float | None = top1(out, labels[:n])
    else:  # embedding models: the task metric is the mean cosine to the FP32 embeddings
        value = fid["cosine"] if fid else None
    base = value if is_fp32 else fp32_value
    relative = (value / base) if (value is not None and base) else None
    section = {"metric": metric, "value": value, "fp32_value": base, "relative": relative,
               "below_floor": (relative < min_relative) if relative is not None else None,
               "min_relative": min_relative, "fidelity": fid, "samples": n}
    if fid is None:
        section["fidelity_reason"] = fid_reason
    if value is None:
        section["reason"] = fid_reason
    return section
