"""Integer variants: int8 (ONNX Runtime dynamic or static QDQ; torch dynamic for Linear layers) and
int4 weight-only block-wise (ONNX Runtime MatMulNBits; torch's aten int4pack CPU kernel).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from effbench.errors import UserError
from effbench.models.sources import ModelArtifact, quiet_tools
from effbench.variants import (
    TORCH_LAYERS,
    Variant,
    builder,
    first_line,
    onnx_stats,
    save_torch_state,
    torch_module,
    torch_stats,
)

# ORT's guidance (docs "Quantize ONNX models", "Method selection"): dynamic quantization for
# transformer/RNN models, static for CNNs. docs/runtime-notes.md: dynamic int8 on Conv is 3-8x slower here.
ATTENTION_HINTS = ("Softmax", "LayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization")


_quiet = quiet_tools  # same silencing as the exporter's


def graph_kind(path: str) -> str:
    """'transformer' when the graph has attention or normalisation ops, 'cnn' when it has Conv, else 'mlp'."""
    import onnx
    ops = {n.op_type for n in onnx.load(path, load_external_data=False).graph.node}
    if ops & set(ATTENTION_HINTS):
        return "transformer"
    return "cnn" if "Conv" in ops else "mlp"


def clean_copy(src: str, dst: Path) -> str:
    """A copy without value_info for initializers (onnxruntime#25890: 'Inferred shape and existing shape differ'),
    every node named by its layer id (`name_layers`): the quantizer's node lists name layers, and in a graph
    whose nodes have no names, [''] would mean every node."""
    import onnx

    from effbench.measure.flops import name_layers
    m = name_layers(onnx.load(src))
    inits = {i.name for i in m.graph.initializer}
    keep = [v for v in m.graph.value_info if v.name not in inits]
    del m.graph.value_info[:]
    m.graph.value_info.extend(keep)
    onnx.save(m, str(dst))
    return str(dst)


class _Reader:
    """onnxruntime CalibrationDataReader over the model's dataset, in batches."""

    def __init__(self, calibration: dict[str, np.ndarray], samples: int, batch: int = 32) -> None:
        n = min(samples, min(len(a) for a in calibration.values()))
        self.batches = [{k: np.ascontiguousarray(a[i:i + batch]) for k, a in calibration.items()}
                        for i in range(0, n, batch)]
        self.n = n
        self._it = iter(self.batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)


def quantize_onnx_int8(src: str, out: str, method: str, *, per_channel: bool, calibration=None, samples: int = 256,
                       op_types: list[str] | None = None, nodes_to_quantize: list[str] | None = None,
                       nodes_to_exclude: list[str] | None = None) -> dict:
    """ONNX Runtime's int8 quantization of `src` into `out` ("dynamic", or "static" QDQ calibrated on
    `calibration`), optionally of some nodes only or all but some (the sensitivity analysis); returns
    what was done, for the build record."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    nodes = {"nodes_to_quantize": nodes_to_quantize or [], "nodes_to_exclude": nodes_to_exclude or []}
    if "" in nodes["nodes_to_quantize"] + nodes["nodes_to_exclude"]:
        # to the quantizer '' names every unnamed node: name the graph's layers first (`clean_copy`)
        raise ValueError("a node list names the layer '': identify layers by `layer_ids`")
    with _quiet():
        if method == "dynamic":
            quantize_dynamic(src, out, weight_type=QuantType.QInt8, per_channel=per_channel,
                             op_types_to_quantize=op_types or [], **nodes)
            return {"tool": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                    "per_channel": per_channel, "op_types": op_types or "default (MatMul, Gemm, Conv, ...)"}
        reader = _Reader(calibration, samples)

        class Reader(CalibrationDataReader):
            def get_next(self):
                return reader.get_next()

            def rewind(self):
                reader.rewind()

        quantize_static(src, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=op_types, calibrate_method=CalibrationMethod.MinMax, **nodes)
        return {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "activation_type": "QUInt8",
                "weight_type": "QInt8", "per_channel": per_channel, "calibrate_method": "MinMax",
                "calibration_samples": reader.n, "op_types": op_types or "all"}


def _onnx_int8(artifact: ModelArtifact, method: str, options: dict, folder: Path, calibration) -> dict:
    import onnxruntime as ort
    src = clean_copy(artifact.onnx_path, folder / "fp32-clean.onnx")
    out = folder / f"model-int8-{method}.onnx"
    kind = graph_kind(src)
    # Static QDQ over a whole transformer collapsed MiniLM to cosine 0.37 (docs/runtime-notes.md): softmax and
    # normalisation stay in float there; only the MatMul/Gemm weights and their inputs are quantized.
    op_types = ["MatMul", "Gemm"] if kind == "transformer" and method != "dynamic" else None
    build = quantize_onnx_int8(src, str(out), method, per_channel=bool(options["per_channel"]), calibration=calibration,
                               samples=int(options["calibration_samples"]), op_types=op_types)
    Path(src).unlink(missing_ok=True)
    build["onnxruntime"] = ort.__version__
    build["graph_kind"] = kind
    return {"path": str(out), "build": build}


def _torch_int8(artifact: ModelArtifact, folder: Path) -> tuple[dict, dict, dict]:
    import torch
    from torch import nn
    fp32 = torch_module(artifact)
    names = {n: "int8-dynamic" for n, m in fp32.named_modules() if type(m) is nn.Linear}
    if not names:
        raise _NoLayers("the module has no nn.Linear layer: torch dynamic int8 quantizes only Linear layers")
    with _quiet():
        q = torch.ao.quantization.quantize_dynamic(torch_module(artifact), {nn.Linear}, dtype=torch.qint8)
    path = save_torch_state(q, folder / "model-int8.pt", {"swapped": names})
    side = {"transform": "load", "artifact_path": str(path)}
    build = {"tool": "torch.ao.quantization.quantize_dynamic", "torch": str(torch.__version__), "dtype": "qint8",
             "layers": f"{len(names)} nn.Linear", "method": "dynamic"}
    return side, build, torch_stats(path, q, fp32_module=fp32)


class _NoLayers(Exception):
    pass


@builder("int8")
def build_int8(artifact: ModelArtifact, *, label: str, method, options, folder: Path, calibration=None) -> Variant:
    from effbench.variants import GeneratedCalibration
    kind = graph_kind(artifact.onnx_path)
    chosen, why = method, None
    generated = isinstance(calibration, GeneratedCalibration)
    if method == "static" and (calibration is None or generated):
        # asked for by name, static means calibrated on real data; plain int8 on a CNN falls back to
        # generated inputs and says so
        raise UserError(f"int8-static needs calibration data but model '{artifact.model_id}' has no dataset",
                        field="precisions", fix="add dataset: to the model, or use int8 (static on generated "
                                                "inputs for a CNN) or int8-dynamic")
    if method is None:
        if kind == "cnn" and calibration is not None:
            chosen, why = "static", "static QDQ: the graph is CNN-like (ONNX Runtime's guidance: static for CNNs)"
            if generated:  # dynamic ConvInteger ran a CNN 7x slower than FP32 (issue 14): not what a user means
                why += ("; the model has no dataset, so its activation ranges come from seeded inputs generated "
                        "from its input spec (ask for int8-dynamic to avoid that)")
        elif kind == "cnn":
            chosen, why = "dynamic", "dynamic: the graph is CNN-like but the model has no dataset to calibrate on"
        else:
            chosen, why = "dynamic", (f"dynamic: the graph is {kind}-like (ONNX Runtime's guidance: dynamic for "
                                      "transformers and RNNs)")
    stats, build = {}, {}
    onnx_path = onnx_reason = None
    try:
        res = _onnx_int8(artifact, chosen, options, folder, calibration)
        onnx_path = res["path"]
        if chosen == "static":
            res["build"]["calibration_inputs"] = ("generated from the input spec (seeded random)" if generated
                                                  else "the model's dataset")
        build["onnx"] = {**res["build"], "method": "static-qdq" if chosen == "static" else "dynamic",
                         "options": options, **({"chosen_because": why} if why else {})}
        stats["onnx"] = onnx_stats(onnx_path, artifact.onnx_path)
    except Exception as e:
        onnx_reason = f"onnxruntime int8 {chosen} quantization failed: {type(e).__name__}: {first_line(e)}"
    torch_side, torch_reason = None, "an onnx: model has no torch module to run"
    if artifact.torch_factory:
        if chosen == "static" and method == "static":
            torch_reason = ("torch static int8 needs QuantStub/DeQuantStub in the model (eager) or torchao's pt2e "
                            "flow; effbench builds only dynamic int8 for torch (use int8 or int8-dynamic)")
        else:
            try:
                torch_side, build["torch"], stats["torch"] = _torch_int8(artifact, folder)
                torch_reason = None
                if chosen == "static":
                    build["torch"]["chosen_because"] = ("torch has no static int8 path here; the runtime's "
                                                        "own int8 for Linear layers is dynamic")
            except _NoLayers as e:
                torch_reason = str(e)
            except Exception as e:
                torch_reason = f"torch dynamic int8 failed: {type(e).__name__}: {first_line(e)}"
    return Variant(model_id=artifact.model_id, label=label, precision="int8",
                   method="static-qdq" if chosen == "static" else "dynamic",
                   onnx_path=onnx_path, onnx_reason=onnx_reason, torch=torch_side, torch_reason=torch_reason,
                   build=build, stats=stats)


# ----------------------------------------------------------------------------------------- int4
def gemm_to_matmul(model) -> int:
    """Rewrite Gemm(A, B const, C) as MatMul + Add, in place: MatMulNBits quantizes MatMul only
    (docs/runtime-notes.md). Returns how many were rewritten."""
    from onnx import helper, numpy_helper
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes, n = [], 0
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            w = np.ascontiguousarray(w.T)
        wname = node.input[1] + "_kn"
        g.initializer.append(numpy_helper.from_array(w, wname))
        name = node.name or f"gemm{n}"
        out = node.output[0]
        if len(node.input) > 2 and node.input[2]:
            mm_out = out + "_mm"
            new_nodes.append(helper.make_node("MatMul", [node.input[0], wname], [mm_out], name=name + "_matmul"))
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [out], name=name + "_bias"))
        else:
            new_nodes.append(helper.make_node("MatMul", [node.input[0], wname], [out], name=name + "_matmul"))
        n += 1
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for nd in g.node for i in nd.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return n


def matmul_weight_bytes(path: str) -> tuple[int, int]:
    """(bytes of constant weights feeding MatMul / MatMulNBits nodes, how many such nodes)."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    inits = {t.name: t for t in m.graph.initializer}
    total = count = 0
    for node in m.graph.node:
        if node.op_type in ("MatMul", "MatMulNBits"):
            ws = [i for i in node.input[1:] if i in inits]
            if ws:
                count += 1
                total += sum(numpy_helper.to_array(inits[i]).nbytes for i in ws)
    return total, count


def onnx_int4(artifact: ModelArtifact, options: dict, folder: Path) -> dict:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    src = clean_copy(artifact.onnx_path, folder / "fp32-clean.onnx")
    model = onnx.load(src)
    rewritten = gemm_to_matmul(model)
    mm_path = folder / "fp32-matmul.onnx"
    onnx.save(model, str(mm_path))
    out = folder / "model-int4.onnx"
    with _quiet():
        q = MatMulNBitsQuantizer(onnx.load(str(mm_path)), bits=4, block_size=int(options["block_size"]),
                                 is_symmetric=bool(options["symmetric"]),
                                 accuracy_level=int(options["accuracy_level"]))
        q.process()
        q.model.save_model_to_file(str(out), use_external_data_format=False)
    before, n_before = matmul_weight_bytes(str(mm_path))
    after, _ = matmul_weight_bytes(str(out))
    quantized = sum(1 for nd in onnx.load(str(out)).graph.node if nd.op_type == "MatMulNBits")
    Path(src).unlink(missing_ok=True)
    mm_path.unlink(missing_ok=True)
    if quantized == 0:
        raise _NoLayers(f"MatMulNBitsQuantizer quantized no MatMul (block_size {options['block_size']}: "
                        "every MatMul is smaller than a block or has no constant weight)")
    return {"path": str(out), "matmul_weight_bytes": {"fp32": before, "int4": after,
                                                       "ratio": round(before / after, 3) if after else None},
            "build": {"tool": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
                      "onnxruntime": ort.__version__, "bits": 4, "gemm_rewritten_as_matmul": rewritten,
                      "matmul_nodes": n_before, "matmulnbits_nodes": quantized}}


@functools.cache
def _int4_class():
    import torch
    from torch import nn

    class _Int4Linear(nn.Module):
        """Weight-only int4 Linear on aten's CPU kernel `_weight_int4pack_mm_for_cpu` (group-wise,
        w = (q - 8) * scale + zero). Weights packed by `_convert_weight_to_int4pack_for_cpu`."""

        cpu_only = "aten's int4 CPU kernel (_weight_int4pack_mm_for_cpu; CUDA's tinygemm needs another packing)"

        def __init__(self, in_features: int, out_features: int, bias: bool, group_size: int) -> None:
            super().__init__()
            self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
            self.register_buffer("weight_packed", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
            self.register_buffer("scales_and_zeros", torch.zeros(in_features // group_size, out_features, 2))
            self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

        @classmethod
        def from_linear(cls, lin, group_size: int, symmetric: bool):
            w = lin.weight.detach().float()
            n, k = w.shape
            wg = w.reshape(n, k // group_size, group_size)
            if symmetric:
                scale = (wg.abs().amax(-1) / 7.0).clamp_min(1e-12)
                q = torch.round(wg / scale[..., None]).clamp(-8, 7) + 8
                zero = torch.zeros_like(scale)
            else:
                lo, hi = wg.amin(-1), wg.amax(-1)
                scale = ((hi - lo) / 15.0).clamp_min(1e-12)
                q = torch.round((wg - lo[..., None]) / scale[..., None]).clamp(0, 15)
                zero = lo + 8 * scale
            m = cls(k, n, lin.bias is not None, group_size)
            m.weight_packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                q.reshape(n, k).to(torch.int32).contiguous(), 1)
            m.scales_and_zeros = torch.stack([scale.t(), zero.t()], -1).contiguous()
            if lin.bias is not None:
                m.bias = nn.Parameter(lin.bias.detach().clone())
            return m

        def forward(self, x):
            shape = x.shape
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).contiguous(), self.weight_packed,
                                                           self.group_size, self.scales_and_zeros)
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*shape[:-1], self.out_features)

    return _Int4Linear


def __getattr__(name: str):
    if name == "Int4Linear":
        return _int4_class()
    raise AttributeError(name)


def _torch_int4(artifact: ModelArtifact, options: dict, folder: Path) -> tuple[dict, dict, dict]:
    import torch
    from torch import nn
    group = int(options["block_size"])
    fp32 = torch_module(artifact)
    module = torch_module(artifact)
    cls = _int4_class()
    swapped, kept = {}, []
    for name, m in list(module.named_modules()):
        if type(m) is not nn.Linear:
            continue
        if m.in_features % group or m.out_features % 16:
            # aten's int4pack CPU kernel: K a multiple of the group, N a multiple of 16 ("expect N to be
            # dividable by 16"); other layers stay FP32 and are listed.
            kept.append(f"{name} ({m.out_features}x{m.in_features}: needs in % {group} == 0 and out % 16 == 0)")
            continue
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, cls.from_linear(m, group, bool(options["symmetric"])))
        swapped[name] = f"int4:{group}"
    if not swapped:
        raise _NoLayers(f"no nn.Linear layer fits int4 blocks of {group} ({'; '.join(kept) or 'no Linear layers'})")
    path = save_torch_state(module, folder / "model-int4.pt", {"swapped": swapped})
    build = {"tool": "aten._convert_weight_to_int4pack_for_cpu + _weight_int4pack_mm_for_cpu", "torch": str(torch.__version__),
             "block_size": group, "symmetric": bool(options["symmetric"]), "layers": len(swapped),
             "kept_fp32": kept, "method": "weight-only-blockwise"}
    return {"transform": "load", "artifact_path": str(path)}, build, torch_stats(path, module, fp32_module=fp32)


