"""Where a cell's time goes, node by node: the runtime's own profiler folded onto the graph's nodes, each
with its MACs and bytes from the FLOPs counter (where the runtime's nodes can be matched to the graph's),
its share of the time and the rate it achieved. Pure functions over the profilers' output; the worker is
`execution.tasks.layer_profile`, each runtime's profiler lives beside its runner (ONNX Runtime's trace in
`runners/onnxruntime.py`, torch's in `runners/torch_layers.py`, OpenVINO's PERF_COUNT in
`runners/openvino_layers.py`, ExecuTorch's ETDump in `runners/executorch_layers.py`).

ONNX Runtime names a kernel after the node it came from (`node_conv2d_token_1` is `node_conv2d` after a
layout change); what it adds itself (layout Transposes, fused activations) is its own row, labelled
"added by the runtime": that is time MACs do not explain.
"""
from __future__ import annotations

import json
import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LayerRow:
    layer: str               # the graph node the kernel came from, or the kernel's name
    op_type: str             # the graph node's op type ("" when the runtime added it)
    kernel: str              # the runtime's kernel (QLinearConv, NhwcMaxPool, ...)
    calls: int               # kernel invocations per inference call
    time_us: float           # median per call, summed over its kernels
    share: float             # of the summed kernel time
    macs: int | None
    bytes: int | None
    gflops: float | None     # 2 x MACs / time: the rate this node achieved
    added_by_runtime: bool = False
    precision: str | None = None   # what the kernel computed in, as the runtime says (OpenVINO: f32/bf16/i8)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def kernel_times(trace: list[dict], calls: int) -> dict[str, dict[str, Any]]:
    """{kernel name: {"op", "us"}} from an ONNX Runtime profile trace: each kernel's median duration
    over the `calls` profiled runs (a kernel that runs k times per call counts k durations per call)."""
    durations: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for ev in trace:
        name = ev.get("name", "")
        if ev.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        kernel = name[: -len("_kernel_time")]
        durations.setdefault(kernel, []).append(float(ev.get("dur", 0)))
        ops[kernel] = (ev.get("args") or {}).get("op_name", "")
    out = {}
    for kernel, ds in durations.items():
        per_call = max(1, round(len(ds) / max(calls, 1)))
        out[kernel] = {"op": ops[kernel], "us": statistics.median(ds) * per_call, "per_call": per_call}
    return out


def links(onnx_path: str) -> dict[str, dict[str, str]]:
    """The graph's wiring the fold needs: which node produces each tensor, and each node's first input's
    producer when that producer feeds nothing else (a pair a runtime fuses, Conv + Relu)."""
    import onnx

    from effbench.measure.flops import layer_ids
    g = onnx.load(onnx_path, load_external_data=False).graph
    ids = layer_ids(g.node)  # the names `count_work`'s by_node uses: unnamed nodes have one too
    producer = {o: lid for n, lid in zip(g.node, ids) for o in n.output if o}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    fused_into = {}
    for n, lid in zip(g.node, ids):
        first = next((i for i in n.input if i in producer), None)
        if first is not None and consumers.get(first) == 1:
            fused_into[lid] = producer[first]
    return {"producer": producer, "fused_into": fused_into}


_PREFIX = re.compile(r"^fused ")
_SUFFIX = re.compile(r"(_nchwc|_token_\d+)+$")


def fold(kernels: dict[str, dict[str, Any]], by_node: list[dict], wiring: dict[str, dict[str, str]] | None = None
         ) -> list[LayerRow]:
    """Kernels onto graph nodes (the FLOPs counter's `by_node`), largest time first. A kernel is matched
    by its node's name, less what ONNX Runtime adds ("fused ", "_nchwc", "_token_N"), or by the tensor
    its fused node writes; a fused elementwise node's time goes to the node with MACs it was fused with."""
    nodes = {n["name"]: n for n in by_node if n.get("name")}
    wiring = wiring or {"producer": {}, "fused_into": {}}

    def graph_node(kernel: str) -> dict | None:
        base = _SUFFIX.sub("", _PREFIX.sub("", kernel))
        name = next((x for x in (kernel, base) if x in nodes), None) or wiring["producer"].get(base)
        node = nodes.get(name) if name else None
        if node is not None and not node.get("macs"):
            up = nodes.get(wiring["fused_into"].get(node["name"], ""))
            if up is not None and up.get("macs"):
                return up
        return node

    total = sum(k["us"] for k in kernels.values()) or 1.0
    rows: dict[str, dict[str, Any]] = {}
    for kernel, k in kernels.items():
        node = graph_node(kernel)
        key = node["name"] if node else kernel
        row = rows.setdefault(key, {"layer": key, "op_type": node["op_type"] if node else "", "kernel": k["op"],
                                    "calls": 0, "time_us": 0.0, "macs": node.get("macs") if node else None,
                                    "bytes": node.get("bytes") if node else None,
                                    "added_by_runtime": node is None})
        row["calls"] += k["per_call"]
        row["time_us"] += k["us"]
    out = []
    for r in rows.values():
        macs = r["macs"]
        out.append(LayerRow(**r, share=r["time_us"] / total,
                            gflops=2 * macs / (r["time_us"] * 1e3) if macs and r["time_us"] > 0 else None))
    return sorted(out, key=lambda r: -r.time_us)


