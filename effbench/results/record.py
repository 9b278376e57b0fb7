"""The result record and its sections as frozen dataclasses, with the one `to_json`/`from_json` pair that
the store, the workers, the reporter, the projections and the gate share. Imports nothing heavy.

The machinery (typed reading, unknown keys kept in `extra`) is `results/schema.py`; the scenarios'
sections (offline, server, generation) are `results/scenarios.py`, re-exported here.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Any, ClassVar

from effbench.results.scenarios import Generation, MultiStream, Offline, Server, SingleStream
from effbench.results.schema import Section, section

SCHEMA = "effbench.result/1"
STATUSES = ("ok", "unsupported", "failed")

__all__ = ["SCHEMA", "STATUSES", "Cell", "Comparison", "Drift", "Energy", "Generation", "Latency", "Memory",
           "ModelStats", "Offline", "Projection", "Provenance", "Quality", "Record", "Section", "Server",
           "VariantInfo", "section"]

@section
class Cell(Section):
    """One thing to measure: model x variant x runner x batch size x scenario."""

    NAME: ClassVar[str] = "cell"
    model: str
    variant: str          # the precision label, e.g. "int8-static"
    precision: str
    method: str | None = None
    runner: str
    runner_label: str
    threads: int | None = None
    compile: bool = False
    # the runner's typed suite options that differ from its defaults (`runners.runner_options`); part of the
    # cell's identity through `runner_label`
    runner_options: dict[str, Any] = field(default_factory=dict, hash=False)
    batch_size: int
    scenario: str = "single-stream"
    device: str = "cpu"
    # the device profile whose fleet node measured it (`effbench run --ray`, effbench.fleet.run); None: where
    # the run's parent is. Part of the cell's identity: its id ends in "@<device>".
    measured_on: str | None = None
    # a generative cell (task: generate): its prompt length, which takes the batch size's place in the id
    prompt_tokens: int | None = None

    @property
    def cell_id(self) -> str:
        at = f"@{self.measured_on}" if self.measured_on else ""
        size = f"p{self.prompt_tokens}" if self.prompt_tokens else f"b{self.batch_size}"
        return f"{self.model}/{self.variant}/{self.runner_label}/{size}/{self.scenario}{at}"

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.device == "cpu":
            out.pop("device")  # stores from before GPU cells have no device: cpu is the default
        if self.measured_on is None:
            out.pop("measured_on")  # nor a fleet node: the config hashes of local cells stay as they were
        if not self.runner_options:
            out.pop("runner_options")  # nor runner options: the same
        if self.prompt_tokens is None:
            out.pop("prompt_tokens")  # nor a prompt: classifier cells' hashes stay as they were
        return out


@section
class VariantInfo(Section):
    """The variant as built: its label and precision, how it was built, its size, the runner's session."""

    NAME: ClassVar[str] = "variant"
    label: str | None = None
    precision: str | None = None
    method: str | None = None
    build: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] | None = None   # the runner session's own description (providers, placement)
    size_bytes: int | None = None
    weight_bytes: int | None = None
    params: int | None = None
    weight_bits: float | None = None
    compression_vs_fp32: float | None = None
    emulated: bool = False
    # pruned variants (variants.prune): the zeros per layer and overall, their sparse storage size and
    # `sparse_kernels: false` (the dense kernels ran) ...
    sparsity: dict[str, Any] | None = None
    # ... and what pruning did: method, amount, layers cut (channels before and after), what it left whole and why
    pruning: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@section
class ModelStats(Section):
    """The work and the size of one inference at the cell's batch (FLOPs counter, docs/measurement.md)."""

    NAME: ClassVar[str] = "model_stats"
    params: int | None = None
    size_bytes: int | None = None
    weight_bytes: int | None = None
    weight_bits: float | None = None
    activation_bits: int | None = None
    activation_bytes: int | None = None
    batch_size: int | None = None
    macs: int | None = None
    effective_macs: int | None = None     # MACs on non-zero weights (fewer than macs in a pruned graph)
    flops: int | None = None
    bops: int | None = None
    bytes_moved: int | None = None
    elementwise_ops: int | None = None
    nodes: int | None = None
    counted_on: str | None = None
    by_op: dict[str, Any] = field(default_factory=dict)
    uncounted_ops: dict[str, Any] = field(default_factory=dict)
    conventions: dict[str, Any] = field(default_factory=dict)
    # [[class, macs, weight bytes, activation bytes, count], ...]: the node-by-node roofline's input
    node_work: list[list[Any]] = field(default_factory=list)
    error: str | None = None              # why the work could not be counted
    extra: dict[str, Any] = field(default_factory=dict)


