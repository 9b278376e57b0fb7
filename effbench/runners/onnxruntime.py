"""ONNX Runtime: CPUExecutionProvider, or CUDAExecutionProvider (onnxruntime-gpu) for `device: cuda`;
threads from the suite. On CUDA the timed call keeps inputs and outputs on the GPU (IOBinding) and waits
for the outputs before the clock stops."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from effbench.errors import short_paths
from effbench.runners.base import RunnerOptions, Support, Unsupported, register


class OnnxRuntimeOptions(RunnerOptions):
    """`options:` of the onnxruntime runner (its SessionOptions)."""

    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    # parallel runs independent branches of the graph on an inter-op pool; sequential is ORT's default
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    inter_op_threads: Annotated[int, Field(ge=1, le=1024)] = 1   # the inter-op pool, for execution_mode: parallel


@register
class OnnxRuntimeRunner:
    name: ClassVar[str] = "onnxruntime"
    artifact: ClassVar[str] = "onnx"
    runtime_module: ClassVar[str] = "onnxruntime"
    excludes: ClassVar[tuple[str, ...]] = ("torch",)   # torch's import alone is ~200 MB of RSS (docs/runtime-notes.md)
    packages: ClassVar[tuple[str, ...]] = ("onnxruntime", "onnxruntime-gpu")
    Options: ClassVar[type[RunnerOptions]] = OnnxRuntimeOptions
    layer_profiler: ClassVar[str] = "ONNX Runtime profiler"   # what `effbench layers` names its profile by

    @staticmethod
    def achieved_peaks(n: int, reps: int) -> dict[str, dict[str, Any]]:
        return achieved_peaks(n, reps)

    @staticmethod
    def profile_kernels(variant, threads: int, feeds: dict[str, Any], runs: int) -> tuple[list[dict], str]:
        """ONNX Runtime's profiler over `runs` calls of the variant's graph on the CPU provider: its trace
        events (one per kernel and call) and the graph it ran, for `measure.layers`."""
        return profile_graph(variant.onnx_path, threads, feeds, runs), variant.onnx_path

    def supports(self, variant) -> Support:
        if not variant.onnx_path:
            return Support.no(f"the {variant.label} variant has no ONNX graph for ONNX Runtime"
                              + (f" ({variant.onnx_reason})" if getattr(variant, "onnx_reason", None) else ""))
        return Support.yes()

    def load(self, variant, threads: int, options: dict[str, Any]) -> OrtSession:
        import onnxruntime as ort
        so = _session_options(threads, options)
        ro: OnnxRuntimeOptions = options.get("runner_options") or OnnxRuntimeOptions()
        shared = bool(options.get("shared_thread_pool"))
        device = options.get("device", "cpu")
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise Unsupported(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (it offers "
                                  f"{', '.join(available)}): install onnxruntime-gpu {ort.__version__}")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]  # CPU: nodes CUDA has no kernel for
        elif device != "cpu":
            raise Unsupported(f"onnxruntime runs on cpu or cuda here, not '{device}'")
        try:
            sess = ort.InferenceSession(variant.onnx_path, sess_options=so, providers=providers)
        except Exception as e:  # ORT raises Fail/InvalidGraph/NotImplemented with the real reason
            raise Unsupported(f"onnxruntime {ort.__version__} cannot load the {variant.label} graph: "
                              f"{_first_line(e)}") from None
        if device == "cuda" and "CUDAExecutionProvider" not in sess.get_providers():
            # ORT falls back to the CPU when the CUDA provider's libraries (CUDA, cuDNN) fail to load
            raise Unsupported(f"onnxruntime {ort.__version__} could not start its CUDA provider (the session "
                              f"fell back to {', '.join(sess.get_providers())}; see the worker log for the "
                              "library it could not load)")
        info = {"runtime": "onnxruntime", "version": ort.__version__, "providers": sess.get_providers(),
                "graph_optimization_level": ro.graph_optimization_level, "execution_mode": ro.execution_mode,
                "intra_op_num_threads": threads,
                "inter_op_num_threads": ro.inter_op_threads if ro.execution_mode == "parallel" else 1,
                "thread_pool": "shared by the worker's sessions" if shared else "per session"}
        if options.get("allow_spinning") is False:
            info["spinning"] = "off (session.intra_op.allow_spinning=0, session.inter_op.allow_spinning=0)"
        if device == "cuda":
            info["device"] = "cuda"
            info["io"] = "inputs and outputs bound on the GPU (IOBinding); outputs synchronized per call"
        return OrtSession(sess, info, device=device, source=(variant.onnx_path, providers, threads, options))


def _session_options(threads: int, options: dict[str, Any]):
    """The SessionOptions a runner's options ask for: threads (or the worker's shared pool), the execution
    mode and the graph optimisation level (`OnnxRuntimeOptions`)."""
    import onnxruntime as ort
    ro: OnnxRuntimeOptions = options.get("runner_options") or OnnxRuntimeOptions()
    parallel = ro.execution_mode == "parallel"
    so = ort.SessionOptions()
    if options.get("shared_thread_pool"):
        # Several sessions timed in turn in one worker (measuring.measure_group): each with its own
        # pool, the idle sessions' spinning threads took the cores from the one being timed (a 4 ms
        # p99 on a 0.1 ms cell here). One pool for the process, as a single-session worker has.
        _shared_pool(threads)
        so.use_per_session_threads = False
    else:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = ro.inter_op_threads if parallel else 1
    if options.get("allow_spinning") is False:
        # a worker that times several runtimes in turn (`compare: runtimes`, execution.tasks._thread_pools): a
        # pool busy-waiting after its run would take the cores from the next block, another runtime's
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[ro.graph_optimization_level]
    return so


def achieved_peaks(n: int, reps: int) -> dict[str, dict[str, Any]]:
    """{precision: {"ops_per_s", "kernel"} or {"error"}}: the best of `reps` runs of each registered
    precision's n x n x n matrix-product graph (its `onnx_matmul`) on ONNX Runtime's CPU provider, its
    default threads: the peak this runtime's own kernels reach here (MLAS int8 is not torch._int_mm).
    "conv/PRECISION" keys: the same for the precision's 3x3 convolution graph (`onnx_conv`)."""
    import onnxruntime as ort

    from effbench.variants.microgemm import conv_macs
    from effbench.variants.specs import PRECISIONS
    out: dict[str, dict[str, Any]] = {}
    for spec in PRECISIONS.values():
        for key, build, macs in ((spec.name, spec.onnx_matmul and (lambda s=spec: s.onnx_matmul(n)), n ** 3),
                                 (f"conv/{spec.name}", spec.onnx_conv, conv_macs())):
            if build is None:
                continue
            try:
                model, feeds, kernel = build()
                best = _best_run(ort.InferenceSession(model, providers=["CPUExecutionProvider"]), feeds, reps)
                out[key] = {"ops_per_s": 2.0 * macs / best,
                            "kernel": f"onnxruntime {ort.__version__} {kernel}, CPU provider, default threads"}
            except Exception as e:  # no CPU kernel for this type (bf16 MatMul): recorded, not fatal
                out[key] = {"error": _first_line(e)}
    return out


