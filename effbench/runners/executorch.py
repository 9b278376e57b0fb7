"""ExecuTorch with the XNNPACK delegate: exports a variant's FP32 torch module (`torch.export`), quantizes it
the ExecuTorch way where the precision asks, lowers it with the XNNPACK partitioner to a `.pte`, and times
the ExecuTorch Python runtime's `Method.execute` on inputs bound once.

A `.pte` has static shapes, so a program is built for the shapes of the inputs a session is first given
(its first `run` or `timed_call`, never inside the timed samples; `info["build_s"]` says how long) and
cached on disk by the module's weights, the shapes, the precision and the tools' versions (lowering runs
ExecuTorch's bundled `flatc` binary in subprocesses to serialize the XNNPACK payload). Each session
records the fraction of the graph's operators XNNPACK took (`delegation`): what it did not take runs on
ExecuTorch's portable reference kernels, the usual reason a lowered model is slow.

Precisions: fp32; fp16 (`module.half()`, where XNNPACK takes it); bf16 only if XNNPACK takes some of it
(it took none here); int8 with ExecuTorch's XNNPACKQuantizer through torchao's PT2E flow (static,
calibrated; int8-dynamic: dynamic activations); int4 weight-only through torchao's `IntxWeightOnlyConfig`,
or int8-dynamic-activation/int4-weight ("8da4w", the scheme ExecuTorch documents for XNNPACK) as an
option. Every program's output is checked against the same (quantized) module in torch before it is
timed: a program that runs but computes something else is unsupported, with the error.

int8 calibrates on the inputs the variant was built with (`Variant.calibration`: the model's calibration
split, kept beside the variant in its cache folder). Load options besides the harness's ("artifact",
"device", "runner_options"): "calibration" ({input name: array, samples along axis 0}) overrides them (with
neither, plain int8 is calibrated on seeded inputs from the input spec, recorded, and int8-static is
unsupported), "cache_dir" (where programs are cached; default: the system's temporary folder) and "profile"
(keep each program's ETRecord beside it, for `effbench layers`: `runners/executorch_layers.py`).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from effbench.runners.base import RunnerOptions, Support, Unsupported, register, require_cpu, torch_artifact

BUILDS = ("fp32", "fp16", "bf16", "int8", "int4")
# A program whose output differs from the same module in torch by more than this fraction of the output's
# largest magnitude computes something else: quantization noise between torch's reference quantized ops
# and XNNPACK's kernels is a few output steps (int8: ~1/127 of the range), not 10%.
MISMATCH_REL = 0.1
# delegate outputs are unpacked by `getitem` nodes: graph plumbing, not an operator left undelegated
_PLUMBING = ("getitem",)


class ExecuTorchOptions(RunnerOptions):
    """`options:` of the executorch runner."""

    calibration_samples: Annotated[int, Field(ge=1, le=100_000)] = 256   # int8 PT2E calibration inputs
    int8_per_channel: bool = True                                     # XNNPACKQuantizer's weight granularity
    # pt2e: XNNPACKQuantizer (weights and activations); weight-only: torchao IntxWeightOnlyConfig(int8)
    int8_scheme: Literal["pt2e", "weight-only"] = "pt2e"
    # weight-only: torchao IntxWeightOnlyConfig(int4); 8da4w: Int8DynamicActivationIntxWeightConfig(int4)
    int4_scheme: Literal["weight-only", "8da4w"] = "weight-only"
    int4_group_size: Annotated[int, Field(ge=2, le=65536)] | None = None   # None: the variant's block_size, else 32


@register
class ExecuTorchRunner:
    name: ClassVar[str] = "executorch"
    artifact: ClassVar[str] = "torch"
    runtime_module: ClassVar[str] = "executorch.runtime"   # imports torch (and torchao) too
    excludes: ClassVar[tuple[str, ...]] = ()
    packages: ClassVar[tuple[str, ...]] = ("executorch", "torch", "torchao")
    extra: ClassVar[str] = "executorch"   # pip install -e .[executorch]; a suite naming the runner without it is refused
    requires: ClassVar[dict[str, str]] = {"executorch": "executorch", "torchao": "torchao"}   # module -> distribution
    Options: ClassVar[type[RunnerOptions]] = ExecuTorchOptions

    def supports(self, variant) -> Support:
        if variant.precision not in BUILDS:
            return Support.no(f"effbench builds {', '.join(BUILDS)} for ExecuTorch from the FP32 module, "
                              f"not {variant.precision}")
        if variant.precision == "fp32" and variant.torch is None:
            return Support.no(variant.torch_reason or f"no torch module for the {variant.label} variant")
        _, _, method = variant.label.split("+")[0].partition("-")
        if method and (variant.precision, method) not in (("int8", "static"), ("int8", "dynamic")):
            return Support.no(f"ExecuTorch has no {variant.precision}-{method} build here")
        return Support.yes()

    def load(self, variant, threads: int, options: dict[str, Any]) -> ExecuTorchSession:
        require_cpu(self, variant, options, "the XNNPACK (CPU) delegate")
        import torch

        from effbench.models.sources import build_torch_module
        artifact = torch_artifact(self, variant, options, "export")
        module = build_torch_module(artifact)
        ro: ExecuTorchOptions = options.get("runner_options") or ExecuTorchOptions()
        threads_set = _set_threads(threads)
        from importlib.metadata import version
        info = {"runtime": "executorch", "version": version("executorch"), "device": "cpu", "backend": "XNNPACK",
                "torch": str(torch.__version__), "torchao": version("torchao"), "threads": threads_set,
                "threads_how": "executorch.extension.pybindings.portable_lib._unsafe_reset_threadpool "
                               "(private: ExecuTorch's Python API has no public thread setting)"}
        plan = _plan(variant, ro)
        calibration = _calibration(variant, plan, ro, options) if plan.get("calibrated") else None
        return ExecuTorchSession(module, plan, info, calibration=calibration, ro=ro,
                                 cache=_cache_root(options), etrecord=bool(options.get("profile")))

    @staticmethod
    def profile_layers(session: ExecuTorchSession, feeds: dict[str, np.ndarray], runs: int, **_work) -> dict[str, Any]:
        """ExecuTorch's ETDump over `runs` calls of the program of a session loaded with the load option
        "profile" (its ETRecord beside it), read by the devtools Inspector (`runners.executorch_layers`)."""
        from effbench.runners.executorch_layers import profile_program
        return profile_program(session, feeds, runs)


def _set_threads(threads: int) -> int:
    # private API (the leading underscore is ExecuTorch's): resets the process-wide pool XNNPACK runs on
    from executorch.extension.pybindings import portable_lib
    portable_lib._unsafe_reset_threadpool(int(threads))
    return int(portable_lib._threadpool_get_thread_count())


def _plan(variant, ro: ExecuTorchOptions) -> dict[str, Any]:
    """What to build for this variant (JSON: it enters the program cache's key)."""
    _, _, method = variant.label.split("+")[0].partition("-")
    p = variant.precision
    if p in ("fp32", "fp16", "bf16"):
        return {"precision": p}
    if p == "int8":
        if ro.int8_scheme == "weight-only":
            return {"precision": p, "scheme": "torchao IntxWeightOnlyConfig(int8, per channel)"}
        return {"precision": p, "scheme": "pt2e XNNPACKQuantizer", "dynamic": method == "dynamic",
                "per_channel": ro.int8_per_channel, "calibrated": method != "dynamic",
                "static_by_name": method == "static", "samples": ro.calibration_samples}
    group = ro.int4_group_size or _variant_option(variant, "block_size") or 32
    return {"precision": p, "scheme": ro.int4_scheme, "group_size": int(group)}


# ----------------------------------------------------------------------------------- building a .pte
def quantize_module(module, example: tuple, plan: dict[str, Any], calibration_batches: list[tuple] | None):
    """The module as ExecuTorch's XNNPACK flow quantizes it, ready for `torch.export`: PT2E (XNNPACKQuantizer,
    `prepare_pt2e`, calibration calls, `convert_pt2e`) or torchao's `quantize_` with an Intx config."""
    import copy

    import torch
    if plan["precision"] == "int8" and plan["scheme"].startswith("pt2e"):
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(
            is_per_channel=plan["per_channel"], is_dynamic=plan["dynamic"]))
        prepared = prepare_pt2e(torch.export.export(copy.deepcopy(module), example).module(), quantizer)
        for args in calibration_batches or [example]:
            prepared(*args)
        return convert_pt2e(prepared)
    import torchao.quantization as tq
    from torchao.quantization.granularity import PerAxis, PerGroup
    if plan["precision"] == "int8":
        config = tq.IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    elif plan["scheme"] == "8da4w":
        config = tq.Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                          weight_granularity=PerGroup(plan["group_size"]))
    else:
        config = tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(plan["group_size"]))
    quantized = copy.deepcopy(module)
    tq.quantize_(quantized, config)
    return quantized


