"""Packed low-bit weights, shared by the binary and ternary families: which weight layers to pack, the npz
they are stored in (the size a variant claims is that file's), loading it back dequantized for the torch
runner, and the one builder both families run on the ONNX graph and the torch module (emulated: no runtime
here has a 1- or 2-bit kernel).

A family is a `Codec`: how a weight becomes packed codes plus a float32 scale per output channel, and back.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effbench.errors import UserError
from effbench.models.sources import ModelArtifact
from effbench.variants import Variant, first_line, onnx_stats, torch_module


@dataclass(frozen=True)
class Codec:
    precision: str                  # the precision it builds
    kind: str                       # the npz prefix of its codes: "bits", "trits"
    bits: int                       # stored bits per weight
    method: str                     # Variant.method
    tool: str                       # what the build record names
    stored_as: str                  # how the npz holds it
    layers_key: str                 # the stats key of the packed layers' sizes: "binarized_layers"
    # (weights, out axis) -> (packed uint8 codes, float32 scale per output channel)
    encode: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
    # (packed codes, scale, shape, out axis) -> float32 weights
    decode: Callable[[np.ndarray, np.ndarray, tuple[int, ...], int], np.ndarray]


CODECS: dict[str, Codec] = {}   # kind -> codec, filled where each family is defined


def register_codec(codec: Codec) -> Codec:
    CODECS[codec.kind] = codec
    return codec


def channel_shape(ndim: int, out_axis: int) -> list[int]:
    """The broadcast shape of a per-output-channel vector."""
    shape = [1] * ndim
    shape[out_axis] = -1
    return shape


def pick(names: list[str], keep: list[str], what: str, precision: str) -> tuple[list[str], list[str]]:
    """(packed, kept) among weight-layer `names` in graph/module order."""
    kept: set[str] = set()
    for k in keep:
        if k == "first" and names:
            kept.add(names[0])
        elif k == "last" and names:
            kept.add(names[-1])
        elif k in names:
            kept.add(k)
        elif k not in ("first", "last"):
            raise UserError(f"{precision} keep_fp32 names '{k}', which is not a weight layer of the {what}",
                            field="precisions", fix=f"use first, last or one of {', '.join(names[:6])} ...")
    return [n for n in names if n not in kept], [n for n in names if n in kept]


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)  # uncompressed: the packed codes are the size claimed
    tmp.replace(path)
    return path


def weight_nodes(model) -> list[tuple[object, str, int]]:
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


def name_nodes(model) -> None:
    """Give every unnamed node a stable name (BOPs and layer lists refer to nodes by name)."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"


class Nothing(Exception):
    """Nothing to pack on this side: the variant says why instead of failing."""


def _pack(packed: dict, key: str, w: np.ndarray, axis: int, codec: Codec) -> np.ndarray:
    codes, scale = codec.encode(w, axis)
    packed[f"{codec.kind}/{key}"] = codes
    packed[f"scale/{key}"] = scale
    packed[f"shape/{key}"] = np.asarray(w.shape, dtype=np.int64)
    packed[f"axis/{key}"] = np.asarray([axis], dtype=np.int8)
    return codec.decode(codes, scale, tuple(w.shape), axis)


def pack_onnx(artifact: ModelArtifact, keep: list[str], folder: Path, codec: Codec) -> dict:
    import onnx
    from onnx import numpy_helper
    model = onnx.load(artifact.onnx_path)
    name_nodes(model)
    layers = weight_nodes(model)
    if not layers:
        raise Nothing(f"the graph has no Conv/MatMul/Gemm with a constant weight to make {codec.precision}")
    names = [n.name for n, _, _ in layers]
    packed_nodes, kept = pick(names, keep, "ONNX graph", codec.precision)
    if not packed_nodes:
        raise Nothing(f"every weight layer is kept FP32 by keep_fp32 {keep} ({len(names)} layers)")
    inits = {t.name: t for t in model.graph.initializer}
    packed: dict[str, np.ndarray] = {}
    done: set[str] = set()
    for node, wname, axis in layers:
        if node.name not in packed_nodes or wname in done:
            continue
        w = numpy_helper.to_array(inits[wname])
        inits[wname].CopyFrom(numpy_helper.from_array(_pack(packed, wname, w, axis, codec), wname))
        done.add(wname)
    for t in model.graph.initializer:
        if t.name not in done:
            packed[f"tensor/{t.name}"] = numpy_helper.to_array(t)
    out = folder / f"model-{codec.precision}-emulated.onnx"
    onnx.save(model, str(out))
    npz = save_npz(folder / f"model-{codec.precision}.onnx-weights.npz", packed)
    return {"path": str(out), "npz": str(npz), "nodes": packed_nodes, "kept": kept}