def cpu_session(path: str, threads: int, *, profile_prefix: str | None = None):
    """A plain ONNX Runtime session of the graph at `path` on the CPU provider, with the runner's own
    session options (threads, sequential execution, all graph optimisations); profiling on request.
    For the workers that run graphs outside a timed cell (layer profile, sensitivity, advisor)."""
    import onnxruntime as ort
    so = _session_options(threads, {})
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def profile_graph(path: str, threads: int, feeds: dict[str, Any], runs: int) -> list[dict]:
    """ONNX Runtime's profiler trace of `runs` calls of the graph at `path` (CPU provider, all graph
    optimisations): its per-kernel events, the first (warm-up) call's left out."""
    import json
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="effbench-prof-"))
    sess = cpu_session(_named(path, folder), threads, profile_prefix=str(folder / "ort"))
    sess.run(None, feeds)  # the first call's allocations are not the layers' time
    for _ in range(runs):
        sess.run(None, feeds)
    trace = Path(sess.end_profiling())
    events = [e for e in json.loads(trace.read_text()) if e.get("cat") == "Node"]
    trace.unlink(missing_ok=True)
    per_call = len(events) // (runs + 1) if events else 0
    return events[per_call:]


def _named(path: str, folder: Path) -> str:
    """The graph at `path`, or where some node has no name, a copy in `folder` with every node named by its
    layer id: ONNX Runtime calls a fused unnamed node "fused " and its kernels then match no layer. A graph
    with external data is profiled as it is."""
    import onnx

    from effbench.measure.flops import name_layers
    m = onnx.load(path, load_external_data=False)
    if all(n.name for n in m.graph.node) or any(t.data_location == onnx.TensorProto.EXTERNAL
                                                for t in m.graph.initializer):
        return path
    out = folder / "named.onnx"
    onnx.save(name_layers(m), str(out))
    return str(out)


