"""Binary variants: 1-bit weights, sign(W) x per-output-channel scale mean|W| (XNOR-Net, Rastegari et al.
2016), first and last weight layers kept FP32 by default. Stored bit-packed (np.packbits) so the size is
real; run dequantized (no runtime here has a 1-bit kernel), hence `emulated: true`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from effbench.errors import UserError
from effbench.models.sources import ModelArtifact
from effbench.variants import TORCH_STATE_LOADERS, Variant, builder, first_line, onnx_stats, torch_module


def binarize(w: np.ndarray, out_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(signs as bool, scale per output channel): w ~ where(signs, 1, -1) * scale (broadcast on out_axis)."""
    w = np.asarray(w, dtype=np.float32)
    other = tuple(a for a in range(w.ndim) if a != out_axis)
    scale = np.abs(w).mean(axis=other).astype(np.float32)
    return w >= 0, scale


def dequantize(signs: np.ndarray, scale: np.ndarray, out_axis: int) -> np.ndarray:
    shape = [1] * signs.ndim
    shape[out_axis] = -1
    return np.where(signs, 1.0, -1.0).astype(np.float32) * scale.reshape(shape)


def _pick(names: list[str], keep: list[str], what: str) -> tuple[list[str], list[str]]:
    """(binarized, kept) among weight-layer `names` in graph/module order."""
    kept: set[str] = set()
    for k in keep:
        if k == "first" and names:
            kept.add(names[0])
        elif k == "last" and names:
            kept.add(names[-1])
        elif k in names:
            kept.add(k)
        elif k not in ("first", "last"):
            raise UserError(f"binary keep_fp32 names '{k}', which is not a weight layer of the {what}",
                            field="precisions", fix=f"use first, last or one of {', '.join(names[:6])} ...")
    return [n for n in names if n not in kept], [n for n in names if n in kept]


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)  # uncompressed: the packed bits are the size claimed
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------- ONNX
def _weight_nodes(model) -> list[tuple[object, str, int]]:
    """(node, weight initializer name, output-channel axis) for Conv/MatMul/Gemm with a constant weight."""
    from onnx import helper
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if len(node.input) < 2 or node.input[1] not in inits or len(inits[node.input[1]].dims) < 2:
            continue
        if node.op_type == "Conv":
            out.append((node, node.input[1], 0))
        elif node.op_type == "MatMul" and len(inits[node.input[1]].dims) == 2:
            out.append((node, node.input[1], 1))
        elif node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            out.append((node, node.input[1], 0 if attrs.get("transB", 0) else 1))
    return out


def _onnx_binary(artifact: ModelArtifact, keep: list[str], folder: Path) -> dict:
    import onnx
    from onnx import numpy_helper
    model = onnx.load(artifact.onnx_path)
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    layers = _weight_nodes(model)
    if not layers:
        raise _Nothing("the graph has no Conv/MatMul/Gemm with a constant weight to binarize")
    names = [n.name for n, _, _ in layers]
    binarized, kept = _pick(names, keep, "ONNX graph")
    if not binarized:
        raise _Nothing(f"every weight layer is kept FP32 by keep_fp32 {keep} ({len(names)} layers)")
    inits = {t.name: t for t in model.graph.initializer}
    packed: dict[str, np.ndarray] = {}
    done: set[str] = set()
    for node, wname, axis in layers:
        if node.name not in binarized or wname in done:
            continue
        w = numpy_helper.to_array(inits[wname])
        signs, scale = binarize(w, axis)
        inits[wname].CopyFrom(numpy_helper.from_array(dequantize(signs, scale, axis), wname))
        packed[f"bits/{wname}"] = np.packbits(signs.reshape(-1))
        packed[f"scale/{wname}"] = scale
        packed[f"shape/{wname}"] = np.asarray(w.shape, dtype=np.int64)
        packed[f"axis/{wname}"] = np.asarray([axis], dtype=np.int8)
        done.add(wname)
    for t in model.graph.initializer:
        if t.name not in done:
            packed[f"tensor/{t.name}"] = numpy_helper.to_array(t)
    out = folder / "model-binary-emulated.onnx"
    onnx.save(model, str(out))
    npz = _save_npz(folder / "model-binary.onnx-weights.npz", packed)
    return {"path": str(out), "npz": str(npz), "binary_nodes": binarized, "kept": kept}


