"""Per-operator profile of an ExecuTorch program (`effbench layers` on an executorch cell): ExecuTorch's own
event tracer. The session's program is loaded again with ETDump on (`Runtime.load_program(...,
enable_etdump=True)`), its `forward` run `runs` times after one call, the ETDump written
(`Program.write_etdump_result_to_file`) and read by the devtools `Inspector` with the ETRecord generated when
the program was lowered (`to_edge_transform_and_lower(generate_etrecord=True)`, the runner's load option
"profile"), which maps the program's instructions and delegate calls back to the graph's operators.

What ETDump holds, per call: `Method::execute` (the whole call); each delegate call (`DELEGATE_CALL`, its
graph operators from the ETRecord); the operators the XNNPACK backend ran inside it, as XNNPACK's own profiler
names them ("Convolution (NHWC, F32) IGEMM #1": the op, its layout and data types, its micro-kernel), in whole
microseconds; and each operator left to ExecuTorch's own kernels (`native_call_<op>`). The rows: each XNNPACK
operator, each delegate call's time its operators' timings do not cover, each non-delegated operator, and the
call's time outside all of them, so the shares add up to the whole call. A delegate whose backend logs no
operator of its own is one row, named so. XNNPACK reports whole microseconds, so a row's time is its mean over
the calls (a median would round every short operator to 0); the first call is left out.
"""
from __future__ import annotations

import re
import statistics
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

PROFILER = "ExecuTorch ETDump"
TIMING = ("ExecuTorch's event tracer (ETDump) read by its Inspector with the program's ETRecord, each event's mean "
          "over the calls, the first left out (XNNPACK times its operators in whole microseconds)")
_FRAMEWORK = ("Method::init", "Program::load_method")
_LAYOUTS = {"NC", "NCW", "NWC", "NCHW", "NHWC", "ND", "NCDHW", "NDHWC"}