def _best_run(sess, feeds: dict[str, Any], reps: int) -> float:
    import time
    sess.run(None, feeds)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        best = min(best, time.perf_counter() - t0)
    return best


_SHARED_POOL: list[int] = []


def _shared_pool(threads: int) -> None:
    """Size ONNX Runtime's process-wide pool once, before the first session creates the environment."""
    if _SHARED_POOL:
        if _SHARED_POOL[0] != threads:
            raise Unsupported(f"this worker's shared thread pool has {_SHARED_POOL[0]} threads, not {threads}")
        return
    from onnxruntime.capi import _pybind_state
    _pybind_state.set_global_thread_pool_sizes(threads, 1)
    _SHARED_POOL.append(threads)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    # ORT puts its C++ source location and function signature before the sentence that matters
    # ("Opset 99 is under development", "Failed to allocate memory"): drop them, then cut.
    line = re.sub(r"/onnxruntime_src/\S+:\d+ (?:[^()]*\([^()]*\)(?: const)? )?", "", line)
    return short_paths(line)[:300]  # "Load model from /home/.../model.onnx failed": no machine's folders


class OrtSession:
    def __init__(self, sess, info: dict[str, Any], device: str = "cpu",
                 source: tuple[str, list[str], int, dict[str, Any]] | None = None) -> None:
        self.sess = sess
        self.info = info
        self.device = device
        self.source = source   # (graph path, providers, threads, options): what `placement` reopens
        self.output_names = [o.name for o in sess.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.sess.run(self.output_names, feeds)

    def placement(self, feeds: dict[str, np.ndarray]) -> dict[str, Any] | None:
        """Which execution provider ran each node: one profiled call in a second session of the same
        graph and options (ORT's profiler names every kernel's provider). ORT quietly puts the nodes the
        CUDA provider has no kernel for on the CPU, with copies between them: a variant that is slow on
        CUDA is often one that mostly ran on the CPU. Never used for timing. None where it cannot tell."""
        import json
        import os
        import tempfile
        if self.source is None:
            return None
        import onnxruntime as ort
        path, providers, threads, options = self.source
        with tempfile.TemporaryDirectory() as tmp:
            so = _session_options(threads, options)
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tmp, "placement")
            try:
                sess = ort.InferenceSession(path, sess_options=so, providers=providers)
                sess.run(self.output_names, feeds)
                events = json.loads(open(sess.end_profiling()).read())
            except Exception as e:  # noqa: BLE001 - the placement is a note; its absence says why
                return {"reason": f"placement not read: {type(e).__name__}: {_first_line(e)}"}
        nodes: dict[str, dict[str, str]] = {}
        for ev in events:
            args = ev.get("args") or {}
            if ev.get("cat") == "Node" and args.get("provider"):
                nodes[ev.get("name", "").removesuffix("_kernel_time")] = {"provider": args["provider"],
                                                                         "op": args.get("op_name", "?")}
        by_provider: dict[str, int] = {}
        ops_off_device: dict[str, int] = {}
        for n in nodes.values():
            by_provider[n["provider"]] = by_provider.get(n["provider"], 0) + 1
            if self.device == "cuda" and n["provider"] != "CUDAExecutionProvider":
                ops_off_device[n["op"]] = ops_off_device.get(n["op"], 0) + 1
        out: dict[str, Any] = {"nodes_by_provider": by_provider}
        if ops_off_device:
            out["ops_not_on_cuda"] = ops_off_device
        return out

    def _bound(self, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
        """One call on inputs already on the GPU, outputs left there, returning once they are written."""
        from onnxruntime import OrtValue
        io = self.sess.io_binding()
        values = [OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self.device, 0) for a in feeds.values()]
        for name, value in zip(feeds, values):
            io.bind_ortvalue_input(name, value)
        for name in self.output_names:
            io.bind_output(name, self.device)
        run = self.sess.run_with_iobinding

        def call(_inputs=values) -> object:  # the default keeps the device inputs alive with the call
            run(io)
            io.synchronize_outputs()
            return io

        return call

    def timed_call(self, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
        run, names = self.sess.run, self.output_names
        try:
            if self.device == "cuda":
                bound = self._bound(feeds)
                bound()
                return bound
            run(names, feeds)
        except Exception as e:
            if "Failed to allocate memory" in str(e) or "bad_alloc" in str(e):  # out of memory, not unsupported
                raise MemoryError(f"onnxruntime could not allocate memory: {_first_line(e)}") from None
            raise Unsupported(f"onnxruntime failed to run the graph: {_first_line(e)}") from None
        return lambda: run(names, feeds)
