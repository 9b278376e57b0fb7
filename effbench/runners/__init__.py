"""Runtimes: one module per runtime; each loads a variant and runs a batch.

`RUNNERS` is filled by `@register` where each class is defined. Runner modules import their runtime
lazily (inside `load`), so listing runners never imports onnxruntime or torch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from effbench.variants import Variant


@dataclass(frozen=True)
class Support:
    ok: bool
    reason: str | None = None

    @classmethod
    def yes(cls) -> Support:
        return cls(True)

    @classmethod
    def no(cls, reason: str) -> Support:
        return cls(False, reason)


class Session(Protocol):
    info: dict[str, Any]   # what the runtime really did: providers, optimisation level, threads ...

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def timed_call(self, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
        """A zero-argument call for the timing loop: inputs bound once, device work synchronized."""


class Runner(Protocol):
    name: ClassVar[str]
    artifact: ClassVar[str]               # the side of a variant it runs: "onnx" (a graph) or "torch" (a module)
    runtime_module: ClassVar[str]         # imported in a measuring worker before its baseline memory is read
    excludes: ClassVar[tuple[str, ...]]   # modules that must not be loaded in its worker by then
    packages: ClassVar[tuple[str, ...]]   # distributions whose versions go into provenance

    def supports(self, variant: Variant) -> Support: ...

    def load(self, variant: Variant, threads: int, options: dict[str, Any]) -> Session: ...


RUNNERS: dict[str, type] = {}


def register(cls: type) -> type:
    RUNNERS[cls.name] = cls
    return cls


def _load_shipped() -> None:
    """Import the shipped runner modules (they register themselves; none imports its runtime here)."""
    from effbench.runners import onnxruntime as _ort  # noqa: F401  (fills RUNNERS)
    from effbench.runners import torch as _torch  # noqa: F401


def runner_names() -> tuple[str, ...]:
    """Every registered runner, the shipped ones first (the first is a suite's default)."""
    _load_shipped()
    return tuple(RUNNERS)


def get_runner(name: str) -> Runner:
    _load_shipped()
    return RUNNERS[name]()


def runner_class(name: str) -> type:
    """The registered class (its ClassVars: artifact, runtime_module, packages ...), not an instance."""
    _load_shipped()
    return RUNNERS[name]


def provenance_packages() -> tuple[str, ...]:
    """Every registered runner's packages, in registration order, once."""
    _load_shipped()
    return tuple(dict.fromkeys(p for cls in RUNNERS.values() for p in getattr(cls, "packages", ())))


class Unsupported(Exception):
    """This runtime cannot build or run this variant; the message says why (recorded, never hidden)."""