def profile_program(session, feeds: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
    """{"rows": [LayerRow as JSON], "profiler", "runtime", "runtime_version", "timing", "notes", ...} of an
    `ExecuTorchSession` loaded with the load option "profile", over `runs` calls on `feeds`."""
    from importlib.metadata import version

    from executorch.runtime import Runtime

    from effbench.measure.layers import from_times
    session.method_for(feeds)   # builds the program (with its ETRecord) where the cache has none
    pte, etrecord = Path(session.info["program"]), session.info.get("etrecord")
    program = Runtime.get().load_program(pte, enable_etdump=True)
    method = program.load_method("forward")
    inputs = list(session._tensors(feeds))
    for _ in range(runs + 1):
        method.execute(inputs)
    folder = Path(tempfile.mkdtemp(prefix="effbench-etdump-"))
    program.write_etdump_result_to_file(str(folder / "etdump.etdp"), str(folder / "debug.bin"))
    events = read_events(folder / "etdump.etdp", etrecord)
    entries, notes = fold_events(events, skip=1)
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    delegation = session.info.get("delegation") or {}
    if delegation:
        notes.insert(0, f"XNNPACK took {delegation.get('fraction', 0):.0%} of the graph's operators "
                        f"({delegation.get('delegated_ops')} of {delegation.get('total_ops')}, the runner's count; "
                        f"not delegated: {delegation.get('not_delegated') or 'none'})")
    rows = from_times(entries)
    return {"rows": [r.to_json() for r in rows], "graph": None, "runs": runs, "profiler": PROFILER,
            "runtime": "executorch", "runtime_version": version("executorch"), "timing": TIMING,
            "program": str(pte), "etrecord": etrecord, "delegation": delegation, "notes": notes}


def read_events(etdump: Path, etrecord: str | None) -> list[dict[str, Any]]:
    """The Inspector's events of the program's calls as plain dicts: name, instruction, whether a backend
    logged it from inside a delegate, its backend, the graph operators (ETRecord) and nodes it stands for,
    and its duration in us per call."""
    from executorch.devtools import Inspector
    from executorch.devtools.inspector._inspector_utils import TimeScale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "Output Buffer not found": no intermediate tensors were asked for
        inspector = Inspector(etdump_path=str(etdump), etrecord=etrecord, source_time_scale=TimeScale.NS,
                              target_time_scale=TimeScale.US)
    out = []
    for block in inspector.event_blocks:
        for e in block.events:
            if e.name in _FRAMEWORK or e.perf_data is None:
                continue
            out.append({"name": e.name, "instruction": getattr(e, "_instruction_id", None),
                        "delegated": bool(e.is_delegated_op), "backend": e.delegate_backend_name,
                        "op_types": list(e.op_types), "nodes": list(e.module_hierarchy or e.stack_traces or {}),
                        "us": [float(x) for x in e.perf_data.raw]})
    return out


def _mean(xs: list[float], skip: int) -> float:
    xs = xs[skip:] if len(xs) > skip else xs
    return statistics.fmean(xs) if xs else 0.0


def fold_events(events: list[dict[str, Any]], skip: int = 1) -> tuple[list[dict[str, Any]], list[str]]:
    """Row entries (`measure.layers.from_times`) and notes from `read_events`' events; `skip`: leading calls
    left out. The entries' times add up to `Method::execute`'s."""
    calls = [e for e in events if e["name"] == "DELEGATE_CALL"]
    inside: dict[Any, list[dict]] = {}
    for e in events:
        if e["delegated"]:
            inside.setdefault(e["instruction"], []).append(e)
    entries: list[dict[str, Any]] = []
    notes: list[str] = []
    many = len(calls) > 1
    for k, call in enumerate(calls, 1):
        backend = call["backend"] or "a backend"
        ops = inside.get(call["instruction"], [])
        graph_ops = _counted(call["op_types"])
        tag = f"d{k}: " if many else ""   # delegate call k of the program (XNNPACK numbers its ops per call)
        if graph_ops:
            notes.append(f"{f'delegate call d{k}' if many else 'the delegate call'} ({backend}) stands for the "
                         f"graph's {graph_ops} (ETRecord)")
        call_us = _mean(call["us"], skip)
        if not ops:
            entries.append({"layer": f"{tag}delegated part ({backend}, one row)",   # its ops untimed one by one
                            "op_type": "DELEGATE_CALL", "kernel": backend, "time_us": call_us})
            continue
        permutes = any("permute" in o or "transpose" in o for o in call["op_types"])
        for op in ops:
            kind, precision, kernel = xnnpack_name(op["name"])
            entries.append({"layer": f"{tag}{op['name']}", "op_type": kind, "precision": precision,
                            "kernel": f"XNNPACK {kernel}".strip(), "time_us": _mean(op["us"], skip),
                            # a layout change the graph did not ask for (NCHW <-> NHWC around convolutions)
                            "added_by_runtime": kind == "Transpose" and bool(call["op_types"]) and not permutes})
        covered = sum(_mean(op["us"], skip) for op in ops)
        entries.append({"layer": f"{tag}({backend}, untimed by its ops)", "op_type": "",
                        "kernel": backend, "time_us": max(call_us - covered, 0.0)})
    natives = [e for e in events if not e["delegated"] and e["name"] not in ("DELEGATE_CALL", "OPERATOR_CALL",
                                                                                 "Method::execute")]
    for e in natives:
        kernel = e["name"].removeprefix("native_call_")
        entries.append({"layer": e["nodes"][0].rstrip("_") if e["nodes"] else e["name"],
                        "op_type": e["op_types"][0] if e["op_types"] else kernel.split(".")[0],
                        "kernel": kernel, "time_us": _mean(e["us"], skip)})
    if natives:
        notes.append(f"{len(natives)} operator(s) ran on ExecuTorch's own kernels, outside any delegate")
    total = [e for e in events if e["name"] == "Method::execute"]
    if total:
        outside = _mean(total[0]["us"], skip) - sum(_mean(c["us"], skip) for c in calls) - \
            sum(_mean(e["us"], skip) for e in natives)
        entries.append({"layer": "(Method::execute outside ops/delegates)", "op_type": "",
                        "kernel": "ExecuTorch runtime", "time_us": max(outside, 0.0)})
    kept = [e for e in entries if e["time_us"] > 0]
    if len(kept) < len(entries):
        notes.append(f"{len(entries) - len(kept)} row(s) at 0 us in every call left out (XNNPACK's operators under its "
                     "1-us resolution, or nothing outside the operators)")
    return kept, notes


def xnnpack_name(name: str) -> tuple[str, str | None, str]:
    """(op, data types, micro-kernel) of an XNNPACK operator's profiling name: "Convolution (NHWC, F32) IGEMM #1"
    -> ("Convolution", "F32", "IGEMM"); "Fully Connected (NC, QD8, F32, QC8W) GEMM #2" -> ("Fully Connected",
    "QD8/F32/QC8W", "GEMM")."""
    head = re.sub(r"\s*#\d+$", "", name.strip())   # the operator's number within its delegate
    op, _, rest = head.partition("(")
    types, _, kernel = rest.partition(")")
    dtypes = [t.strip() for t in types.split(",") if t.strip() and t.strip() not in _LAYOUTS]
    return op.strip(), "/".join(dtypes) or None, kernel.strip()


def _counted(op_types: list[str]) -> str:
    counts: dict[str, int] = {}
    for o in op_types:
        short = o.removeprefix("aten.").removesuffix(".default")
        counts[short] = counts.get(short, 0) + 1
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in counts.items())
