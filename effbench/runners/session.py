"""Opening a runner session for a cell: the one way every worker (measuring, quality, load scenarios,
A/B) loads a variant, with the runtime imported before the worker's baseline memory is read.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from effbench.results.record import Cell
    from effbench.variants import Variant


def enter_runtime(name: str):
    """The runner, its runtime imported before any baseline RSS is read (the runtime's import is not the
    model's memory). An ONNX Runtime worker must never have torch loaded: see execution.tasks.plain()."""
    import importlib

    from effbench.runners import get_runner
    runner = get_runner(name)
    loaded = [m for m in getattr(runner, "excludes", ()) if m in sys.modules]
    if loaded:
        raise RuntimeError(f"{loaded[0]} was imported into a {name} measuring worker before its baseline")
    importlib.import_module(getattr(runner, "runtime_module", name))
    return runner


@dataclass
class OpenSession:
    session: Any
    variant: Any                          # the loaded `Variant`
    baseline_rss_bytes: int | None       # the worker's RSS just before the load (`memory=True`)
    gpu_start_bytes: int | None          # the GPU's used memory just before the load (`memory=True`, GPU cells)


def open_session(cell: Cell, variant: Variant, artifact: dict, *, runner=None, options: dict | None = None,
                 memory: bool = False) -> OpenSession:
    """A runner session of `variant` for `cell` (its runner, threads, compile and device): the one way
    the measuring, A/B and quality workers open one. Raises `Unsupported` when the runner cannot run
    the variant.

    `runner`: the one `enter_runtime` returned, where the worker reads memory or timing after its
    runtime's import; `options`: the runner's extra load options; `memory`: read the baseline memory
    after the support check, just before the load (the runtime's import is not the model's memory).
    """
    from effbench.measure import memory as mem
    from effbench.runners import Unsupported, get_runner, runner_options
    runner = get_runner(cell.runner) if runner is None else runner
    v = variant
    support = runner.supports(v)
    if not support.ok:
        raise Unsupported(support.reason)
    baseline = mem.rss_bytes() if memory else None
    gpu_start = mem.gpu_used_bytes() if memory and cell.device != "cpu" else None
    # what a runner's load needs besides the variant: the model artifact, compile, the device
    session = runner.load(v, cell.threads, {**(options or {}), "artifact": artifact,
                                              "compile": cell.compile, "device": cell.device,
                                              "runner_options": runner_options(cell.runner, cell.runner_options)})
    return OpenSession(session, v, baseline, gpu_start)


def on_gpu(session) -> bool:
    """Every runner says `device: cuda` in its session info when it runs there (ORT: only once its CUDA
    provider really started)."""
    return session.info.get("device") == "cuda"
