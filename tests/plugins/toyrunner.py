"""A runtime added as one file, nothing in effbench/ naming it: "onnx-reference", onnx's pure-Python
reference evaluator, with typed suite options (`check_shapes`). The suite names it in `plugins:`."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from effbench.runners import RunnerOptions, Support, register


class ReferenceOptions(RunnerOptions):
    check_shapes: bool = False   # ReferenceEvaluator(check_shape_annotations=...): each output against the graph


class ReferenceSession:
    def __init__(self, path: str, check_shapes: bool) -> None:
        from onnx.reference import ReferenceEvaluator
        self.sess = ReferenceEvaluator(path, check_shape_annotations=check_shapes)
        self.info = {"runtime": "onnx-reference", "check_shapes": check_shapes}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.sess.run(None, feeds)]

    def timed_call(self, feeds: dict[str, np.ndarray]):
        self.sess.run(None, feeds)
        return lambda: self.sess.run(None, feeds)


@register
class ReferenceRunner:
    name: ClassVar[str] = "onnx-reference"
    artifact: ClassVar[str] = "onnx"
    runtime_module: ClassVar[str] = "onnx.reference"
    excludes: ClassVar[tuple[str, ...]] = ()
    packages: ClassVar[tuple[str, ...]] = ("onnx",)
    Options: ClassVar[type[RunnerOptions]] = ReferenceOptions

    def supports(self, variant) -> Support:
        return Support.yes() if variant.onnx_path else Support.no(variant.onnx_reason or "no graph")

    def load(self, variant, threads: int, options: dict[str, Any]) -> ReferenceSession:
        ro: ReferenceOptions = options.get("runner_options") or ReferenceOptions()
        return ReferenceSession(variant.onnx_path, ro.check_shapes)
