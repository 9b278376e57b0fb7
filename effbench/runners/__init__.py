"""Runtimes: one module per runtime; each loads a variant and runs a batch.

`RUNNERS` is filled by `@register` where each class is defined. Runner modules import their runtime
lazily (inside `load`), so listing runners never imports onnxruntime or torch.
"""
from __future__ import annotations

from typing import Any

from effbench.runners.base import RUNNERS, Runner, RunnerOptions, Session, Support, Unsupported, register  # noqa: F401

SHIPPED = ("onnxruntime", "torch", "openvino", "executorch", "litert", "llamacpp", "onnxruntime-genai")  # in this order; the first is a suite's default


def load_shipped() -> None:
    """Import the shipped runner modules (they register themselves; none imports its runtime here)."""
    # grouped by what each runner serves (the comments name the groups), not sorted
    # isort: off
    from effbench.runners import onnxruntime as _ort  # noqa: F401  (fills RUNNERS)
    from effbench.runners import torch as _torch  # noqa: F401
    # optional extras ([openvino], [executorch]): their modules import the runtime only in `load`
    from effbench.runners import openvino as _openvino  # noqa: F401
    from effbench.runners import executorch as _executorch  # noqa: F401
    from effbench.runners import litert as _litert  # noqa: F401  ([litert]; converts in `make litert-env`'s venv)
    # decoder LLMs only (task: generate); their sessions are in effbench.workloads.sessions
    from effbench.runners import llamacpp as _llamacpp  # noqa: F401
    from effbench.runners import onnxruntime_genai as _ort_genai  # noqa: F401
    # isort: on


def runner_names() -> tuple[str, ...]:
    """Every registered runner, the shipped ones first in their fixed order (the first is a suite's default,
    whichever runner module happened to be imported first), then plugins' in registration order."""
    load_shipped()
    return tuple(n for n in SHIPPED if n in RUNNERS) + tuple(n for n in RUNNERS if n not in SHIPPED)


def get_runner(name: str) -> Runner:
    load_shipped()
    return RUNNERS[name]()


def runner_class(name: str) -> type:
    """The registered class (its ClassVars: artifact, runtime_module, packages ...), not an instance."""
    load_shipped()
    return RUNNERS[name]


def runner_packages() -> tuple[tuple[str, ...], ...]:
    """Each registered runner's distributions, its runtime first (for the records' provenance)."""
    load_shipped()
    return tuple(tuple(getattr(cls, "packages", ())) for cls in RUNNERS.values())


def runner_options(name: str, options: dict[str, Any] | None) -> RunnerOptions:
    """The runner's typed options from a suite's or a cell's `options` (pydantic's ValidationError when a
    key is unknown or a value bad); a runner that declares none takes no options."""
    return getattr(runner_class(name), "Options", RunnerOptions).model_validate(options or {})


def runner_side(name: str) -> str:
    """Which side of a variant a runner runs: "onnx" (the graph) or "torch" (the module)."""
    return runner_class(name).artifact


def provenance_packages() -> tuple[str, ...]:
    """Every registered runner's packages, in registration order, once."""
    load_shipped()
    return tuple(dict.fromkeys(p for cls in RUNNERS.values() for p in getattr(cls, "packages", ())))
