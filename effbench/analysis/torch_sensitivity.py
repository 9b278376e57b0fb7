"""Quantization sensitivity per layer on the torch side (issue 15): torch's own per-module quantization
(`torch.ao.quantization.quantize_dynamic` with a per-module qconfig spec: int8 weights, activations
quantized on the fly) for each `nn.Linear`: that module alone in int8, and every other Linear in int8 with
this one kept FP32; scored like the ONNX Runtime analysis (task metric, output SQNR and cosine against
FP32), beside the module's MACs (FlopCounterMode) and its share of FP32 time (torch's profiler).
Convolutions are listed as not quantized per module: torch's dynamic quantization covers Linear (and
recurrent) modules only, and its static eager flow needs the model rewritten with quant stubs.
Runs in a worker.
"""
from __future__ import annotations

import copy
import statistics
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np


def _outputs(module, inputs: dict[str, np.ndarray], batch: int = 64) -> np.ndarray:
    import torch
    n = len(next(iter(inputs.values())))
    outs = []
    with torch.inference_mode():
        for i in range(0, n, batch):
            out = module(*[torch.from_numpy(np.ascontiguousarray(v[i:i + batch])) for v in inputs.values()])
            out = out[0] if isinstance(out, (tuple, list)) else out
            outs.append(out.float().numpy())
    return np.concatenate(outs).astype(np.float32)


def analyse(artifact: dict, inputs: dict[str, np.ndarray], labels: np.ndarray | None, *,
            profile_runs: int = 10) -> dict[str, Any]:
    """Every nn.Linear's sensitivity, most fragile first, and the all-Linear int8 model's score (the
    same result keys as `variants.sensitivity.analyse`)."""
    import torch
    from torch import nn

    from effbench.analysis.sensitivity import LayerSensitivity, score
    from effbench.models.sources import ModelArtifact
    from effbench.runners import Unsupported
    from effbench.runners.torch_layers import profile_modules
    from effbench.variants import torch_module
    art = ModelArtifact.from_json(artifact)
    if not art.torch_factory:
        raise Unsupported("the model has no torch module (an onnx: source): run the sensitivity on onnxruntime")
    torch.set_num_threads(1)
    fp32 = torch_module(art).eval()
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    ref = _outputs(fp32, inputs)
    ref_metric = score(ref, ref, labels, 0.0).metric
    linears = [n for n, m in fp32.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise Unsupported("the module has no nn.Linear: torch's per-module dynamic quantization has nothing to quantize")
    others = sorted({type(m).__name__ for m in fp32.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))})
    one = {k: v[:1] for k, v in inputs.items()}
    events, mods = profile_modules(fp32, tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in one.values()),
                                   profile_runs)
    from effbench.measure.layers import fold, kernel_times
    times = fold(kernel_times(events, profile_runs), mods)
    share = {r.layer: r.share for r in times}
    macs = {m["name"]: m["macs"] or 0 for m in mods}

    def quantized(names: set[str]) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
            q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), names, dtype=torch.qint8)
        return _outputs(q, inputs)

    uniform = score(quantized(set(linears)), ref, labels, ref_metric)
    rows = []
    for name in linears:
        rows.append(LayerSensitivity(
            name, "Linear", int(macs.get(name, 0)), share.get(name),
            only_this=score(quantized({name}), ref, labels, ref_metric),
            all_but_this=score(quantized(set(linears) - {name}), ref, labels, ref_metric)))
    rows.sort(key=lambda r: (-(r.only_this.metric_drop or 0.0), r.only_this.sqnr_db if r.only_this.sqnr_db is not None
                             else float("inf")))
    return {"rows": [r.to_json() for r in rows], "fp32_metric": ref_metric, "uniform_int8": asdict(uniform),
            "method": "dynamic (torch per-module)", "samples": len(ref), "layers_in_graph": len(linears),
            "metric": "top1" if labels is not None else "cosine to FP32",
            "not_quantized": (f"{', '.join(others)}: torch's dynamic quantization covers nn.Linear only"
                              if others else None),
            "median_only_this_sqnr_db": statistics.median([r.only_this.sqnr_db for r in rows
                                                           if r.only_this.sqnr_db is not None] or [0.0])}