def lower_to_pte(module, example: tuple, path: Path, etrecord: Path | None = None) -> dict[str, Any]:
    """`torch.export` + `to_edge_transform_and_lower` with the XNNPACK partitioner + `to_executorch`, the
    program written to `path`; returns the delegation summary (`delegation_summary`). `etrecord`: also
    write the ETRecord of this lowering there (`generate_etrecord`: the graphs and the debug handles that map
    the program's instructions and delegate calls back to the graph's operators, for the Inspector)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    edge = to_edge_transform_and_lower(torch.export.export(module, example), partitioner=[XnnpackPartitioner()],
                                       generate_etrecord=etrecord is not None)
    delegation = delegation_summary(edge.exported_program().graph_module)
    if delegation["delegated_ops"] == 0:
        raise Unsupported(f"XNNPACK's partitioner took none of the graph's {delegation['total_ops']} operators "
                          f"({', '.join(sorted(delegation['by_operator']))}); ExecuTorch would run them all on "
                          "its portable reference kernels")
    program = edge.to_executorch()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(program.buffer)
    tmp.replace(path)
    if etrecord is not None:
        program.get_etrecord().save(str(etrecord))
    return delegation


def delegation_summary(graph_module) -> dict[str, Any]:
    """ExecuTorch's own count (`executorch.devtools.backend_debug.get_delegation_info`) and, per operator,
    how many nodes XNNPACK took; `fraction` is over operators, leaving out the `getitem` nodes that unpack a
    delegate's outputs (ExecuTorch counts them as not delegated: a fully delegated MLP would read 3/4)."""
    from executorch.devtools.backend_debug import get_delegation_info
    info = get_delegation_info(graph_module)
    by_op = {op: {"delegated": int(v.delegated), "not_delegated": int(v.non_delegated)}
             for op, v in info.delegation_by_operator.items() if op not in _PLUMBING}
    delegated = sum(v["delegated"] for v in by_op.values())
    total = delegated + sum(v["not_delegated"] for v in by_op.values())
    return {"fraction": round(delegated / total, 4) if total else 0.0, "delegated_ops": delegated,
            "total_ops": total, "not_delegated": {k: v["not_delegated"] for k, v in by_op.items() if v["not_delegated"]},
            "by_operator": by_op, "subgraphs": int(info.num_delegated_subgraphs),
            "executorch_counts": {"delegated_nodes": int(info.num_delegated_nodes),
                                  "non_delegated_nodes": int(info.num_non_delegated_nodes)},
            "counted": "operators (aten and quantize/dequantize), getitem left out"}