# -------------------------------------------------------------------------------------------- torch
def _torch_binary(artifact: ModelArtifact, keep: list[str], folder: Path) -> dict:
    from torch import nn
    module = torch_module(artifact)
    layers = [n for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if not layers:
        raise _Nothing("the module has no Linear or Conv layer to binarize")
    binarized, kept = _pick(layers, keep, "torch module")
    if not binarized:
        raise _Nothing(f"every weight layer is kept FP32 by keep_fp32 {keep} ({len(layers)} layers)")
    sd = module.state_dict()
    packed: dict[str, np.ndarray] = {}
    bin_keys = {f"{n}.weight" for n in binarized}
    for key, t in sd.items():
        a = t.detach().cpu().numpy()
        if key in bin_keys:
            signs, scale = binarize(a, 0)
            packed[f"bits/{key}"] = np.packbits(signs.reshape(-1))
            packed[f"scale/{key}"] = scale
            packed[f"shape/{key}"] = np.asarray(a.shape, dtype=np.int64)
            packed[f"axis/{key}"] = np.asarray([0], dtype=np.int8)
        else:
            packed[f"tensor/{key}"] = a
    for name, b in module.named_buffers():
        if name not in sd:
            packed[f"buffer/{name}"] = b.detach().cpu().numpy()
    npz = _save_npz(folder / "model-binary.torch-weights.npz", packed)
    return {"npz": str(npz), "binarized": binarized, "kept": kept, "module": module}


def load_packed_state(path: str) -> dict:
    """{"state": name -> tensor (binarized weights dequantized), "extra_buffers": ..., "meta": {}}."""
    import torch
    state, buffers = {}, {}
    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        for f in files:
            kind, _, key = f.partition("/")
            if kind == "tensor":
                state[key] = torch.from_numpy(z[f].copy())
            elif kind == "buffer":
                buffers[key] = torch.from_numpy(z[f].copy())
            elif kind == "bits":
                shape = tuple(int(d) for d in z[f"shape/{key}"])
                n = int(np.prod(shape))
                signs = np.unpackbits(z[f], count=n).astype(bool).reshape(shape)
                state[key] = torch.from_numpy(dequantize(signs, z[f"scale/{key}"], int(z[f"axis/{key}"][0])))
    return {"state": state, "extra_buffers": buffers, "meta": {}}


def packed_stats(npz: str, fp32_size: int, fp32_bytes_binarized: int, params: int) -> dict:
    size = os.path.getsize(npz)
    with np.load(npz, allow_pickle=False) as z:
        bits = sum(z[f].nbytes for f in z.files if f.startswith("bits/"))
        scales = sum(z[f].nbytes for f in z.files if f.startswith("scale/"))
        rest = sum(z[f].nbytes for f in z.files if f.startswith(("tensor/", "buffer/")))
    wbytes = bits + scales + rest
    return {"size_bytes": size, "weight_bytes": int(wbytes), "params": int(params),
            "weight_bits": round(8 * wbytes / params, 3) if params else None,
            "compression_vs_fp32": round(fp32_size / size, 3),
            "binarized_layers": {"fp32_bytes": int(fp32_bytes_binarized), "packed_bytes": int(bits + scales),
                                 "ratio": round(fp32_bytes_binarized / (bits + scales), 3) if bits else None},
            "stored_as": "bit-packed npz (np.packbits signs + float32 per-channel scales)"}


class _Nothing(Exception):
    pass


@builder("binary")
def build_binary(artifact: ModelArtifact, *, label: str, method, options, folder: Path, calibration=None) -> Variant:
    keep = list(options.get("keep_fp32", ["first", "last"]))
    stats, build = {}, {}
    onnx_path = onnx_reason = None
    binary_nodes: tuple[str, ...] = ()
    tool = "effbench.variants.binary (sign x mean|W| per output channel, XNOR-Net)"
    try:
        res = _onnx_binary(artifact, keep, folder)
        onnx_path, binary_nodes = res["path"], tuple(res["binary_nodes"])
        fp = onnx_stats(artifact.onnx_path, artifact.onnx_path)
        with np.load(res["npz"]) as z:
            fp32_bin = sum(int(np.prod(z[f])) * 4 for f in z.files if f.startswith("shape/"))
        stats["onnx"] = packed_stats(res["npz"], fp["size_bytes"], fp32_bin, fp["params"])
        stats["onnx"]["packed_path"] = res["npz"]
        build["onnx"] = {"tool": tool, "options": {"keep_fp32": keep}, "binarized": len(binary_nodes),
                         "kept_fp32": res["kept"], "run_as": "dequantized float32 graph (emulated)"}
    except UserError:
        raise
    except _Nothing as e:
        onnx_reason = str(e)
    except Exception as e:
        onnx_reason = f"binarizing the ONNX graph failed: {type(e).__name__}: {first_line(e)}"
    torch_side, torch_reason = None, "an onnx: model has no torch module to run"
    if artifact.torch_factory:
        try:
            res = _torch_binary(artifact, keep, folder)
            m = res["module"]
            sd = m.state_dict()
            fp32_size = sum(t.numel() * t.element_size() for t in sd.values())
            fp32_bin = sum(sd[f"{n}.weight"].numel() * 4 for n in res["binarized"])
            stats["torch"] = packed_stats(res["npz"], fp32_size, fp32_bin, sum(p.numel() for p in m.parameters()))
            torch_side, torch_reason = {"transform": "packed-bits", "artifact_path": res["npz"]}, None
            build["torch"] = {"tool": tool, "options": {"keep_fp32": keep}, "binarized": res["binarized"],
                              "kept_fp32": res["kept"], "run_as": "dequantized float32 module (emulated)"}
        except UserError:
            raise
        except _Nothing as e:
            torch_reason = str(e)
        except Exception as e:
            torch_reason = f"binarizing the torch module failed: {type(e).__name__}: {first_line(e)}"
    return Variant(model_id=artifact.model_id, label=label, precision="binary", method="sign-scale-xnor",
                   onnx_path=onnx_path, onnx_reason=onnx_reason, torch=torch_side, torch_reason=torch_reason,
                   build=build, stats=stats, emulated=True, binary_nodes=binary_nodes)


TORCH_STATE_LOADERS["packed-bits"] = load_packed_state
