"""The runner protocol and registry: what a runtime module implements (`Runner`, `Session`), how it says
it cannot run a variant (`Support`, `Unsupported`), and `@register`, which fills `RUNNERS` where each
runner class is defined.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

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


class RunnerOptions(BaseModel):
    """A runner's typed `options:` from the suite (`runners: [{name: onnxruntime, options: {...}}]`): one
    class beside each runner, validated at suite load time (an unknown key or a bad value is a line-numbered
    error); the options that differ from the defaults enter the cell's identity and its record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def changed(self) -> dict[str, Any]:
        """The options set away from their defaults, as JSON values (what a cell and its record carry)."""
        return self.model_dump(mode="json", exclude_defaults=True)


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
    Options: ClassVar[type[RunnerOptions]]  # its typed suite options (`RunnerOptions` when it has none)

    def supports(self, variant: Variant) -> Support: ...

    def load(self, variant: Variant, threads: int, options: dict[str, Any]) -> Session:
        """`options`: "runner_options" (its typed `Options`), "artifact" (the model's), "compile", "device",
        and "shared_thread_pool" where a worker times several sessions in turn."""


RUNNERS: dict[str, type] = {}


def register(cls: type) -> type:
    RUNNERS[cls.name] = cls
    return cls


class Unsupported(Exception):
    """This runtime cannot build or run this variant; the message says why (recorded, never hidden)."""


def require_cpu(runner: Runner, variant: Variant, options: dict[str, Any], runs: str) -> None:
    """The opening every CPU-only runner's `load` shares: `Unsupported` unless `runner` supports `variant`
    and the cell asks for the CPU. `runs` says what the runner runs there ("LiteRT's CPU interpreter")."""
    support = runner.supports(variant)
    if not support.ok:
        raise Unsupported(support.reason)
    device = options.get("device", "cpu")
    if device != "cpu":
        raise Unsupported(f"the {runner.name} runner runs {runs}, not '{device}'")


def torch_artifact(runner: Runner, variant: Variant, options: dict[str, Any], verb: str):
    """The model artifact whose torch module a converting runner `verb`s (a pruned variant carries the pruned
    model's, its factory rebuilding the pruned module); `Unsupported` where there is none."""
    from effbench.models.sources import ModelArtifact
    art_json = (variant.torch or {}).get("artifact") or options.get("artifact")
    if not art_json:
        raise Unsupported(f"the {runner.name} runner {verb}s the model's torch module, and its load options "
                          "name no model artifact")
    artifact = ModelArtifact.from_json(art_json)
    if not artifact.torch_factory:
        raise Unsupported(f"an onnx: model has no torch module for the {runner.name} runner to {verb}")
    return artifact