def pack_torch(artifact: ModelArtifact, keep: list[str], folder: Path, codec: Codec) -> dict:
    from torch import nn
    module = torch_module(artifact)
    layers = [n for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if not layers:
        raise Nothing(f"the module has no Linear or Conv layer to make {codec.precision}")
    packed_layers, kept = pick(layers, keep, "torch module", codec.precision)
    if not packed_layers:
        raise Nothing(f"every weight layer is kept FP32 by keep_fp32 {keep} ({len(layers)} layers)")
    sd = module.state_dict()
    packed: dict[str, np.ndarray] = {}
    keys = {f"{n}.weight" for n in packed_layers}
    for key, t in sd.items():
        a = t.detach().cpu().numpy()
        if key in keys:
            _pack(packed, key, a, 0, codec)
        else:
            packed[f"tensor/{key}"] = a
    for name, b in module.named_buffers():
        if name not in sd:
            packed[f"buffer/{name}"] = b.detach().cpu().numpy()
    npz = save_npz(folder / f"model-{codec.precision}.torch-weights.npz", packed)
    return {"npz": str(npz), "layers": packed_layers, "kept": kept, "module": module}


def load_packed_state(path: str) -> dict:
    """{"state": name -> tensor (packed weights dequantized), "extra_buffers": ..., "meta": {}}."""
    import torch
    state, buffers = {}, {}
    with np.load(path, allow_pickle=False) as z:
        for f in z.files:
            kind, _, key = f.partition("/")
            if kind == "tensor":
                state[key] = torch.from_numpy(z[f].copy())
            elif kind == "buffer":
                buffers[key] = torch.from_numpy(z[f].copy())
            elif kind in CODECS:
                shape = tuple(int(d) for d in z[f"shape/{key}"])
                w = CODECS[kind].decode(z[f], z[f"scale/{key}"], shape, int(z[f"axis/{key}"][0]))
                state[key] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    return {"state": state, "extra_buffers": buffers, "meta": {}}


def packed_stats(npz: str, fp32_size: int, fp32_bytes_packed: int, params: int, codec: Codec) -> dict:
    size = os.path.getsize(npz)
    with np.load(npz, allow_pickle=False) as z:
        codes = sum(z[f].nbytes for f in z.files if f.startswith(f"{codec.kind}/"))
        scales = sum(z[f].nbytes for f in z.files if f.startswith("scale/"))
        rest = sum(z[f].nbytes for f in z.files if f.startswith(("tensor/", "buffer/")))
    wbytes = codes + scales + rest
    return {"size_bytes": size, "weight_bytes": int(wbytes), "params": int(params),
            "weight_bits": round(8 * wbytes / params, 3) if params else None,
            "compression_vs_fp32": round(fp32_size / size, 3),
            codec.layers_key: {"fp32_bytes": int(fp32_bytes_packed), "packed_bytes": int(codes + scales),
                               "ratio": round(fp32_bytes_packed / (codes + scales), 3) if codes else None},
            "stored_as": codec.stored_as}


def build_packed(artifact: ModelArtifact, *, label: str, options: dict, folder: Path, codec: Codec) -> Variant:
    """The variant of a packed family: the ONNX graph and the torch module with their weight layers
    (but the kept ones) replaced by the codec's dequantized weights, run emulated, sized as packed."""
    keep = list(options.get("keep_fp32", ["first", "last"]))
    stats, build = {}, {}
    onnx_path = onnx_reason = None
    nodes: tuple[str, ...] = ()
    verb = f"making the {{}} {codec.precision} failed"
    try:
        res = pack_onnx(artifact, keep, folder, codec)
        onnx_path, nodes = res["path"], tuple(res["nodes"])
        fp = onnx_stats(artifact.onnx_path, artifact.onnx_path)
        with np.load(res["npz"]) as z:
            fp32_packed = sum(int(np.prod(z[f])) * 4 for f in z.files if f.startswith("shape/"))
        stats["onnx"] = packed_stats(res["npz"], fp["size_bytes"], fp32_packed, fp["params"], codec)
        stats["onnx"]["packed_path"] = res["npz"]
        build["onnx"] = {"tool": codec.tool, "options": {"keep_fp32": keep}, codec.layers_key.split("_")[0]: len(nodes),
                         "kept_fp32": res["kept"], "run_as": "dequantized float32 graph (emulated)"}
    except UserError:
        raise
    except Nothing as e:
        onnx_reason = str(e)
    except Exception as e:
        onnx_reason = f"{verb.format('ONNX graph')}: {type(e).__name__}: {first_line(e)}"
    torch_side, torch_reason = None, "an onnx: model has no torch module to run"
    if artifact.torch_factory:
        try:
            res = pack_torch(artifact, keep, folder, codec)
            m = res["module"]
            sd = m.state_dict()
            fp32_size = sum(t.numel() * t.element_size() for t in sd.values())
            fp32_packed = sum(sd[f"{n}.weight"].numel() * 4 for n in res["layers"])
            stats["torch"] = packed_stats(res["npz"], fp32_size, fp32_packed, sum(p.numel() for p in m.parameters()),
                                          codec)
            torch_side, torch_reason = {"transform": f"packed-{codec.kind}", "artifact_path": res["npz"]}, None
            build["torch"] = {"tool": codec.tool, "options": {"keep_fp32": keep},
                              codec.layers_key.split("_")[0]: res["layers"], "kept_fp32": res["kept"],
                              "run_as": "dequantized float32 module (emulated)"}
        except UserError:
            raise
        except Nothing as e:
            torch_reason = str(e)
        except Exception as e:
            torch_reason = f"{verb.format('torch module')}: {type(e).__name__}: {first_line(e)}"
    one_bit = codec.bits == 1  # binary nodes count 1 x 1-bit BOPs (XNOR-popcount); others their weight bits
    return Variant(model_id=artifact.model_id, label=label, precision=codec.precision, method=codec.method,
                   onnx_path=onnx_path, onnx_reason=onnx_reason, torch=torch_side, torch_reason=torch_reason,
                   build=build, stats=stats, emulated=True, binary_nodes=nodes if one_bit else (),
                   node_bits={} if one_bit else {n: codec.bits for n in nodes})
