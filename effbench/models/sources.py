"""Model sources: an `onnx:` file, a `torch:` factory, or a `builtin:` zoo model, resolved to an
ONNX file (exported and cached for torch sources) plus what is needed to rebuild the torch module.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import logging
import os
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effbench.errors import UserError

ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 9: "bool", 2: "uint8", 3: "int8", 16: "bfloat16", 11: "float64"}


@dataclass(frozen=True)
class InputDesc:
    name: str
    shape: list            # ints and symbols ("batch", or names bound by dims)
    dtype: str
    range: tuple[float, float] | None = None

    def concrete(self, batch_size: int, dims: dict[str, int]) -> tuple[int, ...]:
        return tuple(batch_size if d == "batch" else dims[d] if isinstance(d, str) else int(d) for d in self.shape)


@dataclass(frozen=True)
class ModelArtifact:
    """A model ready to build variants from: its FP32 ONNX graph and, for torch sources, its factory."""

    model_id: str
    source_kind: str                 # onnx | torch | builtin
    onnx_path: str
    onnx_sha256: str
    inputs: tuple[InputDesc, ...]
    output_names: tuple[str, ...]
    dims: dict[str, int] = field(default_factory=dict)
    task: str | None = None
    torch_factory: str | None = None  # "module:function" (builtins: effbench.models.sources:builtin_module)
    torch_factory_args: tuple = ()
    sys_path: str | None = None       # where a user's factory module is importable from
    export: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> ModelArtifact:
        d = dict(d)
        d["inputs"] = tuple(InputDesc(**{**i, "range": tuple(i["range"]) if i.get("range") else None}) for i in d["inputs"])
        d["output_names"] = tuple(d["output_names"])
        d["torch_factory_args"] = tuple(d.get("torch_factory_args") or ())
        return cls(**d)

    def feeds(self, batch_size: int, dataset=None, seed: int = 0) -> dict[str, np.ndarray]:
        """Inputs for one batch: the dataset's first samples if there is one, else seeded random data."""
        out = {}
        rng = np.random.default_rng(seed)
        for inp in self.inputs:
            shape = inp.concrete(batch_size, self.dims)
            if dataset is not None and inp.name in dataset.inputs:
                arr = dataset.inputs[inp.name]
                idx = np.arange(batch_size) % len(arr)
                out[inp.name] = np.ascontiguousarray(arr[idx])
                continue
            out[inp.name] = random_input(rng, shape, inp.dtype, inp.range)
        return out


