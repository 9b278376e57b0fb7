"""Precision variants: what a precision label becomes for each runtime, built and cached.

One module per family (`floating`, `integer`, `binary`) registers a builder per precision in
`BUILDERS`. A builder returns a `Variant` whose ONNX side and torch side are each either present or
absent with the reason; the runners turn an absent side into an `unsupported` record.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from effbench.models.sources import ModelArtifact
from effbench.variants.specs import (  # noqa: F401
    PRECISIONS,
    PrecisionSpec,
    bits,
    check_prune,
    label_order,
    precision_labels,
    precision_names,
    precision_spec,
    prune_suffix,
    reference_precision,
    register_precision,
)


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
    node_bits: dict[str, int] = field(default_factory=dict)  # ONNX nodes whose weights are stored at fewer bits
    #                                                       than the emulating graph shows (ternary: 2)
    base_graph: str | None = None   # the FP32 graph this variant was built from when it is not the model's own
    #                                 (a pruned graph): the torch side's work is counted on it
    # the calibration inputs it was built with, kept beside it in the cache ({"file": .npz, "samples",
    # "source"}) for runners that quantize at load time (OpenVINO's NNCF, ExecuTorch's PT2E): the same
    # calibration split as ONNX Runtime's int8, never the evaluation part that quality is scored on
    calibration: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Variant:
        d = dict(d)
        d["binary_nodes"] = tuple(d.get("binary_nodes") or ())
        return cls(**d)

    def calibration_inputs(self) -> tuple[dict[str, Any], str] | None:
        """({input name: array, samples along axis 0}, where they came from), or None when the variant kept none."""
        if not self.calibration or not Path(self.calibration["file"]).is_file():
            return None
        import numpy as np
        with np.load(self.calibration["file"]) as z:
            return {k: z[k] for k in z.files}, self.calibration["source"]

    # A runner runs one side of a variant: "onnx" (the graph) or "torch" (the module), as the runner
    # registers it (`artifact`; `effbench.runners.runner_side(name)`).
    def side_stats(self, side: str) -> dict[str, Any]:
        """The size/bits figures of one side."""
        return self.stats.get(side) or {}

    def own_graph(self, side: str) -> str | None:
        """The variant's own ONNX graph for a runner of graphs; None for a runner of modules (its work is
        then counted on the FP32 graph at the variant's bit widths)."""
        return self.onnx_path if side == "onnx" else None

    def model_bytes(self, side: str) -> int | None:
        """Bytes of the model as it would ship: for emulated (binary) variants the bit-packed file, not
        the dequantized graph the runtime happens to execute."""
        import os
        if self.emulated and self.side_stats(side).get("size_bytes"):
            return self.side_stats(side)["size_bytes"]
        path = self.onnx_path if side == "onnx" else (self.torch or {}).get("artifact_path")
        if path and os.path.isfile(path):
            return os.path.getsize(path)
        return self.side_stats(side).get("size_bytes")

    def record_section(self, side: str):
        """The record's `variant` section (`effbench.results.record.VariantInfo`) for one side."""
        from effbench.results.record import VariantInfo
        method = (self.build.get(side) or {}).get("method", self.method)
        return VariantInfo.from_json({"label": self.label, "precision": self.precision, "method": method,
                                      "build": self.build.get(side, self.build),
                                      **self.stats.get(side, self.stats.get("onnx", {})), "emulated": self.emulated})


@functools.cache
def _options_model(precision: str) -> type[BaseModel]:
    """A precision's options as a strict pydantic model, from its registry entry (`PrecisionSpec.options`:
    name -> (type, default)); its `check` runs on the filled-in values."""
    fields = {k: (typ, list(d) if isinstance(d, list) else d) for k, (typ, d) in precision_spec(precision).options.items()}
    return create_model(f"{precision}_options", __config__=ConfigDict(extra="forbid", strict=True), **fields)


