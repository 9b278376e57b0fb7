"""A plugin made in test code alone: a toy precision ("toy8": weights rounded to an 8-bit grid, 16-bit
activations, 0.5 pJ per MAC) and a toy runner ("onnx-reference": onnx's pure-Python reference evaluator).
Nothing in effbench/ names either; the acceptance test runs a suite through them end to end."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from effbench.runners import Support, register
from effbench.variants import PrecisionSpec, Variant, builder, onnx_stats, register_precision

register_precision(PrecisionSpec("toy8", weight_bits=8, activation_bits=16, pj_per_mac_45nm=0.5,
                                 energy_note="a toy figure", order=50))


@builder("toy8")
def build_toy8(artifact, *, label, method, options, folder, calibration=None) -> Variant:
    import onnx
    from onnx import numpy_helper
    model = onnx.load(artifact.onnx_path)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.size > 1:
            scale = float(np.abs(w).max()) / 127 or 1.0
            init.CopyFrom(numpy_helper.from_array((np.round(w / scale) * scale).astype(np.float32), init.name))
    out = folder / "model-toy8.onnx"
    onnx.save(model, str(out))
    return Variant(model_id=artifact.model_id, label=label, precision="toy8", method="8-bit weight grid",
                   onnx_path=str(out), torch_reason="toy8 is built as a graph only",
                   build={"onnx": {"tool": "tests/plugins/toyaxes.py"}},
                   stats={"onnx": onnx_stats(str(out), artifact.onnx_path)})


class ReferenceSession:
    def __init__(self, path: str) -> None:
        from onnx.reference import ReferenceEvaluator
        self.sess = ReferenceEvaluator(path)
        self.info = {"runtime": "onnx-reference"}

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

    def supports(self, variant) -> Support:
        return Support.yes() if variant.onnx_path else Support.no(variant.onnx_reason or "no graph")

    def load(self, variant, threads: int, options: dict[str, Any]) -> ReferenceSession:
        return ReferenceSession(variant.onnx_path)