def random_input(rng: np.random.Generator, shape: tuple[int, ...], dtype: str,
                 rng_range: tuple[float, float] | None) -> np.ndarray:
    if dtype.startswith("int") or dtype == "uint8":
        lo, hi = rng_range or (0, 2)
        return rng.integers(int(lo), int(hi), size=shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    lo, hi = rng_range or (0.0, 1.0)
    return rng.uniform(lo, hi, size=shape).astype(dtype)


def builtin_module(name: str, cache_dir: str):
    from effbench.models import zoo
    return zoo.build(name, Path(cache_dir))


def import_factory(spec: str, sys_path: str | None, *, suite_file: str | None = None, field: str | None = None):
    """Resolve "package.module:factory" (user code: it runs by design) to a callable."""
    mod_name, _, fn_name = spec.partition(":")
    if sys_path and sys_path not in sys.path:
        sys.path.insert(0, sys_path)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise UserError(f"cannot import module '{mod_name}' ({e})", file=suite_file, field=field,
                        fix="put the module beside the suite file or install its package") from None
    except Exception as e:  # the user's module raised while importing
        raise UserError(f"importing '{mod_name}' raised {type(e).__name__}: {e}", file=suite_file, field=field,
                        fix="fix the module so it imports cleanly") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise UserError(f"'{mod_name}' has no callable '{fn_name}'", file=suite_file, field=field,
                        fix="name a function that returns a torch.nn.Module") from None
    return fn


def build_torch_module(artifact: ModelArtifact, *, suite_file: str | None = None, field: str | None = None):
    """Call the factory in this process and return the module in eval mode."""
    import torch
    fn = import_factory(artifact.torch_factory, artifact.sys_path, suite_file=suite_file, field=field)
    try:
        module = fn(*artifact.torch_factory_args)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"factory '{artifact.torch_factory}' raised {type(e).__name__}: {e}", file=suite_file,
                        field=field, fix="fix the factory so it returns a torch.nn.Module") from None
    if not isinstance(module, torch.nn.Module):
        raise UserError(f"factory '{artifact.torch_factory}' returned {type(module).__name__}, not a torch.nn.Module",
                        file=suite_file, field=field, fix="return an nn.Module from the factory")
    return module.eval()


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_onnx_inputs(model, *, file: str, field: str, suite_file: str | None) -> list[InputDesc]:
    """The graph's real inputs (initializers excluded); the first symbolic dim of each is the batch."""
    inits = {i.name for i in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = ONNX_DTYPES.get(tt.elem_type, f"onnx-type-{tt.elem_type}")
        shape: list = []
        for k, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(int(d.dim_value))
            elif k == 0:
                shape.append("batch")
            else:
                shape.append(d.dim_param or f"{vi.name}_dim{k}")
        out.append(InputDesc(vi.name, shape, dtype))
    return out


def load_onnx_checked(path: Path, *, suite_file: str | None, field: str):
    import onnx
    try:
        model = onnx.load(str(path), load_external_data=True)
    except FileNotFoundError:
        raise UserError("model file not found", file=suite_file, field=field, fix="check the path") from None
    except Exception as e:  # protobuf DecodeError and friends: not an ONNX file
        raise UserError(f"{path} is not a readable ONNX model ({type(e).__name__})", file=suite_file, field=field,
                        fix="export the model with torch.onnx.export or onnx.save") from None
    if not model.graph.node or not model.graph.output:
        raise UserError(f"{path} has an empty graph (not an ONNX model?)", file=suite_file, field=field,
                        fix="point at a real .onnx model")
    return model


def merge_inputs(graph_inputs: list[InputDesc], spec_inputs: dict | None, dims: dict[str, int], *,
                 suite_file: str | None, field: str) -> tuple[InputDesc, ...]:
    """Check the suite's declared inputs against the graph's, and bind what the suite does not say."""
    by_name = {i.name: i for i in graph_inputs}
    if spec_inputs:
        for name in spec_inputs:
            if name not in by_name:
                raise UserError(f"the model has no input '{name}' (it has {', '.join(by_name)})", file=suite_file,
                                field=f"{field}.inputs.{name}", fix="use the model's input names")
        missing = [n for n in by_name if n not in spec_inputs]
        if missing:
            raise UserError(f"inputs does not describe model input '{missing[0]}'", file=suite_file,
                            field=f"{field}.inputs", fix=f"add {missing[0]}: {{shape: [...], dtype: ...}}")
    out = []
    for g in graph_inputs:
        s = (spec_inputs or {}).get(g.name)
        shape, dtype, rng = g.shape, g.dtype, g.range
        if s is not None:
            sshape = list(s.shape)
            f = f"{field}.inputs.{g.name}.shape"
            if len(sshape) != len(g.shape):
                raise UserError(f"shape {sshape} has rank {len(sshape)} but the model input '{g.name}' has rank "
                                f"{len(g.shape)} {g.shape}", file=suite_file, field=f,
                                fix=f"give a shape like {g.shape}")
            for k, (a, b) in enumerate(zip(sshape, g.shape)):
                if isinstance(a, int) and isinstance(b, int) and a != b:
                    raise UserError(f"dimension {k} is {a} but the model input '{g.name}' has {b} (model shape "
                                    f"{g.shape})", file=suite_file, field=f, fix=f"use {b}")
            if s.dtype != g.dtype:
                raise UserError(f"dtype {s.dtype} but the model input '{g.name}' is {g.dtype}", file=suite_file,
                                field=f"{field}.inputs.{g.name}.dtype", fix=f"use dtype: {g.dtype}")
            shape, dtype, rng = sshape, s.dtype, s.range or g.range
        for k, d in enumerate(shape):
            if isinstance(d, str) and d != "batch" and d not in dims:
                raise UserError(f"dimension {k} ('{d}') of input '{g.name}' is symbolic and not bound",
                                file=suite_file, field=f"{field}.inputs.{g.name}.shape",
                                fix=f"add dims: {{{d}: N}} to the model, or give the shape with numbers")
        out.append(InputDesc(g.name, shape, dtype, tuple(rng) if rng else None))
    return tuple(out)


@contextlib.contextmanager
def quiet_tools():
    """Exporters and quantizers print pages of warnings; keep them out of the user's terminal."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        warnings.simplefilter("ignore")
        level = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(level)


def export_module(module, inputs: tuple[InputDesc, ...], dims: dict[str, int], out: Path, *,
                  exporter: str = "dynamo", opset: int | None = None) -> dict:
    """Export to ONNX with a dynamic batch axis; returns what did it (tool, version, opset)."""
    import onnx
    import torch
    example = tuple(torch.from_numpy(random_input(np.random.default_rng(0), i.concrete(2, dims), i.dtype, i.range))
                    for i in inputs)
    names = [i.name for i in inputs]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    with quiet_tools(), torch.inference_mode(False), torch.no_grad():
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=1 << 20)
            dynamic = tuple({0: batch} if i.shape and i.shape[0] == "batch" else {} for i in inputs)
            kw = {"opset_version": opset} if opset else {}
            torch.onnx.export(module, example, str(tmp), dynamo=True, input_names=names, output_names=None,
                              dynamic_shapes=dynamic, optimize=True, external_data=False, **kw)
        else:
            axes = {n: {0: "batch"} for n, i in zip(names, inputs) if i.shape and i.shape[0] == "batch"}
            torch.onnx.export(module, example, str(tmp), dynamo=False, input_names=names,
                              dynamic_axes=axes, opset_version=opset or 17)
    model = onnx.load(str(tmp))
    # The dynamo exporter writes value_info for initializers, which breaks onnxruntime's
    # quantize_dynamic ("Inferred shape and existing shape differ", onnxruntime#25890): drop them.
    inits = {i.name for i in model.graph.initializer}
    keep = [v for v in model.graph.value_info if v.name not in inits]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    # Name the first output of a single-output model "output" unless the graph already named it.
    onnx.save(model, str(tmp))
    tmp.replace(out)
    return {"tool": f"torch.onnx.export({'dynamo' if exporter == 'dynamo' else 'legacy'})",
            torch.__name__: str(torch.__version__), onnx.__name__: onnx.__version__,
            "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)}


def _module_digest(module) -> str:
    import torch
    h = hashlib.sha256(type(module).__qualname__.encode())
    for k, v in module.state_dict().items():
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def prepare(spec, index: int, *, base_dir: Path, suite_file: str, cache_dir: Path) -> ModelArtifact:
    """Resolve suite model `spec` (a suite.ModelSpec) to a ModelArtifact. May import torch (run it in a worker)."""
    field = f"models[{index}]"
    src = spec.source
    dims = dict(spec.dims)
    if src.kind == "onnx":
        path = (base_dir / src.onnx).resolve()
        model = load_onnx_checked(path, suite_file=suite_file, field=f"{field}.source.onnx")
        graph_inputs = read_onnx_inputs(model, file=str(path), field=field, suite_file=suite_file)
        inputs = merge_inputs(graph_inputs, spec.inputs, dims, suite_file=suite_file, field=field)
        return ModelArtifact(model_id=spec.id, source_kind="onnx", onnx_path=str(path), onnx_sha256=sha256_file(path),
                             inputs=inputs, output_names=tuple(o.name for o in model.graph.output), dims=dims,
                             task=spec.task, info={"opset": next((o.version for o in model.opset_import
                                                                  if o.domain in ("", "ai.onnx")), None)})
    if src.kind == "builtin":
        from effbench.models import zoo
        _, zoo_inputs, _, task = zoo.ZOO[src.builtin]
        factory, args, sys_path = "effbench.models.sources:builtin_module", (src.builtin, str(cache_dir)), None
        declared = {n: _Spec(**i) for n, i in zoo_inputs.items()}
        task = spec.task or task
    else:
        factory, args, sys_path = src.torch, (), str(base_dir.resolve())
        declared, task = spec.inputs, spec.task
        if not declared:
            raise UserError("a torch: model needs inputs: (name, shape, dtype) to export it", file=suite_file,
                            field=f"{field}.inputs", fix="add inputs: {x: {shape: [batch, ...], dtype: float32}}")
    draft = ModelArtifact(model_id=spec.id, source_kind=src.kind, onnx_path="", onnx_sha256="", inputs=(),
                          output_names=(), dims=dims, task=task, torch_factory=factory, torch_factory_args=args,
                          sys_path=sys_path)
    module = build_torch_module(draft, suite_file=suite_file, field=f"{field}.source.{src.kind}")
    inputs = tuple(InputDesc(n, list(s.shape), s.dtype, tuple(s.range) if s.range else None) for n, s in declared.items())
    if spec.inputs and src.kind == "builtin":
        inputs = merge_inputs(list(inputs), spec.inputs, dims, suite_file=suite_file, field=field)
    for i in inputs:
        for k, d in enumerate(i.shape):
            if isinstance(d, str) and d != "batch" and d not in dims:
                raise UserError(f"dimension '{d}' of input '{i.name}' is not bound", file=suite_file,
                                field=f"{field}.inputs.{i.name}.shape", fix=f"add dims: {{{d}: N}}")
    exp = spec.export
    key = hashlib.sha256(json.dumps([_module_digest(module), [asdict(i) for i in inputs], dims, exp.exporter, exp.opset],
                                    default=str).encode()).hexdigest()[:16]
    out = cache_dir / "models" / f"{spec.id}-{key}.onnx"
    meta_path = out.with_suffix(".json")
    if out.is_file() and meta_path.is_file():
        export = json.loads(meta_path.read_text())
    else:
        try:
            export = export_module(module, inputs, dims, out, exporter=exp.exporter, opset=exp.opset)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"torch.onnx.export failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                            file=suite_file, field=f"{field}.source",
                            fix="try export: {exporter: legacy}, or export the model to ONNX yourself and use onnx:") from None
        meta_path.write_text(json.dumps(export))
    import onnx
    model = onnx.load(str(out))
    graph_inputs = read_onnx_inputs(model, file=str(out), field=field, suite_file=suite_file)
    if [g.name for g in graph_inputs] != [i.name for i in inputs]:
        # the exporter may drop an unused input; describe what the graph really takes
        inputs = tuple(i for i in inputs if i.name in {g.name for g in graph_inputs})
    info = {}
    if src.kind == "builtin":
        from effbench.models import zoo
        info = zoo.info(src.builtin, cache_dir)
    return ModelArtifact(model_id=spec.id, source_kind=src.kind, onnx_path=str(out), onnx_sha256=sha256_file(out),
                         inputs=inputs, output_names=tuple(o.name for o in model.graph.output), dims=dims, task=task,
                         torch_factory=factory, torch_factory_args=args, sys_path=sys_path, export=export, info=info)


@dataclass(frozen=True)
class _Spec:
    shape: list
    dtype: str = "float32"
    range: tuple | None = None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "effbench"
