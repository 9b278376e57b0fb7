"""Floating-point variants: fp32 (the reference), fp16 and bf16, for ONNX Runtime and torch."""
from __future__ import annotations

from pathlib import Path

from effbench.models.sources import ModelArtifact
from effbench.variants import (
    FACTORY,
    Variant,
    builder,
    first_line,
    onnx_stats,
    save_torch_state,
    torch_module,
    torch_stats,
)


def onnx_weight_stats(path: str) -> dict:
    """Kept for callers of the foundation API: on-disk bytes and parameter count of a graph."""
    s = onnx_stats(path, path)
    return {"size_bytes": s["size_bytes"], "params": s["params"]}


@builder("fp32")
def build_fp32(artifact: ModelArtifact, *, label: str, method, options, folder: Path, calibration=None) -> Variant:
    stats = {"onnx": onnx_stats(artifact.onnx_path, artifact.onnx_path)}
    torch_side, torch_reason = None, "an onnx: model has no torch module to run"
    if artifact.torch_factory:
        torch_side, torch_reason = {"transform": FACTORY}, None
        stats["torch"] = torch_stats(None, torch_module(artifact))
    return Variant(model_id=artifact.model_id, label=label, precision="fp32", method=None,
                   onnx_path=artifact.onnx_path, torch=torch_side, torch_reason=torch_reason,
                   build={"onnx": {"tool": (artifact.export or {}).get("tool", "as given"), **(artifact.export or {})},
                          "torch": {"tool": "eager module", "options": {}}},
                   stats=stats)


def fp16_graph(src: str, keep_io_types: bool):
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    # docs/runtime-notes.md: onnxconverter_common's converter produced a MiniLM graph that failed to load;
    # onnxruntime's own copy works.
    return convert_float_to_float16(onnx.load(src), keep_io_types=keep_io_types, disable_shape_infer=False)


def _to_bf16(model) -> None:
    """Rewrite an fp16 graph (from convert_float_to_float16) as bf16 compute, in place."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    def retype(vi) -> None:
        tt = vi.type.tensor_type
        if tt.elem_type == TensorProto.FLOAT16:
            tt.elem_type = TensorProto.BFLOAT16

    g = model.graph
    for t in list(g.initializer):
        if t.data_type == TensorProto.FLOAT16:
            arr = numpy_helper.to_array(t).astype(np.float32)
            bits = (arr.view(np.uint32) + 0x7FFF + ((arr.view(np.uint32) >> 16) & 1)) >> 16  # round to nearest even
            new = TensorProto(name=t.name, data_type=TensorProto.BFLOAT16, dims=t.dims,
                              raw_data=bits.astype(np.uint16).tobytes())
            t.CopyFrom(new)
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        retype(vi)
    for node in g.node:
        for a in node.attribute:
            if a.name == "to" and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.BFLOAT16
            if a.name == "value" and a.t.data_type == TensorProto.FLOAT16:
                arr = numpy_helper.to_array(a.t).astype(np.float32)
                bits = (arr.view(np.uint32) + 0x7FFF + ((arr.view(np.uint32) >> 16) & 1)) >> 16
                a.t.CopyFrom(TensorProto(name=a.t.name, data_type=TensorProto.BFLOAT16, dims=a.t.dims,
                                         raw_data=bits.astype(np.uint16).tobytes()))


def _try_session(path: str, cache_dir: Path) -> str | None:
    """None when ONNX Runtime's CPU provider loads the graph, else its own error message (which names the
    graph: by its place in the variant cache, `cache_dir`, not by this machine's folders)."""
    import onnxruntime as ort

    from effbench.errors import short_paths
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    try:
        ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        return short_paths(f"onnxruntime {ort.__version__} CPU provider cannot load it: {first_line(e)}",
                           [(cache_dir, "<cache>")])
    return None


def _floating(artifact: ModelArtifact, label: str, precision: str, options: dict, folder: Path) -> Variant:
    import onnx
    import onnxruntime as ort
    import torch
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    keep_io = bool(options.get("keep_io_types", True))
    stats, build = {}, {}
    onnx_path, onnx_reason = None, None
    try:
        model = fp16_graph(artifact.onnx_path, keep_io)
        if precision == "bf16":
            _to_bf16(model)
        out = folder / f"model-{precision}.onnx"
        onnx.save(model, str(out))
        # The graph is kept even where this CPU provider cannot load it (bf16 has few CPU kernels): the
        # CUDA provider may run it, and each runner says at load time what it cannot run.
        onnx_path = str(out)
        cpu_note = _try_session(onnx_path, folder.parent.parent)  # folder: <cache>/variants/<variant>
        stats["onnx"] = onnx_stats(onnx_path, artifact.onnx_path)
        tool = "onnxruntime.transformers.float16.convert_float_to_float16"
        build["onnx"] = {"tool": tool + (" + float16->bfloat16 retyping" if precision == "bf16" else ""),
                         "onnxruntime": ort.__version__, "options": {"keep_io_types": keep_io},
                         "cpu_provider": cpu_note or "loads"}
    except Exception as e:
        onnx_reason = f"{precision} conversion failed: {type(e).__name__}: {first_line(e)}"
    torch_side, torch_reason = None, "an onnx: model has no torch module to run"
    if artifact.torch_factory:
        module = torch_module(artifact).to(dtype)
        path = save_torch_state(module, folder / f"model-{precision}.pt", {"dtype": str(dtype).split(".")[-1]})
        torch_side = {"transform": "load", "dtype": str(dtype).split(".")[-1], "artifact_path": str(path),
                      "input_dtype": str(dtype).split(".")[-1]}
        torch_reason = None
        stats["torch"] = torch_stats(path, module, fp32_module=torch_module(artifact))
        build["torch"] = {"tool": f"torch.nn.Module.to({dtype})", "torch": str(torch.__version__), "options": {}}
    return Variant(model_id=artifact.model_id, label=label, precision=precision, method=None,
                   onnx_path=onnx_path, onnx_reason=onnx_reason, torch=torch_side, torch_reason=torch_reason,
                   build=build, stats=stats)


@builder("fp16")
def build_fp16(artifact: ModelArtifact, *, label: str, method, options, folder: Path, calibration=None) -> Variant:
    return _floating(artifact, label, "fp16", options, folder)


@builder("bf16")
def build_bf16(artifact: ModelArtifact, *, label: str, method, options, folder: Path, calibration=None) -> Variant:
    return _floating(artifact, label, "bf16", options, folder)
