"""Floating-point variants: fp32 (the reference) and, with the variants issue, fp16 and bf16."""
from __future__ import annotations

import os
from pathlib import Path

from effbench.models.sources import ModelArtifact
from effbench.variants import Variant, builder


def onnx_weight_stats(path: str) -> dict:
    import numpy as np
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    params = 0
    for init in m.graph.initializer:
        params += int(np.prod(init.dims)) if init.dims else 1
    return {"size_bytes": os.path.getsize(path), "params": params}


@builder("fp32")
def build_fp32(artifact: ModelArtifact, *, label: str, method, options, folder: Path, calibration=None) -> Variant:
    stats = onnx_weight_stats(artifact.onnx_path)
    stats.update(weight_bits=32.0, compression_vs_fp32=1.0)
    torch_side = {"transform": "fp32"} if artifact.torch_factory else None
    return Variant(model_id=artifact.model_id, label=label, precision="fp32", method=None,
                   onnx_path=artifact.onnx_path, torch=torch_side,
                   torch_reason=None if torch_side else "an onnx: model has no torch module to run",
                   build={"onnx": {"tool": (artifact.export or {}).get("tool", "as given"), **(artifact.export or {})},
                          "torch": {"tool": "eager module", "options": {}}},
                   stats={"onnx": stats})
