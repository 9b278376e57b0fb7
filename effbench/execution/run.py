"""Execution: plan -> prepare models -> build variants -> measure cells, each in a fresh worker
(`effbench.execution.workers`) with a timeout; rounds, resume, crash fallbacks and A/B mode.

What runs inside the workers is `effbench.execution.tasks`; the output lock and the display are
`effbench.execution.progress`; how cells are paired is `effbench.execution.pairing`.
"""
from __future__ import annotations

import datetime
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from effbench.config.suite import Cell, Suite, load_suite
from effbench.errors import UserError, short_paths
from effbench.execution.crosspairs import CrossPairs
from effbench.execution.figures import VariantFigures
from effbench.execution.generation import GenerationGroups
from effbench.execution.pairing import (
    FP32,
    drift_section,
    fp32_id,
    group_key,
    group_seed,
    member_key,
    paired_comparison,
    unpaired_comparison,
)
from effbench.execution.progress import OutputLock, Progress, record_line
from effbench.execution.work import WorkCounter, modeled_energy
from effbench.execution.workers import BUILD_TIMEOUT_S, Outcome, run_in_worker
from effbench.measure.stats import SCOPE_ONE_MOMENT
from effbench.results.provenance import provenance
from effbench.results.record import (
    Comparison,
    Energy,
    Latency,
    Memory,
    ModelStats,
    Provenance,
    Quality,
    Record,
    VariantInfo,
)
from effbench.results.store import Results, Store, load
from effbench.runners import runner_side
from effbench.scenarios.plan import SERVER, SINGLE_STREAM, load_plan, sections
from effbench.variants import Variant


@dataclass
class RunOptions:
    out_dir: Path
    cache_dir: Path
    only: list[str] | None = None
    resume: bool = False
    rounds: int | None = None
    quick: bool = False
    progress: bool = True
    timeout_s: float | None = None
    allow_mixed: bool = False   # --allow-mixed: resume rounds measured elsewhere, merged cells marked mixed


def measure_budget(suite: Suite, quick: bool) -> dict:
    from effbench.measure.latency import Budget
    m = suite.spec.measure
    b = Budget(warmup_s=m.warmup_s, min_time_s=m.min_time_s, max_time_s=m.max_time_s, target_rel_ci=m.target_rel_ci)
    if quick:
        b = b.quick()
    return b.__dict__.copy()


def run_options(suite: Suite | str | Path, *, out_dir: str | Path | None = None, only: str | list[str] | None = None,
                resume: bool = False, rounds: int | None = None, quick: bool = False,
                cache_dir: str | Path | None = None, progress: bool = True,
                timeout_s: float | None = None, allow_mixed: bool = False) -> tuple[Suite, RunOptions]:
    """The loaded suite and the options of a run of it (`run`, and a fleet run: `effbench.fleet.run`)."""
    from effbench.models.sources import default_cache_dir
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    out = Path(out_dir) if out_dir else Path("reports") / suite.name
    return suite, RunOptions(out_dir=out, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                             only=[only] if isinstance(only, str) else only, resume=resume, rounds=rounds,
                             quick=quick, progress=progress, timeout_s=timeout_s, allow_mixed=allow_mixed)


def run(suite: Suite | str | Path, *, hooks: list[Callable] | None = None, **options: Any) -> Results:
    """Run a suite on this machine and return the merged results of its output folder's store.

    `options`: those of `run_options` (out_dir, only, resume, rounds, quick, cache_dir, progress,
    timeout_s, allow_mixed). `hooks`: called as `hook(record, variant=, artifact=, suite=, cache_dir=)` on each
    finished record before it is stored; a hook returns a replacement record (`record.replace(...)`) or
    None. A run over a fleet of device nodes is `effbench.fleet.run.run` (docs/fleet.md)."""
    suite, opts = run_options(suite, **options)
    with OutputLock(opts.out_dir):
        return SuiteRun(suite, opts, hooks or []).run()


class RecordSink(Protocol):
    """Where a run's finished records go: the JSONL store, or a fleet node's list that streams them back."""

    path: Path

    def append(self, record: Record) -> None: ...


