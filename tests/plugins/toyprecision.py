"""A precision added as one file, nothing in effbench/ naming it: "toy8", weights rounded to an 8-bit
grid, 16-bit activations, 0.5 pJ per MAC. The suite names it in `plugins:`."""
from __future__ import annotations

import numpy as np

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
                   build={"onnx": {"tool": "tests/plugins/toyprecision.py"}},
                   stats={"onnx": onnx_stats(str(out), artifact.onnx_path)})