@builder("int4")
def build_int4(artifact: ModelArtifact, *, label: str, method, options, folder: Path, calibration=None) -> Variant:
    stats, build = {}, {}
    onnx_path = onnx_reason = None
    try:
        res = onnx_int4(artifact, options, folder)
        onnx_path = res["path"]
        build["onnx"] = {**res["build"], "options": options, "method": "weight-only-blockwise"}
        stats["onnx"] = {**onnx_stats(onnx_path, artifact.onnx_path), "matmul_weight_bytes": res["matmul_weight_bytes"]}
    except _NoLayers as e:
        onnx_reason = str(e)
    except Exception as e:
        onnx_reason = f"onnxruntime MatMulNBits int4 quantization failed: {type(e).__name__}: {first_line(e)}"
    torch_side, torch_reason = None, "an onnx: model has no torch module to run"
    if artifact.torch_factory:
        try:
            torch_side, build["torch"], stats["torch"] = _torch_int4(artifact, options, folder)
            torch_reason = None
        except _NoLayers as e:
            torch_reason = str(e)
        except Exception as e:
            torch_reason = f"torch int4 (aten int4pack CPU kernel) failed: {type(e).__name__}: {first_line(e)}"
    return Variant(model_id=artifact.model_id, label=label, precision="int4", method="weight-only-blockwise",
                   onnx_path=onnx_path, onnx_reason=onnx_reason, torch=torch_side, torch_reason=torch_reason,
                   build=build, stats=stats)


def _dynamic_int8_linear(old, kind: str):
    import torch
    import torch.ao.nn.quantized.dynamic as nnqd
    with torch.device("cpu"):
        return nnqd.Linear(old.in_features, old.out_features, bias_=old.bias is not None, dtype=torch.qint8)


def _int4_linear(old, kind: str):
    import torch
    group = int(kind.split(":")[1])
    with torch.device("cpu"):
        return _int4_class()(old.in_features, old.out_features, old.bias is not None, group)


# the layers this family's torch variants swap in, by the kind saved with them
TORCH_LAYERS["int8-dynamic"] = _dynamic_int8_linear
TORCH_LAYERS["int4"] = _int4_linear
