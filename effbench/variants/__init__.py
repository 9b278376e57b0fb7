"""Precision variants: what a precision label becomes for each runtime, built and cached.

One module per family (`floating`, `integer`, `binary`) registers a builder per precision in
`BUILDERS`. A builder returns a `Variant` whose ONNX side and torch side are each either present or
absent with the reason; the runners turn an absent side into an `unsupported` record.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from effbench.models.sources import ModelArtifact


@dataclass(frozen=True)
class Variant:
    model_id: str
    label: str                      # as in the suite: "int8-static"
    precision: str                  # fp32 | fp16 | bf16 | int8 | int4 | binary
    method: str | None              # what was really done: "dynamic", "static-qdq", "weight-only-blockwise" ...
    onnx_path: str | None = None    # graph for ONNX Runtime, or None ...
    onnx_reason: str | None = None  # ... with the reason
    torch: dict[str, Any] | None = None  # how the torch runner builds it in its worker, or None ...
    torch_reason: str | None = None      # ... with the reason
    build: dict[str, Any] = field(default_factory=dict)   # tool, version, options (per side)
    stats: dict[str, Any] = field(default_factory=dict)   # size_bytes, weight_bits, compression_vs_fp32, params
    emulated: bool = False          # no native kernel: runs dequantized; timings are not speedups
    binary_nodes: tuple[str, ...] = ()  # ONNX nodes whose weights are 1-bit (for BOPs)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Variant:
        d = dict(d)
        d["binary_nodes"] = tuple(d.get("binary_nodes") or ())
        return cls(**d)

    def record_section(self, runner: str) -> dict[str, Any]:
        """The record's `variant` section, for the side this runner uses."""
        side = "onnx" if runner == "onnxruntime" else "torch"
        return {"label": self.label, "precision": self.precision, "method": self.method,
                "build": self.build.get(side, self.build), **self.stats.get(side, self.stats.get("onnx", {})),
                "emulated": self.emulated}


Builder = Callable[..., Variant]
BUILDERS: dict[str, Builder] = {}


def builder(precision: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        BUILDERS[precision] = fn
        return fn
    return deco


def _load_builders() -> None:
    from effbench.variants import floating  # noqa: F401
    try:
        from effbench.variants import integer  # noqa: F401
    except ImportError:
        pass
    try:
        from effbench.variants import binary  # noqa: F401
    except ImportError:
        pass


def cache_key(artifact: ModelArtifact, label: str, options: dict[str, Any]) -> str:
    payload = json.dumps([artifact.onnx_sha256, artifact.torch_factory, artifact.torch_factory_args, label, options,
                          VARIANTS_VERSION], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


VARIANTS_VERSION = 1


def build_variant(artifact: ModelArtifact, label: str, precision: str, method: str | None,
                  options: dict[str, Any], cache_dir: Path, calibration=None) -> Variant:
    """Build (or load from cache) the variant; runs in a worker (quantizers can crash)."""
    _load_builders()
    key = cache_key(artifact, label, options)
    folder = Path(cache_dir) / "variants" / f"{artifact.model_id}-{label}-{key}"
    meta = folder / "variant.json"
    if meta.is_file():
        return Variant.from_json(json.loads(meta.read_text()))
    fn = BUILDERS.get(precision)
    if fn is None:
        variant = Variant(model_id=artifact.model_id, label=label, precision=precision, method=method,
                          onnx_reason=f"building {precision} variants is not implemented yet",
                          torch_reason=f"building {precision} variants is not implemented yet")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        variant = fn(artifact, label=label, method=method, options=options, folder=folder, calibration=calibration)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = meta.with_suffix(".tmp")
    tmp.write_text(json.dumps(variant.to_json()))
    tmp.replace(meta)
    return variant