@section
class Latency(Section):
    """Latency statistics in milliseconds; over rounds once merged (`ci_scope` says which)."""

    NAME: ClassVar[str] = "latency_ms"
    median: float
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    p90: float | None = None
    p99: float | None = None
    p90_reliable: bool = False
    p99_reliable: bool = False
    # MLPerf LoadGen's early-stopping estimates (None below 64 / 662 per-call samples)
    p90_early_stopping: float | None = None
    p99_early_stopping: float | None = None
    iqr: float | None = None
    iqr_ratio: float | None = None
    n: int | None = None
    calls: int | None = None
    block_size: int = 1
    timing: str = "per-call"
    outliers: int | None = None
    first_call: float | None = None
    elapsed_s: float | None = None
    ci: tuple[float, float] | None = None
    ci_level: float | None = None
    ci_scope: str | None = None
    ci_method: str | None = None
    rel_ci_halfwidth: float | None = None
    within_round_ci: tuple[float, float] | None = None
    unstable: bool = False
    unstable_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@section
class Memory(Section):
    """Peak memory of the variant's own worker, and the GPU's where the cell ran on one."""

    NAME: ClassVar[str] = "memory"
    baseline_rss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    model_bytes: int | None = None
    measured: str | None = None
    gpu_used_bytes: int | None = None
    gpu_used_over_start_bytes: int | None = None
    gpu_used_note: str | None = None
    torch_cuda_max_allocated_bytes: int | None = None
    reason: str | None = None             # why memory was not measured
    extra: dict[str, Any] = field(default_factory=dict)


@section
class Energy(Section):
    """Energy per inference: measured (RAPL, NVML) or modeled from a profile, with its source."""

    NAME: ClassVar[str] = "energy"
    source: str | None = None
    j_per_inference: float | None = None
    avg_power_w: float | None = None
    inferences_per_j: float | None = None
    mw_per_inference: float | None = None
    dynamic_j_per_inference: float | None = None
    range_j: tuple[float | None, float | None] | None = None
    reason: str | None = None
    breakdown: dict[str, Any] | None = None
    domains: dict[str, Any] | None = None
    idle_w: float | None = None
    window_s: float | None = None
    gross_j_per_inference: float | None = None
    gross_avg_power_w: float | None = None
    # beside a measured figure: what the local profile's energy model says for the same cell
    modeled_j_per_inference: float | None = None
    modeled_over_measured: float | None = None
    modeled_source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return bool(self.source and self.source.startswith("measured"))


@section
class Quality(Section):
    """The task metric on the dataset against FP32's, and the output fidelity."""

    NAME: ClassVar[str] = "quality"
    metric: str | None = None
    value: float | None = None
    fp32_value: float | None = None
    relative: float | None = None
    min_relative: float | None = None
    below_floor: bool | None = None       # null when there is no FP32 value to be below
    fidelity_reason: str | None = None
    samples: int | None = None
    fidelity: dict[str, Any] | None = None
    inputs: str | None = None             # "generated (the model has no dataset)" when it has none
    # the dataset's calibration/evaluation split (seed, sizes): quality is scored on the evaluation part only
    split: dict[str, Any] | None = None
    status: str | None = None             # the quality worker's outcome when it did not finish
    reason: str | None = None
    # against each baseline of the record's `comparisons` (same keys): {"baseline": its cell id, "metric", "value",
    # "baseline_value", "relative", "below_floor", "fidelity" to its FP32 outputs, or "reason"}
    vs_baseline: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@section
class Projection(Section):
    """This cell projected onto one device profile."""

    NAME: ClassVar[str] = "projection"
    status: str = "no-data"
    reason: str | None = None
    label: str | None = None
    precision: str | None = None
    batch_size: int | None = None
    latency_ms: float | None = None
    compute_ms: float | None = None
    memory_ms: float | None = None
    overhead_ms: float | None = None
    bound: str | None = None
    fits: bool | None = None
    shortfall_bytes: float | None = None
    energy_mj: float | None = None
    energy_source: str | None = None
    dynamic_energy_mj: float | None = None
    energy_range_mj: tuple[float | None, float | None] | None = None
    avg_power_w: float | None = None
    measured_latency_ms: float | None = None
    error_pct: float | None = None
    # the prediction interval: latency x the profile's error band (leave-one-out percentiles), and its source
    latency_band_ms: tuple[float, float] | None = None
    band_source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@section
