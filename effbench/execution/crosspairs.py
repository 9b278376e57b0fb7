"""Paired comparisons between runtimes and between models (the suite's `compare:`, `effbench.config.compare`).

A cell's FP32 twin is timed in its group's worker (one model, one runner); a comparison with another runner's
or another model's FP32 is a measurement on this machine only when it is timed the same way. So the group
worker also holds the baseline's session (that runner's, or that model's on this runner) as extra members,
timed in the same interleaved cycles (`execution.tasks.measure_group`, its `baselines`), and each cell's record
gets `comparisons[key]`: the paired speedup of this round, merged over rounds like `comparison`
(`results.merge`). A pairing that cannot be made (the baseline unsupported, failed, not built; a scenario
whose worker times one runner alone) is a comparison with a reason, never a ratio of separate workers.

The cells of the baseline runner (or model) itself have their FP32 twin as that baseline: their entry is a copy
of `comparison`, saying so.
"""
from __future__ import annotations

from typing import Any

from effbench.config.compare import Target, input_mismatch, targets
from effbench.execution.pairing import FP32, group_key, member_key, paired_against
from effbench.execution.progress import Progress
from effbench.execution.workers import Outcome
from effbench.results.record import Cell, Comparison, Quality, Record

SCENARIO_REASON = ("paired comparisons with another runtime or model are timed in the single-stream group worker "
                   "only; the {scenario} worker times one runner's variants")
TWIN_NOTE = "this baseline is the cell's own FP32 twin: the same pairing as its `comparison`"


