"""Quantization sensitivity per layer (issue 15): for each quantizable layer of an ONNX graph, quantize that
layer alone, and separately keep it alone in FP32 with the rest quantized, with ONNX Runtime's own
quantizer (node include / exclude lists); score each on the inputs against the FP32 outputs (the task
metric, output SQNR and cosine) beside the layer's MACs and share of FP32 time. Runs in a worker.
"""
from __future__ import annotations

import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

QUANTIZABLE = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class Score:
    metric: float | None       # top-1 against the labels, or cosine to the FP32 outputs
    metric_drop: float | None  # FP32's metric minus this one (positive: worse)
    sqnr_db: float | None      # of the model's output against FP32's (None: identical)
    cosine: float


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    op_type: str
    macs: int
    time_share: float | None
    only_this: Score           # this layer quantized, the rest FP32: how fragile the layer is
    all_but_this: Score        # the rest quantized, this layer FP32: what keeping it recovers

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("only_this", "all_but_this")}
        for side in ("only_this", "all_but_this"):
            out.update({f"{side}_{k}": v for k, v in asdict(getattr(self, side)).items()})
        return out


def graph_outputs(path: str, inputs: dict[str, np.ndarray], batch: int = 64) -> np.ndarray:
    from effbench.runners.onnxruntime import cpu_session
    sess = cpu_session(path, 1)
    n = len(next(iter(inputs.values())))
    return np.concatenate([np.asarray(sess.run(None, {k: np.ascontiguousarray(v[i:i + batch])
                                                      for k, v in inputs.items()})[0], dtype=np.float32)
                           for i in range(0, n, batch)])


def score(out: np.ndarray, ref: np.ndarray, labels: np.ndarray | None, ref_metric: float) -> Score:
    from effbench.measure.quality import fidelity, top1
    fid = fidelity(out, ref, logits=labels is not None)
    metric = top1(out, labels) if labels is not None else fid["cosine"]
    return Score(metric, ref_metric - metric, fid.get("sqnr_db"), fid["cosine"])


def analyse(onnx_path: str, inputs: dict[str, np.ndarray], labels: np.ndarray | None, method: str,
            calibration: dict[str, np.ndarray] | None, *, per_channel: bool = True, samples: int = 256,
            op_types: list[str] | None = None, profile_runs: int = 20) -> dict[str, Any]:
    """Every quantizable layer's sensitivity, most fragile first, and the uniform int8 model's score."""
    from effbench.measure.flops import count_work
    from effbench.measure.layers import fold, kernel_times, links
    from effbench.runners.onnxruntime import profile_graph
    from effbench.variants.integer import clean_copy, quantize_onnx_int8
    folder = Path(tempfile.mkdtemp(prefix="effbench-sensitivity-"))
    src = clean_copy(onnx_path, folder / "fp32.onnx")
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    ref = graph_outputs(src, inputs)
    ref_metric = score(ref, ref, labels, 0.0).metric
    work = count_work(src, batch_size=1)
    allowed = tuple(op_types or QUANTIZABLE)
    layers = [n for n in work.by_node if n.get("op_type") in allowed and n.get("macs")]
    one = {k: np.ascontiguousarray(v[:1]) for k, v in inputs.items()}
    times = fold(kernel_times(profile_graph(src, 1, one, profile_runs), profile_runs), work.by_node, links(src))
    share = {r.layer: r.share for r in times}
    calib = calibration if method == "static" else None

    def quantized(tag: str, **nodes) -> np.ndarray:
        out = folder / f"{tag}.onnx"
        quantize_onnx_int8(src, str(out), method, per_channel=per_channel, calibration=calib, samples=samples,
                           op_types=op_types, **nodes)
        try:
            return graph_outputs(str(out), inputs)
        finally:
            out.unlink(missing_ok=True)

    uniform = score(quantized("all"), ref, labels, ref_metric)
    rows = []
    for i, n in enumerate(layers):
        rows.append(LayerSensitivity(
            n["name"], n["op_type"], int(n["macs"]), share.get(n["name"]),
            only_this=score(quantized(f"only{i}", nodes_to_quantize=[n["name"]]), ref, labels, ref_metric),
            all_but_this=score(quantized(f"but{i}", nodes_to_exclude=[n["name"]]), ref, labels, ref_metric)))
    rows.sort(key=lambda r: (-(r.only_this.metric_drop or 0.0), r.only_this.sqnr_db if r.only_this.sqnr_db is not None
                             else float("inf")))
    return {"rows": [r.to_json() for r in rows], "fp32_metric": ref_metric, "uniform_int8": asdict(uniform),
            "method": method, "samples": len(ref), "layers_in_graph": len(layers),
            "metric": "top1" if labels is not None else "cosine to FP32",
            "median_only_this_sqnr_db": statistics.median([r.only_this.sqnr_db for r in rows
                                                           if r.only_this.sqnr_db is not None] or [0.0])}
