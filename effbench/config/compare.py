"""`compare:`, the paired comparisons a suite asks for beside every variant's FP32 twin (issue 31):

    compare: runtimes                                 # every runner against the first runner's FP32
    compare: {runtimes: {baseline: onnxruntime}}      # ... against this runner's (its name or id)
    compare: {baseline_model: teacher}                # every model against this model's FP32, same runner
    compare: {runtimes: {baseline: torch}, baseline_model: teacher}   # both

A comparison is a *target* of a cell: the baseline cell whose FP32 session the cell's group worker also
holds and times in alternating blocks (`execution.crosspairs`). Owns no runtime: importable without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from effbench.errors import did_you_mean
from effbench.results.record import Cell
from effbench.variants.specs import reference_precision

RUNTIMES, BASELINE_MODEL = "runtimes", "baseline_model"
FORMS = (RUNTIMES, "{runtimes: {baseline: RUNNER}}", "{baseline_model: MODEL_ID}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class RuntimesCompare(_Strict):
    # a runner's name or its `id:` (its cell-id label); None: the first runner listed
    baseline: str | None = None


class CompareSpec(_Strict):
    runtimes: RuntimesCompare | None = None
    baseline_model: str | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data == RUNTIMES:
                return {RUNTIMES: {}}
            raise ValueError(f"unknown comparison '{data}'{did_you_mean(data, (RUNTIMES, BASELINE_MODEL))}; "
                             f"expected one of {', '.join(FORMS)}")
        if not isinstance(data, dict):
            raise ValueError(f"compare: is one of {', '.join(FORMS)} (or a mapping with both keys), not a "
                             f"{type(data).__name__}")
        if RUNTIMES in data and data[RUNTIMES] in (None, True):
            data = {**data, RUNTIMES: {}}  # `runtimes:` with no options, or `runtimes: true`
        if data.get(RUNTIMES) is False:
            data = {k: v for k, v in data.items() if k != RUNTIMES}
        return data

    @model_validator(mode="after")
    def _something(self) -> CompareSpec:
        if self.runtimes is None and self.baseline_model is None:
            raise ValueError(f"asks for no comparison; give one of {', '.join(FORMS)}, or remove it")
        return self


@dataclass(frozen=True)
class Target:
    """One paired comparison of a cell: `key` names it in the record's `comparisons` ("runtime:onnxruntime",
    "model:teacher"), `baseline` is the FP32 cell it is against. `twin`: that cell is the cell's own FP32
    twin (a cell of the baseline runner or model), so the pairing is the one `comparison` already holds."""

    key: str
    kind: str            # "runtime" | "model"
    baseline: Cell
    twin: bool = False


def runtime_key(label: str) -> str:
    return f"runtime:{label}"


def model_key(model_id: str) -> str:
    return f"model:{model_id}"


def baseline_runner(suite: Any) -> Any | None:
    """The `RunnerSpec` every runtime is compared against, or None without `compare: runtimes`."""
    spec = suite.spec.compare
    if spec is None or spec.runtimes is None:
        return None
    want = spec.runtimes.baseline
    runners = suite.spec.runners
    if want is None:
        return runners[0]
    return next((r for r in runners if r.label == want), None) or next(r for r in runners if r.name == want)


def targets(suite: Any, cell: Cell) -> list[Target]:
    """The comparisons the suite asks of `cell` beyond its FP32 twin; none for the baselines themselves and
    for generative models (their pairs are `execution.generation`'s)."""
    spec = suite.spec.compare
    if spec is None or suite.model(cell.model).generates:
        return []
    fp32 = reference_precision()
    out = []
    base = baseline_runner(suite)
    if base is not None:
        other = cell.replace(variant=fp32, precision=fp32, method=None, runner=base.name, runner_label=base.label,
                             threads=base.threads, compile=base.compile, runner_options=base.changed_options(),
                             device=base.device)
        if cell.runner_label != base.label:
            out.append(Target(runtime_key(base.label), "runtime", other))
        elif cell.variant != fp32:
            out.append(Target(runtime_key(base.label), "runtime", other, twin=True))
    if spec.baseline_model is not None:
        other = cell.replace(model=spec.baseline_model, variant=fp32, precision=fp32, method=None)
        if cell.model != spec.baseline_model:
            out.append(Target(model_key(spec.baseline_model), "model", other))
        elif cell.variant != fp32:
            out.append(Target(model_key(spec.baseline_model), "model", other, twin=True))
    return out


def check_compare(suite: Any) -> None:
    """`compare:` against the suite's runners and models: a one-line UserError at its line for an id that is
    not there, a comparison with nothing to compare, or models that do not share inputs and task."""
    spec = suite.spec.compare
    if spec is None:
        return
    runners, models = suite.spec.runners, suite.spec.models
    if spec.runtimes is not None:
        want = spec.runtimes.baseline
        names = list(dict.fromkeys([r.label for r in runners] + [r.name for r in runners]))
        if want is not None and want not in names:
            raise suite.error(f"no runner '{want}' in this suite{did_you_mean(want, names)}; its runners are "
                              f"{', '.join(r.label for r in runners)}", "compare", RUNTIMES, "baseline",
                              fix="name one of the suite's runners (its name, or its id: where two share a name)")
        if want is not None and want not in [r.label for r in runners] and [r.name for r in runners].count(want) > 1:
            raise suite.error(f"two runners are named '{want}'", "compare", RUNTIMES, "baseline",
                              fix="give the baseline runner an id: and name that")
        if len(runners) < 2:
            raise suite.error("compare: runtimes needs at least two runners; this suite has one",
                              "compare", RUNTIMES, fix="add a runner to runners:, or remove compare:")
    if spec.baseline_model is not None:
        ids = [m.id for m in models]
        want = spec.baseline_model
        if want not in ids:
            raise suite.error(f"no model '{want}' in this suite{did_you_mean(want, ids)}; its models are "
                              f"{', '.join(ids)}", "compare", BASELINE_MODEL, fix="name one of the models' id:")
        if len(models) < 2:
            raise suite.error("compare: baseline_model needs another model to compare with it",
                              "compare", BASELINE_MODEL, fix="add the model to compare, or remove compare:")
        base = next(m for m in models if m.id == want)
        for m in models:
            if m.id != want:
                why = static_mismatch(base, m)
                if why:
                    raise suite.error(f"model '{m.id}' cannot be compared with baseline_model '{want}': {why}",
                                      "compare", BASELINE_MODEL,
                                      fix="compare models that take the same inputs for the same task")


def static_mismatch(base: Any, model: Any) -> str | None:
    """Why two `ModelSpec`s cannot be paired, from what the suite says (the prepared models are checked again
    once their inputs are read: `input_mismatch`)."""
    if base.generates or model.generates:
        return "generative models (task: generate) are compared by their own A/B pass, not by compare:"
    if base.task and model.task and base.task != model.task:
        return f"their tasks differ ({model.task} vs {base.task})"
    if base.inputs and model.inputs:
        mine = {k: (v.shape, v.dtype) for k, v in model.inputs.items()}
        theirs = {k: (v.shape, v.dtype) for k, v in base.inputs.items()}
        if mine != theirs:
            return f"their inputs differ ({_inputs_text(mine)} vs {_inputs_text(theirs)})"
    if (base.dataset is None) != (model.dataset is None) or (
            base.dataset is not None and base.dataset.model_dump() != model.dataset.model_dump()):
        return "they are not scored on the same dataset (quality against the baseline needs the same one)"
    return None


def input_mismatch(base_art: Any, art: Any) -> str | None:
    """Why two prepared models (`ModelArtifact`s) cannot be paired: their inputs (name, shape at batch 1,
    dtype) or their tasks differ."""
    def sig(a: Any) -> dict:
        return {i.name: (list(i.concrete(1, a.dims)), i.dtype) for i in a.inputs}
    if sig(art) != sig(base_art):
        return f"their inputs differ ({_inputs_text(sig(art))} vs {_inputs_text(sig(base_art))})"
    if art.task and base_art.task and art.task != base_art.task:
        return f"their tasks differ ({art.task} vs {base_art.task})"
    return None


def _inputs_text(sig: dict) -> str:
    return ", ".join(f"{k}: [{', '.join(map(str, s))}] {d}" for k, (s, d) in sorted(sig.items()))
