"""Per-layer profile of a torch module (`effbench layers` on a torch cell): torch's profiler over `runs`
calls, each leaf module's forward wrapped in a `record_function` by hooks, and its MACs from torch's
FlopCounterMode. What runs outside every leaf module (functional attention matmuls, activations written
as functions) is its own row, so the shares add up to the whole call.
"""
from __future__ import annotations

from typing import Any

OUTSIDE = "(outside leaf modules)"


def profile_modules(module, args: tuple, runs: int) -> tuple[list[dict], list[dict]]:
    """(trace events in ONNX Runtime's profiler format, one per leaf module and call, for
    `measure.layers.kernel_times`; per-module rows {name, op_type, macs, bytes} for `measure.layers.fold`)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function
    from torch.utils.flop_counter import FlopCounterMode

    leaves = [(name, m) for name, m in module.named_modules() if name and not any(True for _ in m.children())]
    root = type(module).__name__
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            module(*args)
    counts = fc.get_flop_counts()
    flops = {name: sum(counts.get(f"{root}.{name}", {}).values()) for name, _ in leaves}
    total_flops = sum(counts.get("Global", {}).values())

    stack: list[Any] = []
    hooks = []
    for name, m in leaves:
        hooks.append(m.register_forward_pre_hook(
            lambda _m, _i, name=name: stack.append(record_function(f"effbench::{name}").__enter__())))
        hooks.append(m.register_forward_hook(lambda _m, _i, _o: stack.pop().__exit__(None, None, None)))
    try:
        with torch.inference_mode():
            for _ in range(2):  # warm-up, unprofiled
                module(*args)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(runs):
                    with record_function("effbench::call"):
                        module(*args)
    finally:
        for h in hooks:
            h.remove()
    kinds = {name: type(m).__name__ for name, m in leaves}
    events, calls = [], []
    for ev in prof.events():
        if not ev.name.startswith("effbench::"):
            continue
        name = ev.name[len("effbench::"):]
        us = float(ev.cpu_time_total)
        if name == "call":
            calls.append(us)
        else:
            events.append({"cat": "Node", "name": f"{name}_kernel_time", "dur": us, "args": {"op_name": kinds[name]}})
    if calls:  # the time no leaf module accounts for, per call
        inside = sum(e["dur"] for e in events) / max(len(calls), 1)
        for us in calls:
            events.append({"cat": "Node", "name": f"{OUTSIDE}_kernel_time", "dur": max(us - inside, 0.0),
                           "args": {"op_name": "functional ops"}})
    rows = [{"name": name, "op_type": kinds[name], "macs": int(flops[name] // 2) or None, "bytes": None}
            for name, _ in leaves]
    rows.append({"name": OUTSIDE, "op_type": "", "macs": int(max(total_flops - sum(flops.values()), 0) // 2) or None,
                 "bytes": None})
    return events, rows