def validate_options(precision: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The options with defaults filled in; ValueError (one line) for an unknown key or a bad value.
    Pure Python (the precision registry): suite.py validates at load time without importing a runtime."""
    from effbench.errors import did_you_mean
    spec = precision_spec(precision)
    if spec is None:
        names = precision_names()
        raise ValueError(f"unknown precision '{precision}'{did_you_mean(precision, names)}; "
                         f"expected one of {', '.join(names)}")
    known = spec.options
    given = {k: v for k, v in (options or {}).items() if k not in ("method", "prune")}
    out: dict[str, Any] = {}
    if (options or {}).get("prune") is not None:
        out["prune"] = check_prune(precision, options["prune"])  # a transform any prunable precision takes
    try:
        out.update(_options_model(precision).model_validate(given).model_dump(exclude_unset=True))
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        if err["type"] == "extra_forbidden":
            names = [*known, "prune"] if spec.prunable else list(known)
            expected = ", ".join(names) if names else "none (it takes no options)"
            raise ValueError(f"unknown option '{key}' for {precision}{did_you_mean(key, names)}; "
                             f"expected one of {expected}") from None
        raise ValueError(f"option '{key}' for {precision} must be a {known[key][0].__name__}, "
                         f"got {err.get('input')!r}") from None
    filled = {k: (list(d) if isinstance(d, list) else d) for k, (_, d) in known.items()} | out
    if spec.check is not None:
        spec.check({k: v for k, v in filled.items() if k != "prune"})
    return filled


# How the torch runner rebuilds a saved variant: the variant's `torch["transform"]` names a state
# loader (FACTORY: the FP32 module straight from the model's factory), and the layers it swapped in are
# saved by kind ("int8-dynamic", "int4:32": the part before ":" picks the factory). Families register theirs.
FACTORY = "factory"
TORCH_STATE_LOADERS: dict[str, Callable[[str], dict[str, Any]]] = {}
TORCH_LAYERS: dict[str, Callable[[Any, str], Any]] = {}


def _torch_load(path: str) -> dict[str, Any]:
    import warnings

    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors' TypedStorage deprecation notice
        return torch.load(path, weights_only=True, map_location="cpu")


TORCH_STATE_LOADERS["load"] = _torch_load


def torch_state_loader(transform: str) -> Callable[[str], dict[str, Any]] | None:
    _load_builders()
    return TORCH_STATE_LOADERS.get(transform)


def torch_layer(old: Any, kind: str) -> Any:
    """The empty layer a saved variant swapped in for `old`; KeyError for a kind nobody registered."""
    _load_builders()
    return TORCH_LAYERS[kind.split(":", 1)[0]](old, kind)


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
        from effbench.variants import mixed  # noqa: F401
    except ImportError:
        pass
    try:
        from effbench.variants import binary, ternary  # noqa: F401
    except ImportError:
        pass


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


# ------------------------------------------------------------------------------------ stats
def _onnx_weights(path: str) -> tuple[int, int]:
    """(bytes, elements) of a graph's initializers and Constant tensors, as stored."""
    import numpy as np
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    tensors = list(m.graph.initializer) + [a.t for n in m.graph.node if n.op_type == "Constant"
                                           for a in n.attribute if a.name == "value"]
    nbytes = elems = 0
    for t in tensors:
        n = int(np.prod(t.dims)) if t.dims else 1
        elems += n
        nbytes += numpy_helper.to_array(t).nbytes
    return nbytes, elems


def onnx_stats(path: str, fp32_path: str) -> dict[str, Any]:
    """On-disk bytes, weight bytes, FP32 parameter count, bits per parameter and compression vs FP32.

    `params` is the FP32 graph's count: a packed int4 tensor holds two parameters per stored byte,
    so counting the variant's own elements would understate them.
    """
    import os
    wbytes, _ = _onnx_weights(path)
    fp32_wbytes, params = _onnx_weights(fp32_path) if fp32_path != path else (wbytes, _onnx_weights(path)[1])
    size = os.path.getsize(path)
    return {"size_bytes": size, "weight_bytes": wbytes, "params": params,
            "weight_bits": round(8 * wbytes / params, 3) if params else None,
            "compression_vs_fp32": round(os.path.getsize(fp32_path) / size, 3)}


_TORCH_CACHE: dict[str, Any] = {}


def torch_module(artifact: ModelArtifact):
    """A fresh copy of the FP32 module (the factory runs once per process)."""
    import copy
    key = json.dumps([artifact.torch_factory, artifact.torch_factory_args], default=str)
    if key not in _TORCH_CACHE:
        from effbench.models.sources import build_torch_module
        _TORCH_CACHE[key] = build_torch_module(artifact)
    return copy.deepcopy(_TORCH_CACHE[key])


def _state_bytes(sd: dict) -> int:
    total = 0
    for v in sd.values():
        items = v if isinstance(v, (tuple, list)) else [v]
        for t in items:
            if hasattr(t, "element_size"):
                total += t.numel() * t.element_size()
    return int(total)


def save_torch_state(module, path: Path, meta: dict[str, Any]) -> Path:
    """Save weights only (state_dict + non-persistent buffers): the runner loads them with
    torch.load(weights_only=True) into a skeleton, never unpickling arbitrary objects."""
    import torch
    sd = module.state_dict()
    extra = {n: b for n, b in module.named_buffers() if n not in sd}
    tmp = Path(path).with_suffix(".tmp")
    torch.save({"format": "effbench.torch-state/1", "state": sd, "extra_buffers": extra, "meta": meta}, tmp)
    tmp.replace(path)
    return Path(path)


def torch_stats(path: Path | str | None, module, fp32_module=None) -> dict[str, Any]:
    import os
    fp32 = fp32_module if fp32_module is not None else module
    params = sum(p.numel() for p in fp32.parameters())
    fp32_bytes = _state_bytes(fp32.state_dict())
    wbytes = _state_bytes(module.state_dict())
    size = os.path.getsize(path) if path else fp32_bytes
    return {"size_bytes": int(size), "weight_bytes": wbytes, "params": int(params),
            "weight_bits": round(8 * wbytes / params, 3) if params else None,
            "compression_vs_fp32": round(fp32_bytes / size, 3) if path else 1.0}


class GeneratedCalibration(dict):
    """Calibration inputs generated from the model's input spec (seeded), for a model without a dataset:
    enough to set static int8's activation ranges for a latency study; the variant records it."""


def cache_key(artifact: ModelArtifact, label: str, options: dict[str, Any], calibration=None) -> str:
    """The variant's identity in the cache: the model, the label and options, and the calibration data itself
    (another split or seed is another variant)."""
    extra = ["generated-calibration"] if isinstance(calibration, GeneratedCalibration) else []
    if calibration:
        import numpy as np
        h = hashlib.sha256()
        for k in sorted(calibration):
            a = np.ascontiguousarray(calibration[k])
            h.update(f"{k}:{a.dtype}:{a.shape}".encode())
            h.update(a.tobytes())
        extra.append(h.hexdigest()[:16])
    payload = json.dumps([artifact.onnx_sha256, artifact.torch_factory, artifact.torch_factory_args, label, options,
                          VARIANTS_VERSION, *extra], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


VARIANTS_VERSION = 5  # bump when a builder changes what it writes: old caches are then ignored


def build_variant(artifact: ModelArtifact, label: str, precision: str, method: str | None,
                  options: dict[str, Any], cache_dir: Path, calibration=None) -> Variant:
    """Build (or load from cache) the variant; runs in a worker (quantizers can crash)."""
    _load_builders()
    key = cache_key(artifact, label, options, calibration)
    folder = Path(cache_dir) / "variants" / f"{artifact.model_id}-{label}-{key}"
    meta = folder / "variant.json"
    if meta.is_file():
        variant = Variant.from_json(json.loads(meta.read_text()))
        # A variant whose graph is the source graph itself (fp32 of an onnx: model) holds the path the
        # source had when it was cached. The key is the source's content, so the same content may now
        # live elsewhere and the old path be gone: point at where it is now.
        cached = Path(variant.onnx_path) if variant.onnx_path else None
        if cached is not None and not cached.resolve().is_relative_to(folder.resolve()) \
                and variant.onnx_path != artifact.onnx_path:
            variant = dataclasses.replace(variant, onnx_path=artifact.onnx_path)
        return variant
    fn = BUILDERS.get(precision)
    if fn is None:
        variant = Variant(model_id=artifact.model_id, label=label, precision=precision, method=method,
                          onnx_reason=f"building {precision} variants is not implemented yet",
                          torch_reason=f"building {precision} variants is not implemented yet")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            opts = validate_options(precision, options)
        except ValueError as e:
            from effbench.errors import UserError
            raise UserError(str(e), field="precisions", fix="see the options each precision takes") from None
        prune = opts.pop("prune", None)
        if prune:  # pruning runs on the FP32 model first; the precision builds from the pruned model
            from effbench.variants.prune import build_pruned
            variant = build_pruned(fn, artifact, label=label, precision=precision, method=method, options=opts,
                                   prune=prune, folder=folder, calibration=calibration)
        else:
            variant = fn(artifact, label=label, method=method, options=opts, folder=folder, calibration=calibration)
    folder.mkdir(parents=True, exist_ok=True)
    if calibration:
        variant = dataclasses.replace(variant, calibration=_keep_calibration(folder, calibration))
    tmp = meta.with_suffix(".tmp")
    tmp.write_text(json.dumps(variant.to_json()))
    tmp.replace(meta)
    return variant


def _keep_calibration(folder: Path, calibration) -> dict[str, Any]:
    """Write the calibration inputs beside the variant (runners that quantize at load read them there)."""
    import numpy as np
    path = folder / "calibration.npz"
    tmp = folder / "calibration.tmp.npz"
    np.savez(tmp, **{k: np.asarray(v) for k, v in calibration.items()})
    tmp.replace(path)
    generated = isinstance(calibration, GeneratedCalibration)
    return {"file": str(path), "samples": int(min(len(np.asarray(v)) for v in calibration.values())),
            "source": "generated from the input spec (seeded; the model has no dataset)" if generated
            else "the model's calibration split (disjoint from the evaluation part)"}
