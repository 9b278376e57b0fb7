"""torch: eager execution under one `torch.inference_mode()` (entered once: 3.3 us per entry here),
optionally `torch.compile`d; loads each variant's saved weights into a skeleton of the module.
`device: cuda` moves module and inputs to the GPU once; the timed call then waits for the GPU
(`torch.cuda.synchronize`) before the clock stops.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np

from effbench.runners.base import RunnerOptions, Support, Unsupported, register


class TorchOptions(RunnerOptions):
    """`options:` of the torch runner. `compile: true` here is the runner's own `compile:` switch."""

    # NHWC weights and 4-D inputs: the layout oneDNN's convolutions prefer on CPUs
    channels_last: bool = False
    # torch.compile's mode, when the runner compiles (`compile: true`)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"


@register
class TorchRunner:
    name: ClassVar[str] = "torch"
    artifact: ClassVar[str] = "torch"
    runtime_module: ClassVar[str] = "torch"
    excludes: ClassVar[tuple[str, ...]] = ()
    packages: ClassVar[tuple[str, ...]] = ("torch", "torchao")
    Options: ClassVar[type[RunnerOptions]] = TorchOptions
    layer_profiler: ClassVar[str] = "torch.profiler"   # what `effbench layers` names its profile by

    @staticmethod
    def profile_kernels(variant, threads: int, feeds: dict[str, Any], runs: int,
                        artifact: dict[str, Any] | None = None) -> tuple[list[dict], list[dict]]:
        """torch's profiler over `runs` calls of the variant's module, leaf module by leaf module
        (`runners.torch_layers`): trace events and per-module rows with their MACs, for `measure.layers`."""
        from effbench.runners.torch_layers import profile_modules
        session = TorchRunner().load(variant, threads, {"artifact": artifact})
        return profile_modules(session.module, tuple(session._tensors(feeds)), runs)

    def supports(self, variant) -> Support:
        if variant.torch is None:
            return Support.no(variant.torch_reason or f"no torch build of the {variant.label} variant")
        return Support.yes()

    def load(self, variant, threads: int, options: dict[str, Any]) -> TorchSession:
        import torch

        from effbench.models.sources import ModelArtifact
        torch.set_num_threads(threads)
        # a pruned variant carries the pruned model's artifact (its factory rebuilds the pruned module)
        artifact = ModelArtifact.from_json(variant.torch.get("artifact") or options["artifact"])
        module, how = apply_transform(artifact, variant)
        info = {"runtime": "torch", "version": str(torch.__version__), "threads": torch.get_num_threads(),
                "mode": "eager", "inference_mode": True, "built": how}
        device = options.get("device", "cpu")
        if device == "cuda":
            module = _to_cuda(torch, module, variant)
            info.update({"device": "cuda", "gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda})
        elif device != "cpu":
            raise Unsupported(f"torch runs on cpu or cuda here, not '{device}'")
        if variant.torch.get("semi_structured") is not None:
            info["semi_structured"] = _semi_structured(module, variant, device)
        ro: TorchOptions = options.get("runner_options") or TorchOptions()
        if ro.channels_last:
            module = module.to(memory_format=torch.channels_last)
            info["memory_format"] = "channels_last (4-D weights and inputs)"
        if options.get("compile"):
            # Measured here: torch.compile (inductor) of the zoo MLP took ~40 s cold, ~2 s per new batch
            # shape; it works, so it is offered; the compile lands in first_call_ms, never in the samples.
            try:
                module = torch.compile(module, mode=None if ro.compile_mode == "default" else ro.compile_mode)
            except Exception as e:
                raise Unsupported(f"torch.compile failed: {type(e).__name__}: {_first_line(e)}") from None
            info["mode"] = f"compiled (inductor, mode {ro.compile_mode})"
        return TorchSession(module, info, input_dtype=variant.torch.get("input_dtype"), device=device,
                            channels_last=ro.channels_last)


def _to_cuda(torch, module, variant):
    if not torch.cuda.is_available():
        raise Unsupported(f"torch {torch.__version__} sees no CUDA GPU (its CUDA build: "
                          f"{torch.version.cuda or 'none, a CPU-only build'})")
    for m in module.modules():
        if type(m).__module__.startswith("torch.ao.nn.quantized"):
            raise Unsupported(f"the {variant.label} variant uses torch's quantized modules ({type(m).__module__}), "
                              "whose kernels are CPU-only (fbgemm/qnnpack)")
        if getattr(m, "cpu_only", None):
            raise Unsupported(f"the {variant.label} variant runs on {m.cpu_only}, which is CPU-only")
    try:
        return module.to("cuda")
    except Exception as e:
        raise Unsupported(f"torch could not move the {variant.label} module to the GPU: "
                          f"{type(e).__name__}: {_first_line(e)}") from None


def _semi_structured(module, variant, device: str) -> dict[str, Any]:
    """2:4 pruned Linear weights as torch's semi-structured sparse tensors: CUDA kernels only."""
    if device != "cuda":
        raise Unsupported(variant.torch.get("cpu_reason") or "torch runs 2:4 semi-structured sparsity on CUDA only")
    from effbench.variants.pruned import semi_structured
    done, dense = semi_structured(module, variant.torch["semi_structured"])
    if not done:
        raise Unsupported("torch's semi-structured kernels took none of the 2:4 layers: "
                          + "; ".join(f"{k}: {v}" for k, v in list(dense.items())[:3]))
    return {"layers": len(done), "left_dense": dense}


def _first_line(e: BaseException) -> str:
    from effbench.errors import short_paths
    text = str(e).strip().splitlines()
    return short_paths(text[0] if text else type(e).__name__)[:300]  # no machine's folders in a reason


def _skeleton(artifact):
    """The module's structure without its FP32 weights (meta device) when the factory allows it, so that
    peak memory reflects the variant's own saved weights (docs/runtime-notes.md: variants built from FP32
    in-process look bigger than FP32)."""
    import warnings

    import torch

    from effbench.errors import UserError
    from effbench.models.sources import build_torch_module
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "copying from a non-meta parameter ... is a no-op": intended
            module = build_torch_module(artifact)
        return module, "skeleton on the meta device + saved weights"
    except (UserError, Exception) as e:  # a factory that needs real tensors (trains, reads files ...)
        return build_torch_module(artifact), f"FP32 module + saved weights (meta build failed: {_first_line(e)})"


def _swap(module, names: dict[str, str], make) -> None:
    for name, kind in names.items():
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, make(getattr(parent, child), kind))


def _layer(old, kind: str):
    from effbench.variants import torch_layer
    try:
        return torch_layer(old, kind)
    except KeyError:
        raise Unsupported(f"unknown layer kind '{kind}' in the saved variant") from None


def apply_transform(artifact, variant):
    """(module, how) for the variant's torch side: the FP32 module, or saved weights in a skeleton."""
    import torch

    from effbench.models.sources import build_torch_module
    from effbench.variants import FACTORY, torch_state_loader
    spec = variant.torch
    t = spec.get("transform")
    if t == FACTORY:
        return build_torch_module(artifact), "FP32 module from the factory"
    loader = torch_state_loader(t)
    if loader is None:
        raise Unsupported(f"torch transform '{t}' is not implemented")
    module, how = _skeleton(artifact)
    saved = loader(spec["artifact_path"])
    meta = saved.get("meta", {})
    if meta.get("dtype"):
        module = module.to(getattr(torch, meta["dtype"]))
    if meta.get("swapped"):
        _swap(module, meta["swapped"], _layer)
    if any(p.is_meta for p in list(module.parameters()) + list(module.buffers())):
        module = module.to_empty(device="cpu")
    module.load_state_dict(saved["state"], strict=True)
    for name, value in saved.get("extra_buffers", {}).items():
        owner, _, leaf = name.rpartition(".")
        (module.get_submodule(owner) if owner else module)._buffers[leaf] = value
    return module.eval(), how


class TorchSession:
    def __init__(self, module, info: dict[str, Any], input_dtype: str | None = None, device: str = "cpu",
                 channels_last: bool = False) -> None:
        import torch
        self.module, self.info, self.torch, self.device = module, info, torch, device
        self.channels_last = channels_last
        self.input_dtype = getattr(torch, input_dtype) if input_dtype else None

    def memory_figures(self) -> dict[str, int]:
        """torch's own device-memory peak (its caching allocator) where this session runs on the GPU."""
        if self.device != "cuda":
            return {}
        peak = int(self.torch.cuda.max_memory_allocated())
        return {"torch_cuda_max_allocated_bytes": peak} if peak > 0 else {}

    def reset_peak_memory(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.reset_peak_memory_stats()

    def _tensors(self, feeds: dict[str, np.ndarray]):
        ts = [self.torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()]
        if self.input_dtype is not None:
            ts = [t.to(self.input_dtype) if t.is_floating_point() else t for t in ts]
        if self.channels_last:
            ts = [t.contiguous(memory_format=self.torch.channels_last) if t.dim() == 4 else t for t in ts]
        if self.device != "cpu":
            ts = [t.to(self.device) for t in ts]
        return ts

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self.torch.inference_mode():
            out = self.module(*self._tensors(feeds))
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [(o.float() if o.is_floating_point() else o).cpu().numpy() for o in outs]

    def timed_call(self, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
        torch = self.torch
        args = self._tensors(feeds)
        module = self.module
        guard = torch.inference_mode()
        guard.__enter__()  # entered once for the worker's life: the timed call is the module alone
        sync = torch.cuda.synchronize if self.device == "cuda" else None
        t0 = time.perf_counter()
        try:
            module(*args)
            if sync:
                sync()  # a kernel's error surfaces here, not at the launch
        except Exception as e:
            raise Unsupported(f"torch failed to run the {self.info.get('mode')} module: {type(e).__name__}: "
                              f"{_first_line(e)}") from None
        if self.info.get("mode", "").startswith("compiled"):
            self.info["compile_s"] = round(time.perf_counter() - t0, 3)
        if sync:
            def call() -> object:
                out = module(*args)
                sync()  # the GPU's work is done before the clock stops
                return out
            return call
        return lambda: module(*args)