class CrossPairs:
    """What one run adds to its group workers and records for the suite's `compare:` (`run`: its `SuiteRun`)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.reasons: dict[tuple, dict[str, str]] = {}   # (round, group) -> target key -> why it was not timed

    @property
    def asked(self) -> bool:
        return self.run.suite.spec.compare is not None

    def targets(self, cell: Cell) -> list[Target]:
        return targets(self.run.suite, cell) if self.asked else []

    def models(self, models: list[str]) -> list[str]:
        """The models a run prepares: the plan's, and the baseline model its cells are compared with."""
        spec = self.run.suite.spec.compare
        base = spec.baseline_model if spec is not None else None
        if base is None or base in models or not models:
            return models
        order = [m.id for m in self.run.suite.spec.models]
        return sorted([*models, base], key=order.index)

    def check(self, artifacts: dict[str, Any]) -> None:
        """The prepared models against the baseline model: the same inputs (name, shape, dtype) and task, or a
        one-line UserError at `compare.baseline_model`."""
        spec = self.run.suite.spec.compare
        base = artifacts.get(spec.baseline_model) if spec is not None and spec.baseline_model else None
        if base is None or isinstance(base, Outcome):
            return
        for mid, art in artifacts.items():
            if mid == spec.baseline_model or isinstance(art, Outcome) or not hasattr(art, "inputs"):
                continue
            why = input_mismatch(base, art)
            if why:
                raise self.run.suite.error(
                    f"model '{mid}' cannot be compared with baseline_model '{spec.baseline_model}': {why}",
                    "compare", "baseline_model", fix="compare models that take the same inputs for the same task")

    # -- the group's worker
    def _baseline(self, t: Target, art, progress: Progress) -> tuple[Any, Any] | str:
        """(the baseline's artifact, its built FP32 variant), or why there is none."""
        run = self.run
        if t.kind == "model":
            art = run.artifacts.get(t.baseline.model)
            if art is None or isinstance(art, Outcome):
                return f"the baseline model could not be prepared: {getattr(art, 'reason', 'not prepared')}"
        out = run.built_variant(art, t.baseline.model, FP32, progress)
        if out.kind != "ok":
            return f"the baseline's {FP32} variant could not be built: {out.reason}"
        return art, out.value

    def measure_baselines(self, first: Cell, art, progress: Progress) -> None:
        """The baselines' own workers (quality: their FP32 outputs, which the group's quality passes are scored
        against), before the group's: each once per run."""
        for t in self.targets(first):
            got = None if t.twin else self._baseline(t, art, progress)
            if isinstance(got, tuple):
                self.run.figures.measure(t.baseline, FP32, got[1], got[0], progress)

    def extend(self, rnd: int, first: Cell, members: list[dict], variants: dict, feeds: dict, art,
               progress: Progress) -> tuple[list[dict], dict, dict, dict]:
        """The group worker's members, variants and feeds with each baseline's FP32 session added at every batch
        size of the group, and the payload's `baselines` (label -> its cell and artifact)."""
        reasons: dict[str, str] = {}
        self.reasons[(rnd, group_key(first))] = reasons
        members, variants, feeds = [dict(m) for m in members], dict(variants), dict(feeds)
        baselines: dict[str, dict] = {}
        batches = sorted({m["batch_size"] for m in members})
        for t in [t for t in self.targets(first) if not t.twin]:
            got = self._baseline(t, art, progress)
            if isinstance(got, str):
                reasons[t.key] = got
                continue
            base_art, variant = got
            baselines[t.key] = {"cell": t.baseline, "artifact": base_art.to_json()}
            variants[t.key] = variant
            for b in batches:
                broke = self.run.broken.get(t.baseline.replace(batch_size=b).cell_id)
                if broke:
                    reasons[member_key(t.key, b)] = f"the baseline broke a worker in an earlier round: {broke}"
                    continue
                key = member_key(t.key, b)
                member = {"key": key, "label": t.key, "batch_size": b, "reference": None}
                if t.kind == "model":  # the baseline model's own inputs (the same spec, its own dataset split)
                    member["feeds"] = key
                    feeds[key] = base_art.feeds(b, self.run.evaluation(t.baseline.model))
                members.append(member)
                for m in members:  # FP32 stays in the cycles while the baseline is, so neither leaves early
                    if m["label"] == FP32 and m["batch_size"] == b and not m.get("reference"):
                        m["reference"] = key
        return members, variants, feeds, ({"baselines": baselines} if baselines else {})

    # -- the records
    def complete(self, record: Record, variant, res: dict, member: dict, rnd: int, loop: bool) -> Record:
        """An ok record of a group worker's answer with its `comparisons` (and their quality entries)."""
        cell = record.cell
        comps: dict[str, Comparison] = {}
        quality = record.quality
        reasons = self.reasons.get((rnd, group_key(cell)), {})
        for t in self.targets(cell):
            base_id = t.baseline.cell_id
            if t.twin:
                twin = record.comparison or Comparison(baseline=base_id, reason="no FP32 twin comparison")
                comps[t.key] = twin.replace(note=TWIN_NOTE, extra={**twin.extra, "pairing": TWIN_NOTE})
                quality = _twin_quality(quality, t.key, base_id)
                continue
            if not loop:
                comps[t.key] = Comparison(baseline=base_id, reason=SCENARIO_REASON.format(scenario=cell.scenario))
            elif t.key in reasons or member_key(t.key, cell.batch_size) in reasons:
                why = reasons.get(t.key) or reasons[member_key(t.key, cell.batch_size)]
                comps[t.key] = Comparison(baseline=base_id, reason=why)
            else:
                base = res["members"].get(member_key(t.key, cell.batch_size))
                if base is not None and base.get("status") != "ok":
                    comps[t.key] = Comparison(baseline=base_id,
                                              reason=f"the baseline {base_id} is {base['status']}: {base.get('reason')}")
                    continue
                comp = paired_against(base_id, variant, member, base, "the baseline was not timed in this worker")
                extra = {"thread_pools": res.get("thread_pools"), "baseline_runtime": (base or {}).get("session")}
                comps[t.key] = comp.replace(extra={k: v for k, v in extra.items() if v})
            if quality is not None and t.key in quality.vs_baseline:  # the quality pass names the batch it ran
                quality = quality.replace(vs_baseline={**quality.vs_baseline,
                                                       t.key: {**quality.vs_baseline[t.key], "baseline": base_id}})
        return record.replace(comparisons=comps, quality=quality) if comps else record

    def unpaired(self, cell: Cell, why: str) -> dict[str, Comparison]:
        """The comparisons of a cell measured alone (its group's worker failed): each with the reason."""
        return {t.key: Comparison(baseline=t.baseline.cell_id, reason=why) for t in self.targets(cell)
                if not (t.twin and cell.variant == FP32)}

    def quality_baselines(self, cell: Cell, reference) -> dict[str, dict]:
        """What a quality pass of `cell` is scored against besides its FP32 twin: each other runner's or model's
        FP32 outputs (`reference(model, runner_label)`: the file its pass writes) and metric value."""
        fp32 = self.run.figures.fp32_quality
        return {t.key: {"cell_id": t.baseline.cell_id,
                        "reference_path": str(reference(t.baseline.model, t.baseline.runner_label)),
                        "value": fp32.get((t.baseline.model, t.baseline.runner_label))}
                for t in self.targets(cell) if not t.twin}


def _twin_quality(quality: Quality | None, key: str, base_id: str) -> Quality | None:
    """Quality against a baseline that is the cell's FP32 twin: the section's own relative figure."""
    if quality is None:
        return None
    entry = {"baseline": base_id, "metric": quality.metric, "value": quality.value,
             "baseline_value": quality.fp32_value, "relative": quality.relative, "below_floor": quality.below_floor,
             "min_relative": quality.min_relative, "note": "the baseline is this cell's FP32 twin"}
    return quality.replace(vs_baseline={**quality.vs_baseline, key: entry})

