"""Per-node profile of an OpenVINO session (`effbench layers` on an openvino cell): the CPU plugin's own
performance counters. The session is compiled with `PERF_COUNT` on (`ov.properties.enable_profiling`, the
runner's load option "profile"), run `runs` times after one unprofiled call, and after each call
`InferRequest.get_profiling_info()` gives every node of the compiled graph its `real_time`, `status`, the
plugin's node type and `exec_type`: the kernel that ran, whose suffix is the precision it really computed in
(`brgconv_avx512_f32`, `brgconv_avx512_bf16`, `jit_avx512_I8`).

A node's time is its median over the calls. Nodes the plugin did not run (status NOT_RUN: inputs, constants,
reshapes and activations fused into a neighbour) and nodes under the counters' 1-us resolution (median 0) are
left out and counted. Each compiled node names the graph layers it was made of (`originalLayersNames`:
a convolution fused with its bias and ReLU names all three); their MACs come from the FP32 ONNX graph the
session read (each layer's once, to the first node naming it), and a node made of none (a layout Reorder) is
"added by the runtime".
"""
from __future__ import annotations

import re
import statistics
from typing import Any

import numpy as np

from effbench.runners.base import Unsupported

PROFILER = "OpenVINO PERF_COUNT"
TIMING = ("the CPU plugin's per-node real_time after each call (get_profiling_info), median over the calls; "
          "resolution 1 us")
# exec_type ends in the precision the kernel computed in; OpenVINO spells int8 kernels "I8"
_PRECISION = re.compile(r"_(f64|f32|f16|bf16|i64|i32|i8|u8|i4|u4|u1|boolean)$", re.IGNORECASE)


def profile_nodes(session, feeds: dict[str, np.ndarray], runs: int, *, batch_size: int = 1,
                  dims: dict[str, int] | None = None) -> dict[str, Any]:
    """{"rows": [LayerRow as JSON], "profiler", "runtime", "runtime_version", "timing", "notes", ...} of an
    `OpenVinoSession` loaded with the load option "profile" (PERF_COUNT on), over `runs` calls on `feeds`."""
    import openvino as ov

    from effbench.measure.layers import from_times
    session.compile(feeds)
    compiled = session.compiled
    if not compiled.get_property("PERF_COUNT"):
        raise Unsupported("openvino's CPU plugin did not turn its performance counters on (PERF_COUNT reads False)")
    req = compiled.create_infer_request()
    arrays = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
    req.infer(arrays)  # the first call's allocations and kernel generation are not the nodes' time
    times: dict[str, list[float]] = {}
    kinds: dict[str, tuple[str, str]] = {}
    executed: set[str] = set()
    for _ in range(runs):
        req.infer(arrays)
        for p in req.get_profiling_info():
            kinds.setdefault(p.node_name, (p.node_type, p.exec_type))
            if p.status.name == "EXECUTED":
                executed.add(p.node_name)
                times.setdefault(p.node_name, []).append(p.real_time.total_seconds() * 1e6)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    kept = [name for name in median if median[name] > 0]
    origin, runtime_precision = _original_layers(compiled)
    graph = session.info.get("built", {}).get("graph")
    macs = _macs_by_node(graph, [(n, origin.get(n, [])) for n in kept], batch_size, dims or {})
    entries = []
    for name in kept:
        node_type, exec_type = kinds[name]
        entries.append({"layer": name, "op_type": node_type, "kernel": exec_type, "time_us": median[name],
                        "precision": precision_of(exec_type, runtime_precision.get(name)),
                        "macs": macs.get(name), "added_by_runtime": not origin.get(name)})
    not_run = len(kinds) - len(executed)
    under = len(executed) - len(kept)
    rows = from_times(entries)
    return {"rows": [r.to_json() for r in rows], "graph": graph, "runs": runs, "profiler": PROFILER,
            "runtime": "openvino", "runtime_version": ov.get_version(), "timing": TIMING,
            "nodes": {"compiled": len(kinds), "kept": len(kept), "not_run": not_run, "under_resolution": under},
            "original_layers": {n: origin.get(n, []) for n in kept},
            "inference_precision": session.info.get("inference_precision"),
            "notes": [f"{not_run + under} of the compiled graph's {len(kinds)} nodes left out: {not_run} not run "
                      f"(status NOT_RUN: inputs, constants, reshapes, ops fused into a neighbour), {under} under the "
                      "counters' 1-us resolution (median 0 us)",
                      f"inference precision {session.info.get('inference_precision')}; 'prec' is the kernel's own "
                      "(exec_type's suffix)"]}


def precision_of(exec_type: str, runtime_precision: str | None = None) -> str | None:
    """The precision a kernel computed in, from its exec_type (`brgconv_avx512_bf16` -> bf16, `jit_avx512_I8` ->
    i8); else the node's runtimePrecision."""
    m = _PRECISION.search(exec_type or "")
    return m.group(1).lower() if m else runtime_precision


def _original_layers(compiled) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Each compiled node's graph layers ({name: [layer, ...]}) and its runtimePrecision ({name: "f32"})."""
    layers: dict[str, list[str]] = {}
    precision: dict[str, str] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt, name = op.get_rt_info(), op.get_friendly_name()
        names = str(rt["originalLayersNames"].astype(str)) if "originalLayersNames" in rt else ""
        layers[name] = [n for n in names.split(",") if n]
        if "runtimePrecision" in rt:
            precision[name] = str(rt["runtimePrecision"].astype(str))
    return layers, precision


def _macs_by_node(graph: str | None, nodes: list[tuple[str, list[str]]], batch_size: int,
                  dims: dict[str, int]) -> dict[str, int]:
    """MACs of each compiled node: those of the ONNX layers it names (`node_conv2d/WithoutBiases` is the ONNX node
    `node_conv2d`; a graph output's producer is named by its tensor), each layer's counted once."""
    if not graph:
        return {}
    from effbench.measure.flops import count_work
    from effbench.measure.layers import links
    by_node = {n["name"]: n for n in count_work(graph, batch_size=batch_size, dims=dims).by_node if n.get("name")}
    producer = links(graph)["producer"]
    taken: set[str] = set()
    out: dict[str, int] = {}
    for name, layers in nodes:
        total = 0
        for layer in layers:
            base = layer.split("/")[0]
            onnx_name = base if base in by_node else producer.get(base)
            if onnx_name and onnx_name not in taken and by_node.get(onnx_name, {}).get("macs"):
                taken.add(onnx_name)
                total += by_node[onnx_name]["macs"]
        if total:
            out[name] = total
    return out
