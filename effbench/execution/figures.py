"""Each variant's figures from a worker of its own, once per run: peak memory at each batch size,
energy counters and quality, kept for the records of every round (`execution.tasks.profile_variant`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from effbench.config.suite import Cell
from effbench.execution.pairing import FP32, fp32_twin, group_key
from effbench.execution.progress import Progress
from effbench.execution.workers import BUILD_TIMEOUT_S, Outcome, run_in_worker
from effbench.runners import runner_side
from effbench.variants import Variant


class RunState(Protocol):
    """What the variants' own workers read of the run they serve (`execution.run.SuiteRun`)."""

    suite: Any                       # the `Suite`
    opts: Any                        # its `RunOptions`
    todo: list[tuple[int, Cell]]
    datasets: dict[str, Any]        # model -> its DatasetSplit

    def evaluation(self, model: str) -> Any: ...
    logs: Path
    budget: dict
    timeout_s: float
    memory_limit_mb: int | None
    run_id: str
    cross: Any                       # its `CrossPairs` (the suite's compare:)

    def built_variant(self, art: Any, model: str, label: str, progress: Progress) -> Outcome: ...


class VariantFigures:
    """The variants' own workers of one run and what they measured."""

    def __init__(self, run: RunState) -> None:
        self.run = run
        self.measured: dict[tuple, dict] = {}           # (model, variant, runner label) -> its own worker's figures
        self.fp32_quality: dict[tuple, float | None] = {}
        self.quality_cache: dict = {}
        self.memory_given: set[str] = set()

    def of(self, cell: Cell) -> dict | None:
        """What the cell's variant's own worker measured, if it ran."""
        return self.measured.get((cell.model, cell.variant, cell.runner_label))

    def measure(self, cell: Cell, label: str, variant: Variant, art, progress: Progress) -> None:
        """The variant's own worker (memory at each batch size, energy counters, quality), once per run:
        `label`'s variant of `cell`'s group, at every batch size of the group in the plan."""
        key = (cell.model, label, cell.runner_label)
        if key in self.measured:
            return
        batches = sorted({c.batch_size for _, c in self.run.todo if group_key(c) == group_key(cell)})
        feeds = {str(b): art.feeds(b, self.run.evaluation(cell.model)) for b in batches}
        this = cell.replace(variant=label, precision=variant.precision, method=variant.method)
        progress.start(f"memory and quality {cell.model}/{label}/{cell.runner_label}")
        out = self._worker(this, variant, art, feeds, self._quality_payload(this, art))
        if out.kind == "user_error":
            raise out.value
        if out.kind == "failed" and len(batches) > 1:  # a hard crash at one batch size: one worker each
            out = self._per_batch(this, variant, art, feeds, progress)
        if out.kind == "ok":
            prof = out.value
            q = prof.get("quality")
            split = self.run.datasets.get(cell.model)
            if q is not None and split is None and q.get("value") is not None:
                prof["quality"] = {**q, "inputs": "generated (the model has no dataset)"}
            elif q is not None and split is not None:
                prof["quality"] = {**q, "inputs": "the dataset's evaluation part (never calibrated on)",
                                   "split": split.describe()}
        else:
            prof = {"reason": f"the variant's own worker {out.kind}: {out.reason}",
                    "quality": {"metric": None, "value": None, "status": out.kind, "reason": out.reason}}
        self.measured[key] = prof
        if label == FP32:
            self.fp32_quality[(cell.model, cell.runner_label)] = (prof.get("quality") or {}).get("value")

    def _per_batch(self, cell: Cell, variant: Variant, art, feeds: dict, progress: Progress) -> Outcome:
        """Memory batch size by batch size, each in its own worker, after the shared one crashed; quality
        once, in a worker of its own."""
        merged: dict[str, Any] = {"memory": {}, "energy": {}}
        for b, f in feeds.items():
            out = self._worker(cell, variant, art, {b: f}, None, log_suffix=f"-b{b}")
            if out.kind == "ok":
                merged["memory"].update(out.value["memory"])
                merged["energy"].update(out.value["energy"])
            else:
                merged["memory"][b] = {"reason": f"memory not measured: the variant's own worker {out.kind}: {out.reason}"}
        out = self._worker(cell, variant, art, {}, self._quality_payload(cell, art))
        merged["quality"] = (out.value.get("quality") if out.kind == "ok" else
                             {"metric": None, "value": None, "status": out.kind, "reason": out.reason})
        return Outcome("ok", merged)

    def _worker(self, cell: Cell, variant: Variant, art, feeds: dict, quality: dict | None,
                        log_suffix: str = "") -> Outcome:
        """`profile_variant` in a worker: a cell's time per batch size, and one more for quality."""
        return run_in_worker("effbench.execution.tasks:profile_variant",
                             {"cell": cell, "variant": variant, "artifact": art.to_json(), "feeds": feeds,
                              "budget": self.run.budget, "quality": quality},
                             timeout_s=self.run.timeout_s * (len(feeds) + (quality is not None)),
                             log_path=self.run.logs / f"profile-{cell.model}-{cell.variant}-{cell.runner_label}"
                                                      f"{log_suffix}.log",
                             memory_limit_mb=self.run.memory_limit_mb)

    def _quality_payload(self, cell: Cell, art) -> dict:
        q = self.run.suite.spec.quality
        ds = self.run.evaluation(cell.model)  # never the samples a variant was calibrated on
        if ds is not None:
            n = min(len(ds), q.samples) if q.samples else len(ds)
            inputs = {k: v[:n] for k, v in ds.inputs.items()}
            labels = ds.labels[:n] if ds.labels is not None else None
        else:  # no dataset: fidelity to FP32 on seeded generated inputs, and the record says so
            inputs, labels = art.feeds(q.samples or 256, None, seed=1), None
        metric = q.metric or ("top1" if labels is not None else "cosine")
        if metric == "top1" and labels is None:
            raise self.run.suite.error(f"quality metric top1 needs labels, and model '{cell.model}' has no "
                                       "labelled dataset", "quality", "metric",
                                       fix="add a dataset with labels, or use metric: cosine")
        ref = self.reference(cell.model, cell.runner_label)
        ref.parent.mkdir(parents=True, exist_ok=True)
        baselines = self.run.cross.quality_baselines(cell, self.reference)  # compare: other runners' or models' FP32
        return {"inputs": inputs, "labels": labels, "metric": metric, "reference_path": str(ref),
                "min_relative": q.min_relative,
                "fp32_value": None if cell.variant == FP32 else self.fp32_quality.get((cell.model, cell.runner_label)),
                **({"baselines": baselines} if baselines else {})}

    def reference(self, model: str, runner_label: str) -> Path:
        """The file the FP32 quality pass of `model` on that runner writes its outputs to, for the others."""
        return self.run.opts.out_dir / "quality" / f"{model}-{runner_label}-{self.run.run_id}-fp32.npz"

    def for_record(self, prof: dict | None, cell: Cell, variant: Variant) -> tuple[dict | None, dict | None, str | None]:
        """(memory, measured energy, why energy was not measured) of this cell from its variant's own
        worker. Memory goes into the first record of this run for the cell only: it was measured once."""
        b = str(cell.batch_size)
        if prof is None or "memory" not in prof:
            reason = (prof or {}).get("reason", "the variant's own worker did not run")
            return {"reason": f"memory not measured: {reason}"}, None, reason
        energy_b = (prof.get("energy") or {}).get(b) or {}
        memory = None
        if cell.cell_id not in self.memory_given:
            self.memory_given.add(cell.cell_id)
            memory = {**prof["memory"].get(b, {"reason": "memory not measured at this batch size"}),
                      "model_bytes": variant.model_bytes(runner_side(cell.runner))}
        return memory, energy_b.get("measured"), energy_b.get("reason")

    def quality(self, cell: Cell, art, variant: Variant, progress: Progress) -> dict | None:
        """The untimed quality pass of this variant on this runner in a worker of its own, once per run
        (A/B mode and cells measured alone; a normal run does it in the variant's own worker)."""
        key = (cell.model, cell.variant, cell.runner_label)
        if key in self.quality_cache:
            return self.quality_cache[key]
        if cell.variant != FP32 and (cell.model, cell.runner_label) not in self.fp32_quality:
            fp32_out = self.run.built_variant(art, cell.model, FP32, progress)
            if fp32_out.kind == "ok":  # its pass writes the reference outputs the others are scored on
                self.fp32_quality[(cell.model, cell.runner_label)] = \
                    (self.quality(fp32_twin(cell), art, fp32_out.value, progress) or {}).get("value")
        progress.start(f"quality {cell.model}/{cell.variant}/{cell.runner_label}")
        payload = {"cell": cell, "variant": variant, "artifact": art.to_json(),
                   **self._quality_payload(cell, art)}
        out = run_in_worker("effbench.execution.tasks:quality_pass", payload, timeout_s=BUILD_TIMEOUT_S,
                            log_path=self.run.logs / f"quality-{cell.model}-{cell.variant}-{cell.runner_label}.log",
                            memory_limit_mb=self.run.memory_limit_mb)
        if out.kind == "ok":
            result = out.value
            if self.run.evaluation(cell.model) is None:
                result = {**result, "inputs": "generated (the model has no dataset)"}
        elif out.kind == "user_error":
            raise out.value
        else:
            result = {"metric": payload["metric"], "value": None, "status": out.kind, "reason": out.reason}
        self.quality_cache[key] = result
        if cell.variant == FP32:
            self.fp32_quality[(cell.model, cell.runner_label)] = result.get("value")
        return result
