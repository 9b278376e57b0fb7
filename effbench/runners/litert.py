"""LiteRT (formerly TensorFlow Lite): converts a variant's FP32 torch module to a `.tflite` with litert-torch
and times the LiteRT interpreter's `invoke()` on input tensors set once, with the XNNPACK delegate the
interpreter applies by itself (its default op resolver; `xnnpack: false` runs LiteRT's builtin kernels).

The converter lives in a venv of its own (`make litert-env`: `.venv-litert`, torch 2.13.0 + litert-torch
0.10.0; `$EFFBENCH_LITERT_PYTHON` names another python): litert-torch downgrades typing_extensions, which
breaks ExecuTorch's cattrs in the main venv, and pulls jax. A build runs two processes: this venv's python
exports the module with `torch.export` (`torch.export.save`, the same torch version on both sides), then
the converter's python runs `effbench/runners/litert_convert.py`, which writes the `.tflite` and torch's
outputs on the example inputs. The measuring worker itself never imports torch (`excludes`), so its
memory figures are LiteRT's. Without the converter venv every cell is unsupported, the reason naming
`make litert-env`.

A `.tflite` has static shapes: one is built for the shapes of the inputs a session is first given (its first
`run` or `timed_call`, never inside the timed samples; `info["build_s"]` says how long) and cached on disk by
the model's content (its FP32 graph's sha256 and factory), the shapes, the plan, the calibration inputs and
the tools' versions. A plan the converter refuses is cached with its reason and not retried for other
shapes. Every new build's output is checked against torch's before it is timed.

Precisions (chosen through the precision registry): the reference (FP32); a 16-bit float as litert-torch's
fp16 recipe (float16 weights; the graph dequantizes them and computes in f32: `info["compute"]` says what
each multiply-accumulate op consumes) or, with `fp16_scheme: compute`, the module cast to the dtype; other
16-bit floats as the cast module (the converter's own refusal is the reason); int8 as litert-torch's PT2E
flow (static full-integer, calibrated on the variant's calibration split; `-dynamic`: dynamic-range
activations); int4 as the dynamic-range int4 blockwise recipe (weights of fully connected layers). Each
session records the fraction of the graph's operators the delegate took (`delegation`).
Load options besides the harness's: "calibration" ({input name: array}) overrides the variant's kept
calibration inputs, "cache_dir" (default: the effbench cache the variant lives in).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from effbench.runners.base import RunnerOptions, Support, Unsupported, register, require_cpu, torch_artifact
from effbench.runners.litert_graph import (
    delegation_summary,
    graph_types,
    invoke,
    io_text,
    min_cosine,
    set_inputs,
    signature_order,
)

CONVERTER_ENV = ".venv-litert"   # `make litert-env`, at the repository root
CONVERTER_VAR = "EFFBENCH_LITERT_PYTHON"
SCRIPT = Path(__file__).with_name("litert_convert.py")
MISSING = ("LiteRT's converter (litert-torch) is not installed: run `make litert-env` (it lives in its own venv, "
           f"{CONVERTER_ENV}, because it breaks the main one's cattrs)")
# A build whose output differs from torch's by more than this fraction of the output's largest magnitude
# computes something else (int8's quantization noise is a few output steps, not 10%).
MISMATCH_REL = 0.1
# True: export in a process of its own even where torch is loaded already (the tests cover both paths)
EXPORT_IN_A_PROCESS = False
MIN_COSINE_VS_FP32 = 0.9   # int4 weights on digits-cnn: 0.995 at worst over the test split


class LiteRTOptions(RunnerOptions):
    """`options:` of the litert runner."""

    xnnpack: bool = True   # false: OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES (LiteRT's own kernels)
    # weights: litert-torch's fp16 recipe (float16 weights, f32 compute); compute: the module cast to float16
    fp16_scheme: Literal["weights", "compute"] = "weights"
    calibration_samples: Annotated[int, Field(ge=1, le=100_000)] = 256   # int8 PT2E calibration inputs
    int8_per_channel: bool = True
    int4_block_size: Annotated[int, Field(ge=2, le=65536)] | None = None  # None: the variant's block_size, else 32
    convert_timeout_s: Annotated[int, Field(ge=10, le=7200)] = 900


@register
class LiteRTRunner:
    name: ClassVar[str] = "litert"
    artifact: ClassVar[str] = "torch"
    runtime_module: ClassVar[str] = "ai_edge_litert.interpreter"
    # builds run in processes of their own (torch.export, then the converter venv): no torch in the worker
    excludes: ClassVar[tuple[str, ...]] = ("torch",)
    packages: ClassVar[tuple[str, ...]] = ("ai-edge-litert",)
    extra: ClassVar[str] = "litert"   # pip install -e .[litert]; a suite naming the runner without it is refused
    requires: ClassVar[dict[str, str]] = {"ai_edge_litert": "ai-edge-litert"}   # module -> distribution
    Options: ClassVar[type[RunnerOptions]] = LiteRTOptions

    @staticmethod
    def no_layer_profiler() -> str:
        """Why `effbench layers` has no LiteRT profile (said instead of one; no other runtime's stands in)."""
        from importlib.metadata import PackageNotFoundError, version
        try:
            have = f"ai-edge-litert {version('ai-edge-litert')}"
        except PackageNotFoundError:
            have = "ai-edge-litert not installed"
        return ("LiteRT's Python interpreter exposes no per-op profiler "
                f"({have}: Interpreter has invoke() and no profiler to attach or read; per-op timing is the C++ "
                "benchmark_model's --enable_op_profiling, which the wheel does not ship)")

    def supports(self, variant) -> Support:
        kind = _kind(variant.precision)
        if kind is None:
            return Support.no(f"effbench builds {', '.join(_buildable())} for LiteRT from the FP32 module, "
                              f"not {variant.precision}")
        if kind == "reference" and variant.torch is None:
            return Support.no(variant.torch_reason or f"no torch module for the {variant.label} variant")
        _, _, method = variant.label.split("+")[0].partition("-")
        if method and not (kind == "pt2e" and method in ("static", "dynamic")):
            return Support.no(f"LiteRT has no {variant.precision}-{method} build here")
        return Support.yes()

    def load(self, variant, threads: int, options: dict[str, Any]) -> LiteRTSession:
        require_cpu(self, variant, options, "LiteRT's CPU interpreter (XNNPACK)")
        converter = find_converter()
        if converter is None:
            raise Unsupported(MISSING)
        artifact = torch_artifact(self, variant, options, "convert")
        ro: LiteRTOptions = options.get("runner_options") or LiteRTOptions()
        plan = _plan(variant, ro)
        from importlib.metadata import version
        info = {"runtime": "litert", "version": version("ai-edge-litert"), "device": "cpu", "threads": int(threads),
                "threads_how": "Interpreter(num_threads=N) (the Python API reads no thread count back)",
                "delegate": ("XNNPACK, applied by the interpreter's default op resolver" if ro.xnnpack else
                             "none: OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES (LiteRT's builtin kernels)"),
                "converter": converter, "plan": plan}
        calibration = _calibration(variant, plan, ro, options, artifact) if plan.get("calibrated") else None
        return LiteRTSession(artifact, plan, info, threads=int(threads), ro=ro, calibration=calibration,
                             cache=_cache_root(variant, artifact, options))


# ----------------------------------------------------------------------------------- what to build
def _kind(precision: str) -> str | None:
    """What LiteRT builds for a precision, from the registry's description of it (never its name)."""
    from effbench.variants import precision_spec
    spec = precision_spec(precision)
    if spec is None:
        return None
    if spec.reference:
        return "reference"
    if spec.matmul_dtype in ("float16", "bfloat16"):
        return "float"
    if spec.weight_bits == spec.activation_bits == 8 and spec.local_peak_from is None:   # not a per-layer plan
        return "pt2e"
    if spec.weight_bits == 4 and spec.matmul_dtype is None:
        return "weights-4bit"
    return None


def _buildable() -> list[str]:
    from effbench.variants import precision_names
    return [p for p in precision_names() if _kind(p) is not None]


def _plan(variant, ro: LiteRTOptions) -> dict[str, Any]:
    """What to build (JSON: it enters the cache key and the converter's request)."""
    from effbench.variants import precision_spec
    kind = _kind(variant.precision)
    _, _, method = variant.label.split("+")[0].partition("-")
    dtype = precision_spec(variant.precision).matmul_dtype
    if kind == "reference":
        return {"precision": variant.precision, "build": "float", "dtype": "float32"}
    if kind == "float":
        if dtype == "float16" and ro.fp16_scheme == "weights":
            return {"precision": variant.precision, "build": "recipe", "recipe": "fp16-weights"}
        return {"precision": variant.precision, "build": "float", "dtype": dtype}
    if kind == "pt2e":
        return {"precision": variant.precision, "build": "pt2e", "dynamic": method == "dynamic",
                "per_channel": ro.int8_per_channel, "calibrated": method != "dynamic",
                "static_by_name": method == "static", "samples": ro.calibration_samples}
    if _variant_option(variant, "symmetric") is False:
        raise Unsupported("litert-torch's int4 recipe quantizes symmetrically only; the variant asks symmetric: false")
    block = ro.int4_block_size or _variant_option(variant, "block_size") or 32
    return {"precision": variant.precision, "build": "recipe", "recipe": "int4-dynamic", "block_size": int(block)}


def _variant_option(variant, key: str):
    for side in ("torch", "onnx"):
        opts = (variant.build.get(side) or {}).get("options") or {}
        if key in opts:
            return opts[key]
    return None


def _calibration(variant, plan: dict[str, Any], ro: LiteRTOptions, options: dict[str, Any], artifact):
    given = options.get("calibration")
    if given:
        return {k: np.asarray(v) for k, v in given.items()}, "the model's calibration inputs (load option)"
    kept = variant.calibration_inputs()   # what the variant's build was calibrated on, kept beside it
    if kept:
        return kept
    if plan.get("static_by_name"):
        raise Unsupported(f"{variant.label} for LiteRT needs the model's calibration inputs (kept with the variant, "
                          "or the 'calibration' load option); none were given")
    return artifact.feeds(ro.calibration_samples, seed=1), "generated from the input spec (seeded random)"


# ----------------------------------------------------------------------------------- the converter venv
def find_converter() -> dict[str, Any] | None:
    """{"python", "litert_torch", "torch"} of the converter venv, or None when it is missing."""
    given = os.environ.get(CONVERTER_VAR)
    python = Path(given) if given else Path(__file__).resolve().parents[2] / CONVERTER_ENV / "bin" / "python"
    if not (python.is_file() and os.access(python, os.X_OK)):
        return None
    versions = _dist_versions(python.parent.parent, ("litert_torch", "torch"))
    if "litert_torch" not in versions:
        return None
    return {"python": str(python), **versions}


def _dist_versions(env: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Versions of distributions installed in a venv, from their dist-info folders (no interpreter started)."""
    out: dict[str, str] = {}
    for site in env.glob("lib/python*/site-packages"):
        for name in names:
            for info in site.glob(f"{name}-*.dist-info"):
                out[name] = info.name[len(name) + 1:-len(".dist-info")]
    return out


def _cache_root(variant, artifact, options: dict[str, Any]) -> Path:
    """Where builds are cached: the load option, else the effbench cache the variant (or the model) lives in."""
    if options.get("cache_dir"):
        return Path(options["cache_dir"]) / "litert"
    for path, folder in (((variant.calibration or {}).get("file"), "variants"), (variant.onnx_path, "variants"),
                         (artifact.onnx_path, "models")):
        if path and Path(path).parent.parent.name == folder:
            return Path(path).parent.parent.parent / "litert"
        if path and Path(path).parent.name == folder:
            return Path(path).parent.parent / "litert"
    import tempfile
    return Path(tempfile.gettempdir()) / "effbench-cache" / "litert"


def _first_line(e: BaseException | str) -> str:
    text = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (text[0] if text else type(e).__name__)[:400]


def export_main(request: str) -> int:
    """The export step (`LiteRTSession._export` runs it in a fresh process): the model's torch module, cast
    to the plan's dtype, `torch.export`-ed on the feeds and saved (`torch.export.save`) with the example
    inputs (`torch.save`) for the converter venv, which has the same torch version."""
    req = json.loads(Path(request).read_text())
    folder = Path(req["folder"])
    try:
        import copy
        import warnings

        import torch

        from effbench.models.sources import ModelArtifact, build_torch_module
        module = build_torch_module(ModelArtifact.from_json(req["artifact"]))
        dtype = getattr(torch, req["dtype"]) if req.get("dtype") not in (None, "float32") else None
        with np.load(folder / "feeds.npz") as z:
            tensors = [torch.from_numpy(np.ascontiguousarray(z[f"arr_{i}"])) for i in range(len(z.files))]
        if dtype is not None:
            module = copy.deepcopy(module).to(dtype)
            tensors = [t.to(dtype) if t.is_floating_point() else t for t in tensors]
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, tuple(tensors))
        torch.export.save(program, str(folder / "program.pt2"))
        torch.save(tensors, folder / "example.pt")
        out = {"ok": True, "torch": str(torch.__version__)}
    except Exception as e:  # the factory or torch.export: their own words
        out = {"ok": False, "error": f"{type(e).__name__}: {_first_line(e)}"}
    Path(req["result"]).write_text(json.dumps(out))
    return 0


# ----------------------------------------------------------------------------------- the session
class LiteRTSession:
    """One model's interpreters, one per input signature. `info` gains "built", "delegation", "compute",
    "io" and "build_s" when the first interpreter is made (the first `run` or `timed_call`)."""

    def __init__(self, artifact, plan: dict[str, Any], info: dict[str, Any], *, threads: int, ro: LiteRTOptions,
                 calibration, cache: Path) -> None:
        self.artifact, self.plan, self.info, self.threads = artifact, plan, info, threads
        self.ro, self.cache = ro, cache
        self.calibration, self.calibration_source = calibration if calibration else (None, None)
        self._interpreters: dict[tuple, Any] = {}
        self._weights: str | None = None

    def interpreter_for(self, feeds: dict[str, np.ndarray]):
        sig = tuple((k, tuple(v.shape), str(v.dtype)) for k, v in feeds.items())
        if sig not in self._interpreters:
            self._interpreters[sig] = self._open(sig, feeds)
        return self._interpreters[sig]

    def _key(self, sig: tuple | None) -> str:
        """The build's cache key; without `sig`, the key of the plan for every input shape (a refusal's)."""
        from importlib.metadata import version
        calib = None
        if self.calibration is not None:
            h = hashlib.sha256()
            for name in sorted(self.calibration):
                h.update(np.ascontiguousarray(self.calibration[name][:self.ro.calibration_samples]).tobytes())
            calib = h.hexdigest()[:16]
        a = self.artifact
        model = [a.onnx_sha256, a.torch_factory, list(a.torch_factory_args)] if a.onnx_sha256 else None
        if model is None and self._weights is None:   # no FP32 graph digest: the weights themselves (imports torch)
            self._weights = self._weights_sha256()
        return hashlib.sha256(json.dumps([model or self._weights, self.plan, sig, calib, version("torch"),
                                          self.info["converter"].get("litert_torch"),
                                          self.info["converter"].get("torch")], default=str).encode()).hexdigest()[:16]

    def _weights_sha256(self) -> str:
        from effbench.models.sources import build_torch_module
        h = hashlib.sha256(repr(self.artifact.torch_factory).encode())
        for name, t in build_torch_module(self.artifact).state_dict().items():
            h.update(name.encode())
            h.update(t.detach().contiguous().cpu().numpy().tobytes())
        return h.hexdigest()

    def _open(self, sig: tuple, feeds: dict[str, np.ndarray]):
        t0 = time.perf_counter()
        stem = f"{self.artifact.model_id}-{self.plan['precision']}"
        refused = self.cache / f"{stem}-{self._key(None)}.refused.json"
        if refused.is_file():   # the converter refused this plan for other shapes: not retried for each one
            raise Unsupported(f"{json.loads(refused.read_text())['unsupported']} (cached: {refused})")
        folder = self.cache / f"{stem}-{self._key(sig)}"
        tflite, meta = folder / "model.tflite", folder / "build.json"
        if meta.is_file() and (tflite.is_file() or "unsupported" in json.loads(meta.read_text())):
            built = json.loads(meta.read_text())
            if "unsupported" in built:
                raise Unsupported(f"{built['unsupported']} (cached: {meta})")
            built["cache"] = f"read from {tflite}"
        else:
            built = self._build(folder, feeds, refused)
        interp, details = self._interpreter(tflite)
        self.info.update({"built": {k: v for k, v in built.items() if k != "checked"},
                          "tflite_bytes": tflite.stat().st_size, "delegation": delegation_summary(interp),
                          **graph_types(tflite), "io": details["io"], "program_for": {k: list(s) for k, s, _ in sig},
                          "build_s": round(time.perf_counter() - t0, 3)})
        return interp, details

    def _interpreter(self, tflite: Path):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        resolver = OpResolverType.AUTO if self.ro.xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interp = Interpreter(model_path=str(tflite), num_threads=self.threads,
                                 experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
        except Exception as e:
            raise Unsupported(f"LiteRT's interpreter could not load the .tflite: {_first_line(e)}") from None
        ins, outs = signature_order(interp)
        io = {d["name"]: io_text(d) for d in ins + outs}
        return interp, {"inputs": ins, "outputs": outs, "io": io}

    def _build(self, folder: Path, feeds: dict[str, np.ndarray], refused: Path) -> dict[str, Any]:
        """Export here, convert in the converter venv, check against torch; cache the outcome."""
        folder.mkdir(parents=True, exist_ok=True)
        exported = self._export(folder, feeds)
        result = self._convert(folder, feeds)
        meta = folder / "build.json"
        if not result.get("ok"):
            reason = (f"litert-torch {result['versions'].get('litert-torch')} could not build {self.plan['precision']} "
                      f"({self.plan.get('recipe') or self.plan['build']}; {result['stage']}): {result['error']}")
            meta.write_text(json.dumps({"unsupported": reason}))
            shapes = ", ".join(f"{k}: {list(v.shape)}" for k, v in feeds.items())
            refused.write_text(json.dumps({"unsupported": f"{reason} [refused for {shapes}; not retried for "
                                                          "other shapes]"}))
            raise Unsupported(reason)
        built = {**result, "calibration_inputs": self.calibration_source} if self.calibration_source else dict(result)
        built.pop("ok", None)
        built["checked"] = True
        built.update(self._check(folder, feeds))
        meta.write_text(json.dumps(built, default=str))
        for name in ("program.pt2", "example.pt", "calibration.npz"):   # the hand-over, not the build
            (folder / name).unlink(missing_ok=True)
        built["cache"] = (f"built for this worker (torch.export {exported}, litert-torch in its venv), "
                          f"saved to {folder / 'model.tflite'}")
        return built

    def _export(self, folder: Path, feeds: dict[str, np.ndarray]) -> str:
        """`torch.export` in a process of its own (this venv's python), so that a measuring worker never
        imports torch and its memory figures are LiteRT's; in this process where torch is loaded already."""
        import subprocess
        import sys
        np.savez(folder / "feeds.npz", *feeds.values())   # positional (arr_0 ...): in the module's argument order
        if self.calibration is not None:
            np.savez(folder / "calibration.npz", *(np.asarray(self.calibration[k]) for k in feeds))
        req = {"artifact": self.artifact.to_json(), "dtype": self.plan.get("dtype"), "folder": str(folder),
               "result": str(folder / "export.json")}
        (folder / "export-request.json").write_text(json.dumps(req, default=str))
        (folder / "export.json").unlink(missing_ok=True)
        if "torch" in sys.modules and not EXPORT_IN_A_PROCESS:
            export_main(str(folder / "export-request.json"))
            self._exported(folder)
            return "in this process (torch was loaded already)"
        code = "import sys; from effbench.runners.litert import export_main; sys.exit(export_main(sys.argv[1]))"
        try:
            with open(folder / "export.log", "w") as log:
                subprocess.run([sys.executable, "-c", code, str(folder / "export-request.json")], stdout=log,
                               stderr=subprocess.STDOUT, check=False, timeout=self.ro.convert_timeout_s)
        except subprocess.TimeoutExpired:
            raise Unsupported(f"torch.export ran past {self.ro.convert_timeout_s} s (convert_timeout_s)") from None
        self._exported(folder)
        return "in a process of its own"

    @staticmethod
    def _exported(folder: Path) -> None:
        result = json.loads((folder / "export.json").read_text()) if (folder / "export.json").is_file() else \
            {"ok": False, "error": f"the export process left no result (log: {folder / 'export.log'})"}
        if not result["ok"]:
            raise Unsupported(f"torch.export could not export the module for LiteRT: {result['error']}")

    def _convert(self, folder: Path, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        import subprocess
        plan = dict(self.plan)
        if plan["build"] == "pt2e":   # calibration calls in batches of the static program's batch size
            plan["batch"] = next((int(v.shape[0]) for v in feeds.values() if v.ndim), 1)
        req = {"program": str(folder / "program.pt2"), "example": str(folder / "example.pt"),
               "calibration": str(folder / "calibration.npz") if self.calibration is not None else None,
               "input_names": list(feeds), "plan": plan, "tflite": str(folder / "model.tflite"),
               "reference": str(folder / "reference.npz"), "result": str(folder / "result.json")}
        (folder / "request.json").write_text(json.dumps(req))
        (folder / "result.json").unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update({"JAX_PLATFORMS": "cpu", "PYTHONNOUSERSITE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
        log = folder / "converter.log"
        try:
            with open(log, "w") as out:
                cmd = [self.info["converter"]["python"], "-P", str(SCRIPT), str(folder / "request.json")]
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder, check=False,
                                      timeout=self.ro.convert_timeout_s)
        except subprocess.TimeoutExpired:
            raise Unsupported(f"litert-torch's conversion ran past {self.ro.convert_timeout_s} s "
                              f"(convert_timeout_s; its log: {log})") from None
        if not (folder / "result.json").is_file():
            tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:] or ["no output"]
            raise Unsupported(f"litert-torch's converter exited {proc.returncode} without a result: "
                              f"{tail[0][:300]} (log: {log})")
        return json.loads((folder / "result.json").read_text())

    def _check(self, folder: Path, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        """The .tflite's outputs on the example inputs against torch's; a build that computes something else
        is unsupported, with its error. Against the same model in torch (FP32, a cast module, PT2E's
        quantized one) the error must stay under MISMATCH_REL of the outputs' magnitude; a recipe that
        quantizes the converted graph has only FP32 to compare with, so there each sample's output must point
        the same way as FP32's (cosine >= MIN_COSINE_VS_FP32): quantization noise, not another function."""
        interp, details = self._interpreter(folder / "model.tflite")
        got = invoke(interp, details, feeds)
        with np.load(folder / "reference.npz") as z:
            want = [z[f"reference_{i}"] for i in range(len(got))]
            fp32 = [z[f"fp32_{i}"] for i in range(len(got))]
        scale = max(float(np.abs(w).max()) for w in want) or 1.0
        err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
        cosine = min(min_cosine(g, w) for g, w in zip(got, fp32))
        out = {"max_abs_err_vs_torch": err, "max_rel_err_vs_torch": err / scale,
               "max_abs_err_vs_fp32": max(float(np.abs(g - w).max()) for g, w in zip(got, fp32)),
               "min_cosine_vs_fp32": cosine}
        if self.plan["build"] == "recipe":
            ok, why = cosine >= MIN_COSINE_VS_FP32, f"its outputs' cosine with FP32's falls to {cosine:.3g}"
        else:
            ok = err / scale <= MISMATCH_REL
            why = f"its output differs from torch's by {err:.3g} (max abs; outputs reach {scale:.3g})"
        if not ok:   # `not ok` also catches NaN
            reason = f"LiteRT's {self.plan['precision']} build runs but {why}"
            (folder / "build.json").write_text(json.dumps({"unsupported": reason}))
            (folder / "model.tflite").unlink(missing_ok=True)
            raise Unsupported(reason)
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        interp, details = self.interpreter_for(feeds)
        try:
            return invoke(interp, details, feeds)
        except Exception as e:
            raise Unsupported(f"LiteRT failed to run the model: {_first_line(e)}") from None

    def timed_call(self, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
        interp, details = self.interpreter_for(feeds)
        try:
            set_inputs(interp, details, feeds)   # bound once: invoke() reads the same input tensors each call
            interp.invoke()
        except Exception as e:
            raise Unsupported(f"LiteRT failed to run the model: {_first_line(e)}") from None
        return interp.invoke