def from_times(entries: list[dict[str, Any]]) -> list[LayerRow]:
    """Rows from a runtime's per-node times ({layer, op_type, kernel, time_us, ...} per node, `time_us` per
    inference call): each node's share of their sum and its rate, largest time first."""
    total = sum(e["time_us"] for e in entries) or 1.0
    out = []
    for e in entries:
        macs, us = e.get("macs"), e["time_us"]
        out.append(LayerRow(layer=e["layer"], op_type=e.get("op_type") or "", kernel=e.get("kernel") or "",
                            calls=e.get("calls", 1), time_us=us, share=us / total, macs=macs, bytes=e.get("bytes"),
                            gflops=2 * macs / (us * 1e3) if macs and us > 0 else None,
                            added_by_runtime=bool(e.get("added_by_runtime")), precision=e.get("precision")))
    return sorted(out, key=lambda r: -r.time_us)


def summary(rows: list[LayerRow]) -> dict[str, Any]:
    """Where the time goes that MACs do not explain: the share in nodes without MACs and in kernels the
    runtime added, and the top layers."""
    return {"layers": len(rows), "total_us": sum(r.time_us for r in rows),
            "share_without_macs": sum(r.share for r in rows if not r.macs),
            "share_added_by_runtime": sum(r.share for r in rows if r.added_by_runtime),
            "top": [r.layer for r in rows[:5]]}


# what every layers.csv row repeats from the profile, so that the file names its profiler on its own
CSV_META = ("profiler", "runtime_version")


def write(rows: list[LayerRow], out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """layers.csv (one row per layer, each naming the profiler and the runtime's version) and layers.json
    (the rows, the summary and what was profiled, by which profiler)."""
    import csv
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "layers.csv", out_dir / "layers.json"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*LayerRow.__dataclass_fields__, *CSV_META])
        w.writeheader()
        for r in rows:
            w.writerow({**r.to_json(), **{k: meta.get(k) for k in CSV_META}})
    json_path.write_text(json.dumps({**meta, "summary": summary(rows), "rows": [r.to_json() for r in rows]}, indent=1))
    return csv_path, json_path


def text(rows: list[LayerRow], top: int = 15, meta: dict[str, Any] | None = None) -> str:
    """The table `effbench layers` prints: under a line naming the profiler and the runtime's version, the
    top layers, then the summary and the profile's own notes (what it left out, what it cannot see)."""
    s, meta = summary(rows), meta or {}
    lines = []
    if meta.get("profiler"):
        lines.append(f"{meta['profiler']} ({meta.get('runtime', '?')} {meta.get('runtime_version') or '?'}): "
                     f"{meta.get('timing', '')}".rstrip(": "))
    lines.append(f"{'layer':<40} {'op':<16} {'kernel':<20} {'prec':<12} {'us':>9} {'share':>6} {'MACs':>10} "
                 f"{'GFLOP/s':>8}")
    for r in rows[:top]:
        lines.append(f"{r.layer[:40]:<40} {r.op_type[:16] or '(runtime)':<16} {r.kernel[:20]:<20} "
                     f"{(r.precision or '-')[:12]:<12} {r.time_us:>9.1f} {r.share:>6.1%} "
                     f"{(f'{r.macs:,}' if r.macs else '-'):>10} {(f'{r.gflops:.1f}' if r.gflops else '-'):>8}")
    if len(rows) > top:
        lines.append(f"... {len(rows) - top} more layers")
    if any(r.macs for r in rows):
        lines.append(f"{s['total_us']:.1f} us of kernel time per call in {s['layers']} layers; "
                     f"{s['share_without_macs']:.0%} in layers without MACs, {s['share_added_by_runtime']:.0%} in "
                     "kernels the runtime added (layout changes, fusions): time the MAC count does not explain")
    else:
        lines.append(f"{s['total_us']:.1f} us per call in {s['layers']} rows; {s['share_added_by_runtime']:.0%} in "
                     "kernels the runtime added (layout changes); no MACs: this profile's operators are not matched "
                     "to the graph's layers")
    lines += [str(n) for n in meta.get("notes") or []]
    return "\n".join(lines)