class SuiteRun:
    """One `effbench run` (or one side of an A/B run): owns the plan, the store and the display."""

    def __init__(self, suite: Suite, opts: RunOptions, hooks: list[Callable], *,
                 store: RecordSink | None = None) -> None:
        self.suite, self.opts, self.hooks = suite, opts, hooks
        self.store: RecordSink = store if store is not None else Store(opts.out_dir / "results.jsonl")
        self.write_lock = threading.Lock()              # one writer at a time (a fleet's dispatcher thread)
        self.logs = opts.out_dir / "logs"
        self.run_id = uuid.uuid4().hex[:12]
        self.budget = measure_budget(suite, opts.quick)
        # --quick is a smoke run: one round (its records say their CIs cover one moment) unless --rounds
        self.rounds = opts.rounds or (1 if opts.quick else suite.spec.measure.rounds)
        m = suite.spec.measure
        self.timeout_s = opts.timeout_s or m.timeout_s or (self.budget["max_time_s"] + self.budget["warmup_s"] + 600)
        self.memory_limit_mb = m.memory_limit_mb
        self.work = WorkCounter()
        self.figures = VariantFigures(self)
        self.generation = GenerationGroups(self)      # task: generate groups (effbench.execution.generation)
        self.cross = CrossPairs(self)                   # the suite's compare: (effbench.execution.crosspairs)
        self.broken: dict[str, str] = {}                # cell id -> why its worker crashed or hung
        # another process outlasted a group's full wait: later groups only check it is still there
        self.competitor_stayed = False
        self.todo: list[tuple[int, Cell]] = []
        self.profiles: list = []
        self.skipped = 0

    # -- plan
    def run(self) -> Results:
        todo = self.plan()
        progress = self.progress(len(todo))
        try:
            self.measure(todo, progress)
        finally:
            progress.close()
        return load(self.store.path, allow_mixed=self.opts.allow_mixed)

    def progress(self, total: int) -> Progress:
        progress = Progress(total, self.opts.progress)
        if self.skipped:
            progress.log(f"resume: {self.skipped} finished cell-rounds already in {self.store.path}, {total} to go")
        return progress

    def measure(self, todo: list[tuple[int, Cell]], progress: Progress) -> None:
        """Measure the planned (round, cell) pairs: prepare the models, then one worker per group and round."""
        self.todo = todo
        if not todo:
            return
        self.setup(todo, progress)
        for rnd, cells in self.schedule(todo):
            self.do_group(rnd, cells, progress)

    def follow(self, *, run_id: str, rounds: int, hashes: dict[str, str], provenance: Provenance) -> None:
        """Measure as part of another run's plan (a fleet node): its run id, rounds and config hashes, this
        machine's provenance; no projections (the run's parent projects onto every profile it loaded)."""
        self.run_id, self.rounds, self.hashes, self.provenance = run_id, rounds, dict(hashes), provenance
        self.profiles = []
    def schedule(self, todo: list[tuple[int, Cell]]) -> list[tuple[int, list[Cell]]]:
        """Round by round, one worker per group: the cells of one model, runner and scenario (every
        variant and batch size), so each variant is timed beside its FP32 twin (docs/measurement.md "Comparisons
        are paired") and a worker starts once per group and round, not once per cell."""
        groups: dict[tuple[int, tuple], list[Cell]] = {}
        for rnd, cell in todo:
            groups.setdefault((rnd, group_key(cell)), []).append(cell)
        return [(rnd, cells) for (rnd, _), cells in groups.items()]

    def plan(self, cells: list[Cell] | None = None) -> list[tuple[int, Cell]]:
        """(round, cell) pairs still to measure, round-robin: A B C, A B C, ... `cells`: the suite's
        (matching --only) unless given (a fleet run adds each device's copy: `effbench.fleet.run`)."""
        cells = self.suite.cells(self.opts.only) if cells is None else cells
        if not cells:
            raise UserError(f"--only {' '.join(self.opts.only or [])} matches no cell of this suite",
                            file=self.suite.path, field="--only",
                            fix="use a glob over cell ids such as 'digits-cnn/*/onnxruntime/*'")
        done = self._done_set()
        self.opts.out_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        from effbench.devices import load_profiles
        if "local" in self.suite.spec.devices and self.opts.progress:
            print("effbench: measuring the local device profile (cached after the first time)", file=sys.stderr)
        self.profiles = load_profiles(list(self.suite.spec.devices), base_dir=self.suite.base_dir,
                                      suite_file=str(self.suite.path), cache_dir=self.opts.cache_dir,
                                      quick=self.opts.quick)
        from effbench.measure.speed import speed_index
        from effbench.runners import runner_packages
        self.provenance = provenance(suite_sha256=self.suite.sha256, speed=speed_index(), run_id=self.run_id,
                                     runner_packages=runner_packages(),
                                     suite=self.suite.name)
        self.hashes = {c.cell_id: self.suite.config_hash(c) for c in cells}
        if self.opts.resume and not self.opts.allow_mixed:
            self._refuse_mixed_resume()
        todo = [(r, c) for r in range(self.rounds) for c in cells if (self.hashes[c.cell_id], r) not in done]
        self.todo = todo
        self.skipped = len(cells) * self.rounds - len(todo)
        return todo

    def _refuse_mixed_resume(self) -> None:
        """--resume on a machine or software other than the one that measured the store's rounds would merge
        both into one cell: refused before anything is measured (unless --allow-mixed)."""
        from effbench.results.merge import mixed_error, provenance_differences
        here = set(self.hashes.values())
        for r in self.store.records()[0]:
            if r.ok and r.config_hash in here and r.measured_on is None \
                    and (diff := provenance_differences([r.provenance, self.provenance])):  # a fleet node's: its own
                raise mixed_error(r.cell_id, diff, what=f"round {r.round} in the store and this machine",
                                  file=str(self.store.path))

    def _done_set(self) -> set[tuple[str, int]]:
        if not self.store.path.exists():
            return set()
        if not self.opts.resume:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            keep = self.store.path.with_name(f"results.{stamp}.jsonl")
            self.store.path.rename(keep)  # never overwrite what was measured
            return set()
        records, warnings = self.store.records()
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        return {(r.config_hash, r.round) for r in records if r.status in ("ok", "unsupported")}

    # -- preparation
    def _prepare(self, model_ids: list[str], progress: Progress) -> dict[str, Any]:
        from effbench.models.sources import ModelArtifact
        arts: dict[str, Any] = {}
        for mid in model_ids:
            idx = next(i for i, m in enumerate(self.suite.spec.models) if m.id == mid)
            if self.suite.spec.models[idx].generates:
                arts[mid] = self.generation.prepare(idx, progress)
                continue
            progress.start(f"preparing {mid}")
            out = run_in_worker("effbench.execution.tasks:prepare_model",
                                {"model": self.suite.spec.models[idx].model_dump(mode="json"), "index": idx,
                                 "base_dir": str(self.suite.base_dir), "suite_file": str(self.suite.path),
                                 "cache_dir": str(self.opts.cache_dir)},
                                timeout_s=BUILD_TIMEOUT_S, log_path=self.logs / f"prepare-{mid}.log")
            if out.kind == "user_error":
                raise out.value
            arts[mid] = ModelArtifact.from_json(out.value) if out.kind == "ok" else out
        return arts

    def _datasets(self, artifacts: dict[str, Any]) -> dict[str, Any]:
        """Each model's dataset split into a calibration part and an evaluation part (`DatasetSplit`): the
        variants that calibrate see the first, quality and the timed inputs use the second."""
        from effbench.models.datasets import load_dataset
        out = {}
        for i, m in enumerate(self.suite.spec.models):
            art = artifacts.get(m.id)
            if m.dataset is None or not hasattr(art, "inputs"):
                continue
            shapes = {inp.name: (list(inp.concrete(1, art.dims)[1:]), inp.dtype) for inp in art.inputs}
            field = f"models[{i}].dataset"
            data = load_dataset(m.dataset, shapes, base_dir=self.suite.base_dir, suite_file=str(self.suite.path),
                                field=field)
            try:
                out[m.id] = data.split(m.dataset.split.calibration, m.dataset.split.seed)
            except ValueError as e:
                raise self.suite.error(str(e), "models", i, "dataset", fix="give the dataset more samples") from None
        return out

    def evaluation(self, model: str):
        """The model's evaluation part (quality, timed inputs), or None without a dataset."""
        split = self.datasets.get(model)
        return split.evaluation if split is not None else None

    def _build_choice(self, art, model: str, choice, progress: Progress, calibration) -> Outcome:
        progress.start(f"building {model}/{choice.label}")
        from effbench.variants import validate_options
        calib = None
        samples = validate_options(choice.precision, choice.options).get("calibration_samples")
        if calibration is not None and samples:  # only precisions that calibrate get (their share of) the data
            calib = {k: v[:samples] for k, v in calibration.calibration.inputs.items()}
        elif samples:  # no dataset: inputs generated from the spec, and the variant says so
            from effbench.variants import GeneratedCalibration
            calib = GeneratedCalibration(art.feeds(samples, None, seed=20261127))
        out = run_in_worker("effbench.execution.tasks:build_variant",
                            {"artifact": art.to_json(), "label": choice.label, "precision": choice.precision,
                             "method": choice.method, "options": choice.options,
                             "cache_dir": str(self.opts.cache_dir), "calibration": calib},
                            timeout_s=BUILD_TIMEOUT_S, log_path=self.logs / f"build-{model}-{choice.label}.log")
        # the worker answers in JSON (no torch object crosses into this process); the run holds it typed
        return Outcome("ok", Variant.from_json(out.value)) if out.kind == "ok" else out

    # -- measurement
    def setup(self, todo: list[tuple[int, Cell]], progress: Progress) -> None:
        """Prepare every model the plan needs (in workers) and load their datasets."""
        from effbench.measure.latency import loop_overhead_ns
        models = sorted({c.model for _, c in todo}, key=[m.id for m in self.suite.spec.models].index)
        self.artifacts = self._prepare(self.cross.models(models), progress)
        self.cross.check(self.artifacts)
        self.datasets = self._datasets(self.artifacts)
        self.variants: dict[tuple[str, str], Outcome] = {}
        self.overhead = loop_overhead_ns()

    def do_cell(self, rnd: int, cell: Cell, progress: Progress, paired: dict | None = None,
                comparison: Comparison | None = None, comparisons: dict | None = None) -> Record:
        """Build the cell's variant if needed, measure it alone in a fresh worker, append its record (A/B
        mode, and the fallback when a group's worker crashed).

        `paired`: A/B mode's paired pass for this cell and round (`pair_pass`), kept as `paired_ratios`.
        `comparison`: why this cell has no paired speedup vs FP32, when it is not FP32."""
        if cell.scenario != SINGLE_STREAM:  # offline and server have their own worker, alone or not
            return self.do_group(rnd, [cell], progress, alone=True)[0]
        art = self.artifacts[cell.model]
        if isinstance(art, Outcome):
            return self.finish(self.record(rnd, cell, reason=f"model could not be prepared: {art.reason}"), progress)
        vout = self.built_variant(art, cell.model, cell.variant, progress)
        if vout.kind == "user_error":
            raise vout.value
        if vout.kind != "ok":
            return self.finish(self.record(rnd, cell, status="unsupported" if vout.kind == "unsupported" else "failed",
                                             reason=f"variant build: {vout.reason}"), progress)
        variant = vout.value
        cell = cell.replace(method=variant.method)
        feeds = art.feeds(cell.batch_size, self.evaluation(cell.model))
        progress.start(f"{cell.cell_id} (round {rnd + 1}/{self.rounds})" if self.rounds > 1 else cell.cell_id)
        log = self.logs / (cell.cell_id.replace("/", "_") + ".log")
        out = run_in_worker("effbench.execution.tasks:measure_cell",
                            {"cell": cell, "variant": variant, "artifact": art.to_json(), "feeds": feeds,
                             "budget": self.budget, "runner_options": {}, "overhead_ns": self.overhead},
                            timeout_s=self.timeout_s, log_path=log, memory_limit_mb=self.memory_limit_mb)
        if out.kind == "user_error":
            raise out.value
        fig: dict[str, Any] = {"variant": _variant_section(variant, cell.runner), "model_stats": self._work(variant, art, cell)}
        if out.kind == "ok":
            res = out.value
            fig["variant"] = fig["variant"].replace(runtime=res["session"])
            record = self.record(
                rnd, cell, status="ok", reason=None, **fig,
                latency_ms=Latency.from_json({**res["latency_ms"], "ci_scope": SCOPE_ONE_MOMENT}),
                samples_ms=tuple(res["samples_ms"]), throughput_ips=res["throughput_ips"],
                memory=Memory.from_json({**res["memory"], "model_bytes": variant.model_bytes(runner_side(cell.runner))}),
                paired_ratios=(paired["ratio"],) if paired and paired.get("ratio") else (), comparison=comparison,
                comparisons=comparisons or {})
            record = self._with_energy_and_projections(record, res["energy"], res.get("energy_reason"))
            record = record.replace(quality=_quality(self.figures.quality(cell, art, variant, progress)))
        else:
            record = self.record(rnd, cell, status="unsupported" if out.kind == "unsupported" else "failed",
                                  reason=out.reason, **fig)
        return self.finish(self._hooked(record, variant, art), progress)

    def do_group(self, rnd: int, cells: list[Cell], progress: Progress, alone: bool = False) -> list[Record]:
        """One round of one group: build what is missing, the variants' own workers once per run
        (memory, energy counters, quality), then one worker timing every variant and batch size of the
        group interleaved; one record per cell, each non-FP32 one with its paired speedup vs FP32.
        Offline and server groups run their scenario's worker (`effbench.scenarios.plan.load_plan`); `alone`: a
        cell of one measured by itself after its group's worker failed, so a failure is its record."""
        first = cells[0]
        if self.suite.model(first.model).generates or runner_side(first.runner) == "llm":
            return self.generation.do_group(rnd, cells, progress)  # a decoder LLM, or a runner only they use
        art = self.artifacts[first.model]
        if isinstance(art, Outcome):
            return [self.finish(self.record(rnd, cell, reason=f"model could not be prepared: {art.reason}"), progress)
                    for cell in cells]
        records, ready = self._ready(rnd, cells, art, progress)
        if not ready:
            return records
        variants, members = self._members(first, ready, art, progress)
        out, what = self._time_group(rnd, first, members, variants, art, progress)
        if out.kind == "user_error":
            raise out.value
        if out.kind != "ok" and (alone or (first.scenario != SINGLE_STREAM and len(ready) == 1)):
            return records + [self.finish(self.record(rnd, c, status="unsupported" if out.kind == "unsupported"
                                                      else "failed", reason=out.reason), progress) for c, _ in ready]
        if out.kind != "ok":  # a crash of one variant must not cost the others: measure each alone
            return records + self._each_alone(rnd, ready, f"{what} round {rnd + 1}", out, progress)
        return records + [self.finish(self._hooked(self._group_record(rnd, cell, variant, art, out.value), variant, art),
                                      progress) for cell, variant in ready]

    def _ready(self, rnd: int, cells: list[Cell], art, progress: Progress) -> tuple[list[Record], list[tuple[Cell, Variant]]]:
        """The group's cells with their built variants, and the records of those that cannot be measured
        (a variant that cannot be built; a cell that broke a worker in an earlier round)."""
        records, ready = [], []
        for cell in cells:
            if cell.cell_id in self.broken:  # it crashed or hung a worker in an earlier round
                why = f"{self.broken[cell.cell_id]} (in an earlier round of this run; not run again)"
                records.append(self.finish(self.record(rnd, cell, reason=why), progress))
                continue
            vout = self.built_variant(art, cell.model, cell.variant, progress)
            if vout.kind == "user_error":
                raise vout.value
            if vout.kind != "ok":
                records.append(self.finish(self.record(
                    rnd, cell, status="unsupported" if vout.kind == "unsupported" else "failed",
                    reason=f"variant build: {vout.reason}"), progress))
                continue
            ready.append((cell, vout.value))
        return records, ready

    def _members(self, first: Cell, ready: list[tuple[Cell, Variant]], art,
                 progress: Progress) -> tuple[dict[str, Variant], list[dict]]:
        """What the group's worker times: each cell, and the FP32 twin of every batch size even when it is
        not to be recorded (--only, --resume, or a suite without fp32): a speedup needs both sides in the
        same worker. The variants' own workers (memory, energy, quality) run here, FP32's first."""
        batches = sorted({c.batch_size for c, _ in ready})
        variants = {c.variant: v for c, v in ready}
        ref = self.built_variant(art, first.model, FP32, progress)
        if ref.kind == "ok":
            variants.setdefault(FP32, ref.value)
        members = [{"key": member_key(c.variant, c.batch_size), "label": c.variant, "batch_size": c.batch_size,
                    "reference": member_key(FP32, c.batch_size) if c.variant != FP32 else None} for c, _ in ready]
        have = {m["key"] for m in members}
        if ref.kind == "ok":
            members += [{"key": member_key(FP32, b), "label": FP32, "batch_size": b} for b in batches
                        if member_key(FP32, b) not in have and fp32_id(first.replace(batch_size=b)) not in self.broken]
        self.cross.measure_baselines(first, art, progress)  # compare:'s baselines write theirs first
        for label in sorted(variants, key=lambda x: x != FP32):  # FP32's quality pass writes the reference
            self.figures.measure(first, label, variants[label], art, progress)
        return variants, members

    def _time_group(self, rnd: int, first: Cell, members: list[dict], variants: dict[str, Variant], art,
                    progress: Progress) -> tuple[Outcome, str]:
        """The group's one worker for this round (its scenario's: `load_plan`), every member interleaved."""
        plan = load_plan(self.suite.scenario(first.scenario), self.budget, self.timeout_s, self.opts.quick)
        batches = sorted({m["batch_size"] for m in members})
        sizes = sorted({k for b in batches for k in plan.sizes(first.scenario, b)})
        feeds = {str(b): art.feeds(b, self.evaluation(first.model)) for b in sizes}
        cross: dict = {}
        if plan.loop and self.cross.asked:  # other runners' or models' FP32 sessions timed beside the group's
            members, variants, feeds, cross = self.cross.extend(rnd, first, members, variants, feeds, art, progress)
        what = f"{first.model}/*/{first.runner_label}/{first.scenario}"
        contention = self.suite.spec.measure.contention
        wait_s = min(contention.wait_s, 2.0) if self.opts.quick else contention.wait_s
        if self.competitor_stayed:       # it outlasted a full wait already: check it is still there, no more
            wait_s = min(wait_s, 1.0)
        if plan.loop:  # the paired loop's worker waits out a competitor or runs with the cores it leaves
            cross = {**cross, "contention": {"wait_s": wait_s, "fewer_threads": contention.fewer_threads}}
        progress.start(f"{what}: {len(members)} cells interleaved" +
                       (f" (round {rnd + 1}/{self.rounds})" if self.rounds > 1 else ""))
        out = run_in_worker(plan.target,
                            {"group": first, "members": members, "variants": variants, "artifact": art.to_json(),
                             "feeds": feeds, "budget": self.budget, "seed": group_seed(self.run_id, rnd, what),
                             "load_reversed": rnd % 2 == 1, **plan.payload(self.overhead), **cross,
                             **({} if not plan.logs else {"log_dir": str(
                                 self.opts.out_dir / "loadgen" / f"{first.model}_{first.runner_label}_{first.scenario}"
                                 / f"round-{rnd}")})},
                            timeout_s=plan.timeout_s_per_member * len(members) + (wait_s if plan.loop else 0),
                            log_path=self.logs / f"{first.model}_{first.runner_label}_{first.scenario}.log",
                            memory_limit_mb=self.memory_limit_mb)
        if out.kind == "ok" and (out.value.get("sentinel") or {}).get("action") in ("fewer threads", "kept threads"):
            self.competitor_stayed = True      # the wait did not help: the next groups do not repeat it in full
        return out, what

    def _each_alone(self, rnd: int, ready: list[tuple[Cell, Variant]], what: str, out: Outcome,
                    progress: Progress) -> list[Record]:
        why = f"the group's interleaved worker {out.kind}: {out.reason}; measured alone, so not paired"
        progress.warn(f"warning: {what}: {why}")
        records = []
        for cell, _ in ready:
            rec = self.do_cell(rnd, cell, progress, comparisons=self.cross.unpaired(cell, why),
                               comparison=None if cell.variant == FP32 else unpaired_comparison(cell, why))
            if rec.status == "failed":  # later rounds leave it out, so the others are paired again
                self.broken[cell.cell_id] = rec.reason or "failed"
            records.append(rec)
        return records

    def _group_record(self, rnd: int, cell: Cell, variant: Variant, art, res: dict) -> Record:
        """One cell's record from its group worker's answer (`res`), with its paired speedup vs FP32."""
        m = res["members"][member_key(cell.variant, cell.batch_size)]
        cell = cell.replace(method=variant.method)
        side = runner_side(cell.runner)
        fig = {"variant": variant.record_section(side), "model_stats": self._work(variant, art, cell)}
        if m["status"] != "ok":
            return self.record(rnd, cell, status=m["status"], reason=m["reason"], **fig)
        prof = self.figures.of(cell)
        fp32 = res["members"].get(member_key(FP32, cell.batch_size))
        memory, measured, why = self.figures.for_record(prof, cell, variant)
        record = self.record(
            rnd, cell, status="ok", reason=None,
            variant=fig["variant"].replace(runtime=_with_placement(m["session"], prof)),
            model_stats=fig["model_stats"],
            # merging rounds widens the CI to one over rounds
            latency_ms=Latency.from_json({**m["latency_ms"], "ci_scope": SCOPE_ONE_MOMENT}),
            samples_ms=tuple(m["samples_ms"]), throughput_ips=m["throughput_ips"], drift=drift_section(res["sentinel"]),
            comparison=(None if cell.variant == FP32 else unpaired_comparison(cell, m["unpaired"])
                        if m.get("unpaired") else paired_comparison(cell, variant, m, fp32)),
            memory=Memory.from_json(memory) if memory else None, quality=_quality((prof or {}).get("quality")),
            **sections(m))
        record = self.cross.complete(record, variant, res, m, rnd, loop=cell.scenario == SINGLE_STREAM)
        return self._with_energy_and_projections(record, measured, why)

    def record(self, rnd: int, cell: Cell, *, status: str = "failed", **fields: Any) -> Record:
        """A record of this run for one round of `cell` (failed unless `status` says otherwise). Its reason names
        files in the variant cache by their cache-relative name and the suite's by the path the user gave."""
        if fields.get("reason"):
            fields["reason"] = short_paths(fields["reason"], [(self.opts.cache_dir, "<cache>"),
                                                              (self.suite.base_dir, "")])
        return Record(cell_id=cell.cell_id, config_hash=self.hashes.get(cell.cell_id) or self.suite.config_hash(cell),
                      status=status, cell=cell, round=rnd, rounds=self.rounds, provenance=self.provenance, **fields)

    def _with_energy_and_projections(self, record: Record, measured: dict | None, why: str | None) -> Record:
        if record.cell.scenario == SERVER:  # its latencies include queueing: no per-inference time to project
            return record.replace(energy=Energy(reason="not given for the server scenario: its latencies include "
                                                       "queueing (see the single-stream and offline cells)"))
        if measured:
            # the model is checked where a counter exists: its figure stored beside the measured one
            modeled = self._modeled_energy(record, None)
            energy = Energy.from_json(measured)
            if modeled.j_per_inference is not None and energy.j_per_inference:
                energy = energy.replace(modeled_j_per_inference=modeled.j_per_inference,
                                        modeled_over_measured=modeled.j_per_inference / energy.j_per_inference,
                                        modeled_source=modeled.source)
            elif modeled.reason:
                energy = energy.replace(modeled_source=None, extra={**energy.extra, "modeled_reason": modeled.reason})
            record = record.replace(energy=energy)
        else:
            record = record.replace(energy=self._modeled_energy(record, why))
        if self.profiles:
            from effbench.devices import project_record
            record = record.replace(projections=project_record(record, self.profiles))
        return record

    def _hooked(self, record: Record, variant: Variant, art) -> Record:
        """Each hook sees the finished record and may return a replacement (records are immutable)."""
        for hook in self.hooks:
            record = hook(record, variant=variant, artifact=art, suite=self.suite,
                          cache_dir=self.opts.cache_dir) or record
        return record

    def pair_pass(self, rnd: int, cell: Cell, other: SuiteRun, other_cell: Cell, progress: Progress) -> dict | None:
        """A/B mode: `other`'s variant of the cell (the baseline) and this run's, timed in alternating
        blocks in one worker. None (the gate then uses the two workers' round medians) when either side
        cannot be built or the pass fails; its log says why."""
        sides = []
        for r, c in ((other, other_cell), (self, cell)):
            art = r.artifacts[c.model]
            if isinstance(art, Outcome):
                return None
            vout = r.built_variant(art, c.model, c.variant, progress)
            if vout.kind != "ok":
                return None
            sides.append({"variant": vout.value, "artifact": art.to_json(),
                          "feeds": art.feeds(c.batch_size, r.evaluation(c.model))})
        progress.start(f"{cell.cell_id} paired A/B blocks (round {rnd + 1}/{self.rounds})")
        out = run_in_worker("effbench.execution.tasks:measure_pair",
                            {"cell": cell, "sides": sides, "budget": self.budget,
                             "load_reversed": rnd % 2 == 1},
                            timeout_s=self.timeout_s, log_path=self.logs / (cell.cell_id.replace("/", "_") + "-ab.log"),
                            memory_limit_mb=self.memory_limit_mb)
        if out.kind != "ok":
            progress.warn(f"warning: {cell.cell_id} round {rnd + 1}: paired A/B pass {out.kind}: {out.reason}; the "
                          "gate uses the two workers' round medians for this cell")
            return None
        return out.value

    def built_variant(self, art, model: str, label: str, progress: Progress) -> Outcome:
        """The built variant (cached per run); fp32 is built even when the suite does not list it,
        because every other variant's quality is scored against it."""
        from effbench.config.suite import PrecisionChoice
        key = (model, label)
        if key not in self.variants:
            try:
                choice = self.suite.choice(label)
            except StopIteration:
                choice = PrecisionChoice(label=FP32, precision=FP32, method=None)
            self.variants[key] = self._build_choice(art, model, choice, progress, self.datasets.get(model))
        return self.variants[key]

    def _work(self, variant: Variant, art, cell: Cell) -> ModelStats:
        return self.work.of(variant, art, cell)

    def _modeled_energy(self, record: Record, why_not_measured: str | None) -> Energy:
        return modeled_energy(record, self.profiles, why_not_measured)

    def finish(self, record: Record, progress: Progress) -> Record:
        """Store a finished record and show it (from any thread)."""
        with self.write_lock:
            self.store.append(record)
            progress.advance(record_line(record))
        return record



def _variant_section(variant: Variant, runner: str) -> VariantInfo:
    return variant.record_section(runner_side(runner))


def _quality(figures: dict | None) -> Quality | None:
    return Quality.from_json(figures) if figures else None


def _with_placement(info: dict, prof: dict | None) -> dict:
    """The session's info with the variant's node placement (from its own worker) where it was read."""
    placement = (prof or {}).get("placement")
    return {**info, "placement": placement} if placement else info