class Comparison(Section):
    """A cell against a baseline cell: the paired speedup (baseline latency / this latency, both timed in one
    worker in alternating blocks) with its CI, or null and a reason. `Record.comparison` is the FP32 twin's;
    `Record.comparisons` those the suite's `compare:` asks for (another runtime's or model's FP32)."""

    NAME: ClassVar[str] = "comparison"
    baseline: str | None = None
    speedup: float | None = None
    ci: tuple[float, float] | None = None
    ci_level: float | None = None
    ci_scope: str | None = None
    ci_method: str | None = None
    rounds: int | None = None
    method: str | None = None
    cycles: int | None = None
    round_speedups: tuple[float, ...] | None = None
    reason: str | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@section
class Drift(Section):
    """The sentinel workload timed before and after the cell's worker, per round."""

    NAME: ClassVar[str] = "drift"
    threshold: float | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    max_abs_change: float | None = None
    flagged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@section
class Provenance(Section):
    """Where and with what the record was made."""

    NAME: ClassVar[str] = "provenance"
    effbench: str | None = None
    python: str | None = None
    packages: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    suite: str | None = None
    suite_sha256: str | None = None
    speed_index: dict[str, Any] | float | None = None
    run_id: str | None = None
    started: str | None = None
    # the fleet node that measured the record (effbench.fleet.run): device, Ray node id, address, attempt
    node: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gpus(self) -> list[dict[str, Any]]:
        return list(self.host.get("gpus") or [])


@section
class Record(Section):
    """One measured cell (or one round of it). A store holds one line per cell and round;
    `effbench.results.store.merge_rounds` combines the rounds. Absent sections are None.

    - paired_ratios: A/B mode only (candidate side): per round, the median over alternating blocks of
      candidate / baseline latency timed in one worker; the gate's per-round ratios when present
    - round_medians_ms: the per-round medians a merged record's CI is over
    - samples_ms: raw samples in time order (maybe thinned)
    - mixed: set where rounds of differing provenance were merged on request (`results.merge`)
    """

    NAME: ClassVar[str] = ""  # its fields are named from the top: "cell.model"
    schema: str = SCHEMA
    cell_id: str
    config_hash: str
    status: str
    reason: str | None = None
    cell: Cell
    round: int = 0
    rounds: int = 1
    variant: VariantInfo | None = None
    model_stats: ModelStats | None = None
    latency_ms: Latency | None = None
    samples_ms: tuple[float, ...] = ()
    round_medians_ms: tuple[float, ...] = ()
    paired_ratios: tuple[float, ...] = ()
    comparison: Comparison | None = None
    # the suite's `compare:` (effbench.config.compare): "runtime:<runner>" / "model:<id>" -> against that FP32 cell
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    drift: Drift | None = None
    throughput_ips: float | None = None
    single_stream: SingleStream | None = None  # single-stream's LoadGen run (results/scenarios.py)
    multi_stream: MultiStream | None = None
    offline: Offline | None = None
    server: Server | None = None
    generation: Generation | None = None
    memory: Memory | None = None
    energy: Energy | None = None
    quality: Quality | None = None
    projections: dict[str, Projection] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    # a merged cell whose rounds came from machines or software that differ, merged because the user asked
    # (--allow-mixed): {provenance field: its values over the rounds}; None: one provenance (older stores too)
    mixed: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if self.status == "ok" and self.latency_ms is None:
            raise ValueError("an ok record needs latency_ms.median")

    @classmethod
    def from_json(cls, d: Any, where: str | None = None) -> Record:
        if not isinstance(d, Mapping) or d.get("schema") != SCHEMA:
            raise ValueError(f"not an {SCHEMA} record")
        return super().from_json(d, where)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        return {"schema": out.pop("schema"), **out}

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def median_ms(self) -> float | None:
        return self.latency_ms.median if self.latency_ms else None

    @property
    def stats(self):
        """The latency statistics rebuilt from the stored raw samples (`LatencyStats`), or None."""
        if not self.samples_ms:
            return None
        from effbench.measure.latency import LatencyStats
        lat = self.latency_ms
        return LatencyStats.from_samples_ms(list(self.samples_ms), timing=lat.timing if lat else "per-call",
                                            block_size=lat.block_size if lat else 1)

    @property
    def unstable(self) -> bool:
        return bool(self.latency_ms and self.latency_ms.unstable)

    @property
    def emulated(self) -> bool:
        return bool(self.variant and self.variant.emulated)

    @property
    def below_floor(self) -> bool:
        return bool(self.quality and self.quality.below_floor)

    @property
    def device(self) -> str:
        return self.cell.device

    @property
    def measured_on(self) -> str | None:
        """The device profile whose fleet node measured this record; None: measured where the run was."""
        return self.cell.measured_on
