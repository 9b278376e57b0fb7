"""What a pruned variant records: its sparsity or pruning section per side, the size its zeros would take
stored sparse (bitmask or CSR, whichever is smaller per tensor) against the dense file that ran, its
compression against the unpruned FP32 model, and which runtime can run it (2:4 needs CUDA kernels).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from effbench.models.sources import ModelArtifact
from effbench.variants import Variant, torch_module

TWO_FOUR_ORT = ("ONNX Runtime has no kernel that skips 2:4 semi-structured zeros; run dense, these weights "
                "would measure a magnitude-pruned variant (use prune: {method: magnitude, amount: 0.5})")
TOOLS = {"magnitude": {"onnx": "effbench.variants.prune (numpy: the smallest |w| of ONNX initializers zeroed)",
                       "torch": "torch.nn.utils.prune (l1_unstructured / global_unstructured, then remove)"},
         "2:4": {"onnx": "effbench.variants.prune (numpy: 2 largest |w| of every 4 along the input kept)",
                 "torch": "torch.nn.utils.prune.custom_from_mask (2:4 mask), torch.sparse.to_sparse_semi_structured "
                          "at load on CUDA"},
         "channel": {"onnx": "effbench.variants.channels (ONNX graph rewrite)",
                     "torch": "effbench.variants.channels (layers resized, checked against the pruned graph)"}}


def tensor_storage(a: np.ndarray) -> tuple[int, int, str]:
    """(dense bytes, bytes in the smallest of dense / bitmask / CSR, that format) of one weight tensor.
    Bitmask: the non-zero values + one bit per weight; CSR: values + column indices (16-bit when the row is
    shorter than 65536) + row offsets (32-bit)."""
    n, nnz, item = a.size, int(np.count_nonzero(a)), a.itemsize
    rows = a.shape[0] if a.ndim else 1
    cols = n // max(rows, 1)
    options = {"dense": a.nbytes, "bitmask": nnz * item + math.ceil(n / 8),
               "csr": nnz * (item + (2 if cols < 65536 else 4)) + (rows + 1) * 4}
    best = min(options, key=options.get)
    return a.nbytes, options[best], best


def _storage(arrays, file_bytes: int) -> dict[str, Any]:
    dense = stored = 0
    formats: dict[str, int] = {}
    for a in arrays:
        if a.ndim < 2 or a.size < 64:
            continue
        d, s, fmt = tensor_storage(a)
        dense, stored = dense + d, stored + s
        if fmt != "dense":
            formats[fmt] = formats.get(fmt, 0) + 1
    sparse = file_bytes - dense + stored
    return {"dense_bytes": int(file_bytes), "sparse_bytes": int(sparse),
            "ratio": round(file_bytes / sparse, 3) if sparse else None, "tensors_stored_sparse": formats,
            "how": "weight tensors stored as bitmask or CSR where that is smaller (estimated from the zeros; "
                   "the file that ran is dense)"}


def onnx_storage(path: str) -> dict[str, Any]:
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    return _storage((numpy_helper.to_array(t) for t in m.graph.initializer), os.path.getsize(path))


def torch_storage(path: str) -> dict[str, Any]:
    from effbench.variants import TORCH_STATE_LOADERS
    saved = TORCH_STATE_LOADERS["load"](path)

    def arrays():
        for v in saved["state"].values():
            for t in (v if isinstance(v, (tuple, list)) else [v]):
                if hasattr(t, "is_quantized") and t.is_quantized:
                    yield t.int_repr().numpy()
                elif hasattr(t, "numpy") and not t.is_meta and t.dtype.is_floating_point:
                    yield t.detach().float().numpy() if str(t.dtype) == "torch.bfloat16" else t.detach().numpy()
    return _storage(arrays(), os.path.getsize(path))


def _torch_fp32_bytes(artifact: ModelArtifact) -> int:
    sd = torch_module(artifact).state_dict()
    return int(sum(t.numel() * t.element_size() for t in sd.values() if hasattr(t, "element_size")))


def finish(variant: Variant, original: ModelArtifact, pruned, prune: dict, floating: bool) -> Variant:
    """The precision's variant, built from the pruned model, with what pruning did on each side."""
    method = prune["method"]
    key = "pruning" if method == "channel" else "sparsity"
    stats = {k: dict(v) for k, v in variant.stats.items()}
    build = {k: (dict(v) if isinstance(v, dict) else v) for k, v in variant.build.items()}
    onnx_path, onnx_reason = variant.onnx_path, variant.onnx_reason
    torch_side, torch_reason = variant.torch, variant.torch_reason
    how = {"method": method, **{k: v for k, v in prune.items() if k != "method"}, "fine_tuned": False}

    if pruned.onnx is None:
        onnx_path, onnx_reason = None, pruned.onnx_reason
        stats.pop("onnx", None)
    elif onnx_path:
        s = stats.setdefault("onnx", {})
        s[key] = dict(pruned.onnx)
        if key == "sparsity" and not variant.emulated:
            s[key]["storage"] = onnx_storage(onnx_path)
        if s.get("size_bytes"):
            s["compression_vs_fp32"] = round(os.path.getsize(original.onnx_path) / s["size_bytes"], 3)
        build["onnx"] = {**build.get("onnx", {}), "prune": {**how, "tool": TOOLS[method]["onnx"]}}
        if method == "2:4":
            onnx_path, onnx_reason = None, TWO_FOUR_ORT

    if pruned.torch is None:
        torch_side, torch_reason = None, pruned.torch_reason
        stats.pop("torch", None)
    elif torch_side is not None:
        torch_side = {**torch_side, "artifact": pruned.artifact.to_json()}
        s = stats.setdefault("torch", {})
        s[key] = dict(pruned.torch)
        if key == "sparsity" and not variant.emulated:
            s[key]["storage"] = torch_storage(torch_side.get("artifact_path") or pruned.artifact.torch_factory_args[2])
        if s.get("size_bytes"):
            s["compression_vs_fp32"] = round(_torch_fp32_bytes(original) / s["size_bytes"], 3)
        build["torch"] = {**build.get("torch", {}), "prune": {**how, "tool": TOOLS[method]["torch"]}}
        if method == "2:4":
            if floating:
                from effbench.variants.pruned import semi_structured_cpu_reason
                torch_side.update({"semi_structured": list(pruned.semi_structured or []),
                                   "cpu_reason": semi_structured_cpu_reason()})
            else:
                torch_side, torch_reason = None, ("torch's 2:4 semi-structured kernels are built here for float "
                                                  "weights only (fp32, fp16, bf16)")
    return dataclasses.replace(variant, onnx_path=onnx_path, onnx_reason=onnx_reason, torch=torch_side,
                               torch_reason=torch_reason, stats=stats, build=build,
                               base_graph=pruned.artifact.onnx_path if pruned.onnx is not None else None)