def _variant_option(variant, key: str):
    for side in ("torch", "onnx"):
        opts = (variant.build.get(side) or {}).get("options") or {}
        if key in opts:
            return opts[key]
    return None


def _calibration(variant, plan: dict[str, Any], ro: ExecuTorchOptions, options: dict[str, Any]):
    given = options.get("calibration")
    if given:
        return {k: np.asarray(v) for k, v in given.items()}, "the model's calibration inputs (load option)"
    kept = variant.calibration_inputs()   # what the variant's build was calibrated on, kept beside it
    if kept:
        return kept
    if plan.get("static_by_name"):
        raise Unsupported("int8-static for ExecuTorch needs the model's calibration inputs (kept with the variant, "
                          "or the 'calibration' load option); none were given")
    from effbench.models.sources import ModelArtifact
    art = ModelArtifact.from_json((variant.torch or {}).get("artifact") or options["artifact"])
    return art.feeds(ro.calibration_samples, seed=1), "generated from the input spec (seeded random)"


def _cache_root(options: dict[str, Any]) -> Path:
    import tempfile
    return Path(options.get("cache_dir") or Path(tempfile.gettempdir()) / "effbench-cache") / "executorch"


def _weights_sha256(module) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _first_line(e: BaseException) -> str:
    text = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return (text[0] if text else type(e).__name__)[:300]


