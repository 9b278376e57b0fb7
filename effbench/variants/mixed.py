"""The `mixed` precision: a per-layer plan from `effbench advise` (plan.json) built with ONNX Runtime's
quantizer, int8 except the layers the plan keeps in FP32, by the plan's method."""
from __future__ import annotations

import json
from pathlib import Path

from effbench.errors import UserError
from effbench.models.sources import ModelArtifact
from effbench.variants import Variant, builder, first_line, onnx_stats


@builder("mixed")
def build_mixed(artifact: ModelArtifact, *, label: str, method, options, folder: Path, calibration=None) -> Variant:
    from effbench.variants.integer import clean_copy, graph_kind, quantize_onnx_int8
    path = Path(options["plan"])
    try:
        plan = json.loads(path.read_text())
        layers: dict[str, str] = plan["layers"] or {}
        how = plan["method"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"not a plan written by effbench advise ({type(e).__name__}: {e})", file=path,
                        field="plan", fix="run effbench advise SUITE --model ID and point at its plan.json") from None
    if plan.get("model") not in (None, artifact.model_id):
        raise UserError(f"the plan is for model '{plan.get('model')}', not '{artifact.model_id}'", file=path,
                        field="model", fix="use the plan effbench advise wrote for this model")
    kept = sorted(n for n, p in layers.items() if p == "fp32")
    src = clean_copy(artifact.onnx_path, folder / "fp32-clean.onnx")
    out = folder / "model-mixed.onnx"
    onnx_path = onnx_reason = None
    build, stats = {}, {}
    try:
        if how == "static" and calibration is None:
            raise ValueError("the plan is static int8 and this model has no calibration data")
        done = quantize_onnx_int8(src, str(out), how, per_channel=True, calibration=calibration,
                                  samples=int(options["calibration_samples"]), nodes_to_exclude=kept,
                                  op_types=["MatMul", "Gemm"] if graph_kind(src) == "transformer" else None)
        onnx_path = str(out)
        build["onnx"] = {**done, "method": f"mixed ({how} int8, {len(kept)} layers kept FP32)", "plan": str(path),
                         "kept_fp32": kept, "options": options}
        stats["onnx"] = onnx_stats(onnx_path, artifact.onnx_path)
    except Exception as e:  # noqa: BLE001 - the variant is unsupported with the reason
        onnx_reason = f"onnxruntime could not build the plan: {type(e).__name__}: {first_line(e)}"
    finally:
        Path(src).unlink(missing_ok=True)
    return Variant(model_id=artifact.model_id, label=label, precision="mixed", method=f"plan:{path.name}",
                   onnx_path=onnx_path, onnx_reason=onnx_reason, torch=None,
                   torch_reason="a mixed plan is an ONNX graph (torch per-module plans are not wired yet)",
                   build=build, stats=stats)
