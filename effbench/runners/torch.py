"""torch: eager execution under one `torch.inference_mode()` (entered once: 3.3 us per entry here)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from effbench.runners import Support, Unsupported, register


@register
class TorchRunner:
    name: ClassVar[str] = "torch"

    def supports(self, variant) -> Support:
        if variant.torch is None:
            return Support.no(variant.torch_reason or f"no torch build of the {variant.label} variant")
        return Support.yes()

    def load(self, variant, threads: int, options: dict[str, Any]) -> TorchSession:
        import torch
        from effbench.models.sources import ModelArtifact, build_torch_module
        torch.set_num_threads(threads)
        artifact = ModelArtifact.from_json(options["artifact"])
        module = build_torch_module(artifact)
        module = apply_transform(module, variant)
        if options.get("compile"):
            raise Unsupported("torch.compile is not wired up yet")
        info = {"runtime": "torch", "version": torch.__version__, "threads": torch.get_num_threads(),
                "mode": "eager", "inference_mode": True}
        return TorchSession(module, info, input_dtype=variant.torch.get("input_dtype"))


def apply_transform(module, variant):
    t = variant.torch.get("transform")
    if t == "fp32":
        return module
    raise Unsupported(f"torch transform '{t}' is not implemented")


class TorchSession:
    def __init__(self, module, info: dict[str, Any], input_dtype: str | None = None) -> None:
        import torch
        self.module, self.info, self.torch = module, info, torch
        self.input_dtype = getattr(torch, input_dtype) if input_dtype else None

    def _tensors(self, feeds: dict[str, np.ndarray]):
        ts = [self.torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()]
        if self.input_dtype is not None:
            ts = [t.to(self.input_dtype) if t.is_floating_point() else t for t in ts]
        return ts

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self.torch.inference_mode():
            out = self.module(*self._tensors(feeds))
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.float().numpy() if o.is_floating_point() else o.numpy() for o in outs]

    def timed_call(self, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
        torch = self.torch
        args = self._tensors(feeds)
        module = self.module
        guard = torch.inference_mode()
        guard.__enter__()  # entered once for the worker's life: the timed call is the module alone
        try:
            module(*args)
        except Exception as e:
            raise Unsupported(f"torch failed to run the {self.info.get('mode')} module: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
        return lambda: module(*args)