# ----------------------------------------------------------------------------------- the session
class ExecuTorchSession:
    """One model's programs, one per input signature. `info` gains "built", "delegation" and "build_s" when
    the first program is built (the first `run` or `timed_call`). The thread count is ExecuTorch's
    process-wide pool: the last session loaded in a worker sets it for all of them."""

    def __init__(self, module, plan: dict[str, Any], info: dict[str, Any], *, calibration, ro: ExecuTorchOptions,
                 cache: Path, etrecord: bool = False) -> None:
        import torch
        self.torch, self.module, self.plan, self.info, self.ro, self.cache = torch, module, plan, info, ro, cache
        self.etrecord = etrecord   # keep an ETRecord beside each program (`effbench layers`)
        self.calibration, self.calibration_source = calibration if calibration else (None, None)
        self.info["plan"] = plan
        self._programs: dict[tuple, Any] = {}   # input signature -> (program, method)

    def _dtype(self):
        return {"fp16": self.torch.float16, "bf16": self.torch.bfloat16}.get(self.plan["precision"])

    def _tensors(self, feeds: dict[str, np.ndarray]) -> tuple:
        ts = [self.torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()]
        dtype = self._dtype()
        if dtype is not None:
            ts = [t.to(dtype) if t.is_floating_point() else t for t in ts]
        return tuple(ts)

    def method_for(self, feeds: dict[str, np.ndarray]):
        """The loaded `forward` of the program built for these inputs' shapes and types."""
        sig = tuple((k, tuple(v.shape), str(v.dtype)) for k, v in feeds.items())
        if sig not in self._programs:
            self._programs[sig] = self._build(sig, self._tensors(feeds))
        return self._programs[sig][1]

    def _build(self, sig: tuple, example: tuple):
        from importlib.metadata import version

        from executorch.runtime import Runtime
        t0 = time.perf_counter()
        calib_key = None
        if self.calibration is not None:
            calib_key = hashlib.sha256(b"".join(np.ascontiguousarray(a[:self.ro.calibration_samples]).tobytes()
                                                for _, a in sorted(self.calibration.items()))).hexdigest()[:16]
        key = hashlib.sha256(json.dumps([_weights_sha256(self.module), self.plan, sig, calib_key,
                                         version("executorch"), str(self.torch.__version__), version("torchao")],
                                        default=str).encode()).hexdigest()[:16]
        folder = self.cache / f"{self.plan['precision']}-{key}"
        pte, meta, etrecord = folder / "model.pte", folder / "build.json", folder / "etrecord.bin"
        if pte.is_file() and meta.is_file() and (etrecord.is_file() or not self.etrecord):
            built = json.loads(meta.read_text())
            built["cache"] = f"read from {pte}"
        else:  # an ETRecord maps only the program lowered with it: a cached one without it is lowered again
            built = self._lower(example, pte, etrecord if self.etrecord else None)
            folder.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps(built, default=str))
            built["cache"] = f"built in this worker, saved to {pte}"
        program = Runtime.get().load_program(pte)
        method = program.load_method("forward")
        self.info.update({"built": {k: v for k, v in built.items() if k != "delegation"},
                          "delegation": built["delegation"], "pte_bytes": pte.stat().st_size,
                          "program_for": {k: list(s) for k, s, _ in sig}, "build_s": round(time.perf_counter() - t0, 3),
                          "program": str(pte)})
        if self.etrecord:
            self.info["etrecord"] = str(etrecord)
        return program, method

    def _lower(self, example: tuple, pte: Path, etrecord: Path | None = None) -> dict[str, Any]:
        """Quantize (when asked), lower (with its ETRecord, when asked), and check the program against the same
        module in torch."""
        import copy
        import warnings

        from executorch.runtime import Runtime
        torch = self.torch
        module, built = self.module, {"tool": "torch.export + to_edge_transform_and_lower(XnnpackPartitioner) "
                                              "+ to_executorch"}
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # export and PT2E print deprecation notices per call
                dtype = self._dtype()
                if dtype is not None:
                    module = copy.deepcopy(module).to(dtype)  # .to is in place: keep the FP32 module
                elif self.plan["precision"] in ("int8", "int4"):
                    module = quantize_module(module, example, self.plan, self._calibration_batches(example))
                    built["quantized_by"] = self.plan["scheme"]
                    if self.calibration_source:
                        built["calibration_inputs"] = self.calibration_source
                built["delegation"] = lower_to_pte(module, example, pte.with_suffix(".check.pte"),
                                                   etrecord.with_suffix(".check.bin") if etrecord else None)
                want = module(*example)
        except Unsupported:
            raise
        except Exception as e:  # export, the quantizer or the partitioner: their own words
            raise Unsupported(f"ExecuTorch could not build {self.plan['precision']} ({self.plan.get('scheme', 'plain')}): "
                              f"{type(e).__name__}: {_first_line(e)}") from None
        check = pte.with_suffix(".check.pte")
        got = Runtime.get().load_program(check).load_method("forward").execute(list(example))
        want = want if isinstance(want, (tuple, list)) else [want]
        scale = max(float(w.float().abs().max()) for w in want) or 1.0
        err = max(float((g.float() - w.float()).abs().max()) for g, w in zip(got, want))
        built["max_abs_err_vs_torch"] = err
        built["max_rel_err_vs_torch"] = err / scale
        if not err / scale <= MISMATCH_REL:  # also catches NaN
            check.unlink(missing_ok=True)
            if etrecord:
                etrecord.with_suffix(".check.bin").unlink(missing_ok=True)
            raise Unsupported(self._mismatch_reason(module, err, scale, example))
        if etrecord:
            etrecord.with_suffix(".check.bin").replace(etrecord)
        check.replace(pte)
        return built

    def _mismatch_reason(self, module, err: float, scale: float, example: tuple) -> str:
        """Why a program that runs is not a measurement: its error, and what ExecuTorch says without XNNPACK."""
        why = (f"ExecuTorch's XNNPACK program of {self.plan['precision']} ({self.plan.get('scheme', 'plain')}) "
               f"runs but its output differs from the same module in torch by {err:.3g} (max abs; outputs reach "
               f"{scale:.3g})")
        try:  # the portable (undelegated) path: its own error says what the runtime lacks
            from executorch.exir import to_edge
            to_edge(self.torch.export.export(module, example)).to_executorch()
        except Exception as e:
            why += f"; without the delegate, to_executorch fails: {_first_line(e)}"
        return why

    def _calibration_batches(self, example: tuple) -> list[tuple] | None:
        """The calibration inputs cut into batches of the program's static batch size (axis 0)."""
        if self.calibration is None:
            return None
        batch = int(example[0].shape[0]) if example and example[0].dim() else 1
        n = min(self.ro.calibration_samples, min(len(a) for a in self.calibration.values()))
        arrays = list(self.calibration.values())
        if n < batch:  # fewer samples than one batch: repeat them
            arrays = [np.resize(a, (batch, *a.shape[1:])) for a in arrays]
            n = batch
        return [tuple(self.torch.from_numpy(np.ascontiguousarray(a[i:i + batch])) for a in arrays)
                for i in range(0, n - batch + 1, batch)]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        method = self.method_for(feeds)
        try:
            out = method.execute(list(self._tensors(feeds)))
        except Exception as e:
            raise Unsupported(f"ExecuTorch failed to run the program: {_first_line(e)}") from None
        return [(o.float() if o.is_floating_point() else o).numpy() for o in out]

    def timed_call(self, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
        method = self.method_for(feeds)
        inputs = list(self._tensors(feeds))   # bound once
        try:
            method.execute(inputs)
        except Exception as e:
            raise Unsupported(f"ExecuTorch failed to run the program: {_first_line(e)}") from None
        execute = method.execute   # 5.2 us per call on a one-op XNNPACK program here
        return lambda: execute(inputs)
