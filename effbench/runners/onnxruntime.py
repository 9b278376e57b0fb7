"""ONNX Runtime: CPUExecutionProvider (CUDA when onnxruntime-gpu offers it), threads from the suite."""
from __future__ import annotations

import re

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from effbench.runners import Support, Unsupported, register


@register
class OnnxRuntimeRunner:
    name: ClassVar[str] = "onnxruntime"

    def supports(self, variant) -> Support:
        if not variant.onnx_path:
            return Support.no(f"the {variant.label} variant has no ONNX graph for ONNX Runtime"
                              + (f" ({variant.onnx_reason})" if getattr(variant, "onnx_reason", None) else ""))
        return Support.yes()

    def load(self, variant, threads: int, options: dict[str, Any]) -> OrtSession:
        import onnxruntime as ort
        so = ort.SessionOptions()
        shared = bool(options.get("shared_thread_pool"))
        if shared:
            # Several sessions timed in turn in one worker (execute.measure_group): each with its own
            # pool, the idle sessions' spinning threads took the cores from the one being timed (a 4 ms
            # p99 on a 0.1 ms cell here). One pool for the process, as a single-session worker has.
            _shared_pool(threads)
            so.use_per_session_threads = False
        else:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = options.get("graph_optimization_level", "all")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in available and options.get("device", "auto") != "cpu":
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        try:
            sess = ort.InferenceSession(variant.onnx_path, sess_options=so, providers=providers)
        except Exception as e:  # ORT raises Fail/InvalidGraph/NotImplemented with the real reason
            raise Unsupported(f"onnxruntime {ort.__version__} cannot load the {variant.label} graph: "
                              f"{_first_line(e)}") from None
        info = {"runtime": "onnxruntime", "version": ort.__version__, "providers": sess.get_providers(),
                "graph_optimization_level": level, "intra_op_num_threads": threads, "inter_op_num_threads": 1,
                "thread_pool": "shared by the worker's sessions" if shared else "per session"}
        return OrtSession(sess, info)


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
    return line[:300]


class OrtSession:
    def __init__(self, sess, info: dict[str, Any]) -> None:
        self.sess = sess
        self.info = info
        self.output_names = [o.name for o in sess.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.sess.run(self.output_names, feeds)

    def timed_call(self, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
        run, names = self.sess.run, self.output_names
        try:
            run(names, feeds)
        except Exception as e:
            if "Failed to allocate memory" in str(e) or "bad_alloc" in str(e):  # out of memory, not unsupported
                raise MemoryError(f"onnxruntime could not allocate memory: {_first_line(e)}") from None
            raise Unsupported(f"onnxruntime failed to run the graph: {_first_line(e)}") from None
        return lambda: run(names, feeds)
