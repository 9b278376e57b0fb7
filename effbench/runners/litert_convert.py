"""LiteRT's converter step, run as a script by the converter venv's own python (`make litert-env`:
`.venv-litert`, torch 2.13.0 + litert-torch 0.10.0), never imported by effbench: litert-torch cannot live in
the main venv (it downgrades typing_extensions, which breaks ExecuTorch's cattrs, and pulls jax).

    .venv-litert/bin/python -P effbench/runners/litert_convert.py request.json

(`-P`: this folder must not go onto sys.path, or effbench's runners/torch.py would shadow torch; the script
also drops it itself.)

It imports only the standard library, numpy, torch and litert-torch (whose PT2E flow is torchao's
`prepare_pt2e`/`convert_pt2e`, as litert-torch's own tests use it). The request names a `torch.export`-ed
program (`torch.export.save`, written by the main process with the same torch version), its example inputs
(`torch.save` of a list of tensors), the calibration inputs (.npz) where the plan calibrates, and the plan:

- {"build": "float"}: `litert_torch.convert` of the program as it is (FP32, or a module the main process
  cast to another float dtype before exporting it);
- {"build": "recipe", "recipe": "fp16-weights"}: litert-torch's `full_fp16_recipe` (float16 weights);
- {"build": "recipe", "recipe": "int4-dynamic", "block_size": N}: `full_dynamic_recipe(weight_dtype=INT4,
  granularity=BLOCKWISE_N)` (ai-edge-quantizer's dynamic-range int4 weights);
- {"build": "pt2e", "dynamic": bool, "per_channel": bool, "calibrated": bool, "batch": N, "samples": N}:
  litert-torch's `PT2EQuantizer` with `get_symmetric_quantization_config`, prepare, calibration calls,
  convert, then `litert_torch.convert(..., quant_config=QuantConfig(pt2e_quantizer=...))`.

It writes the .tflite, an .npz of torch's outputs on the example inputs ("reference_i": the same
(quantized) model in torch where there is one, else FP32; "fp32_i": the FP32 program), and a result JSON:
{"ok": true, "versions", "convert_s", "tool", "reference"} or {"ok": false, "stage", "error"} with the
tool's own words (its first line).
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

# run as a script, its folder heads sys.path, and effbench/runners/torch.py would be imported as torch
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for dist in ("litert-torch", "torch", "torchao", "ai-edge-quantizer", "ai-edge-litert"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {(lines[0] if lines else '')[:400]}"


def _eval(module):
    """An exported GraphModule refuses `.eval()`; its graph was exported in eval mode already, so only the
    flag litert-torch warns about is set."""
    for m in module.modules():
        m.training = False
    return module


def _calibration_batches(req: dict, plan: dict) -> list[tuple]:
    import numpy as np
    import torch
    if not req.get("calibration"):
        return []
    with np.load(req["calibration"]) as z:
        arrays = [z[f"arr_{i}"] for i in range(len(req["input_names"]))]   # in the module's argument order
    batch = int(plan["batch"])
    n = min(int(plan["samples"]), min(len(a) for a in arrays))
    if n < batch:  # fewer samples than one batch of the static program: repeat them
        arrays = [np.resize(a, (batch, *a.shape[1:])) for a in arrays]
        n = batch
    return [tuple(torch.from_numpy(np.ascontiguousarray(a[i:i + batch])) for a in arrays)
            for i in range(0, n - batch + 1, batch)]


def _pt2e(program, example: tuple, plan: dict, req: dict):
    """(quantized module, its quant_config): litert-torch's PT2E flow."""
    import torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import quantize_pt2e
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config(
        is_per_channel=bool(plan["per_channel"]), is_dynamic=bool(plan["dynamic"])))
    prepared = quantize_pt2e.prepare_pt2e(torch.export.export(program.module(), example).module(), quantizer)
    with torch.no_grad():
        for args in (_calibration_batches(req, plan) if plan.get("calibrated") else []) or [example]:
            prepared(*args)
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    return _eval(quantized), quant_config.QuantConfig(pt2e_quantizer=quantizer)


def _recipe(plan: dict):
    from litert_torch.generative.quantize import quant_attrs, quant_recipes
    if plan["recipe"] == "fp16-weights":
        return quant_recipes.full_fp16_recipe()
    name = f"BLOCKWISE_{int(plan['block_size'])}"
    if not hasattr(quant_attrs.Granularity, name):
        have = ", ".join(g.name for g in quant_attrs.Granularity if g.name.startswith("BLOCKWISE"))
        raise ValueError(f"litert-torch has no int4 granularity {name} (it has {have})")
    return quant_recipes.full_dynamic_recipe(weight_dtype=quant_attrs.Dtype.INT4,
                                             granularity=getattr(quant_attrs.Granularity, name))


def _outputs(out) -> list:
    out = out if isinstance(out, (tuple, list)) else [out]
    return [o.detach().float().numpy() for o in out]


def convert(req: dict) -> dict:
    import litert_torch
    import numpy as np
    import torch
    plan, stage = req["plan"], "load"
    try:
        program = torch.export.load(req["program"])
        example = tuple(torch.load(req["example"], weights_only=True))
        fp32 = _outputs(program.module()(*example))
        module, kwargs, reference = _eval(program.module()), {}, "the exported program in torch"
        stage = "quantize"
        if plan["build"] == "pt2e":
            module, kwargs["quant_config"] = _pt2e(program, example, plan, req)
            reference = "the same PT2E-quantized module in torch"
        elif plan["build"] == "recipe":
            kwargs["quant_config"] = _recipe(plan)
            reference = "the FP32 program in torch (the recipe quantizes the converted graph, not a torch module)"
        with torch.no_grad():
            want = _outputs(module(*example))
        stage = "convert"
        t0 = time.perf_counter()
        litert_torch.convert(module, example, **kwargs).export(req["tflite"])
        seconds = time.perf_counter() - t0
    except Exception as e:  # the tool's own words, one line; the traceback goes to the log
        traceback.print_exc()
        return {"ok": False, "stage": stage, "error": _first_line(e), "versions": _versions()}
    np.savez(req["reference"], **{f"reference_{i}": a for i, a in enumerate(want)},
             **{f"fp32_{i}": a for i, a in enumerate(fp32)})
    tool = {"float": "litert_torch.convert",
            "recipe": f"litert_torch.convert(quant_config=quant_recipes ({plan.get('recipe')}))",
            "pt2e": "PT2EQuantizer + prepare_pt2e/convert_pt2e + litert_torch.convert(quant_config)"}[plan["build"]]
    return {"ok": True, "versions": _versions(), "convert_s": round(seconds, 3), "tool": tool, "reference": reference}


def main(argv: list[str]) -> int:
    req = json.loads(Path(argv[1]).read_text())
    result = convert(req)
    Path(req["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
