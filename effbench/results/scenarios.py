"""The record's scenario sections: single-stream's and multi-stream's LoadGen runs, offline, server and
generation (a decoder LLM's per-token figures). `effbench.results.record` re-exports them; a new scenario's
section goes here (docs/architecture.md)."""
from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar

from effbench.results.schema import Section, section


@section
class LoadGenLatency(Section):
    """What single-stream's and multi-stream's LoadGen sections share: LoadGen's latency at `percentile`
    (its headline), the early-stopping estimate, the verdict, per round and merged over rounds. ms throughout.
    Not a section of its own in the record."""

    NAME: ClassVar[str] = "loadgen_latency"
    percentile: float = 90.0
    percentile_ms: float | None = None
    ci: tuple[float, float] | None = None
    ci_level: float | None = None
    ci_scope: str | None = None
    ci_method: str | None = None
    round_percentile_ms: tuple[float, ...] = ()
    p50_ms: float | None = None
    mean_ms: float | None = None
    early_stopping_ms: float | None = None
    early_stopping_met: bool | None = None
    verdict: str | None = None            # "VALID" / "INVALID"
    round_verdicts: tuple[str, ...] = ()
    queries: int | None = None            # issued by LoadGen (summed over rounds or runs)
    unstable: bool = False
    loadgen: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@section
class SingleStream(LoadGenLatency):
    """Single-stream through MLPerf LoadGen (SingleStream: one sample per query, the next issued when it
    completes), one run per batch-1 cell and round beside the paired timing loop. Every figure is read from
    LoadGen's summary log (`loadgen.summary`); ms throughout.

    - percentile_ms: LoadGen's headline (its "90.0th percentile latency (ns)" line); median over rounds
      once merged, with `ci` over rounds; round_percentile_ms: each round's
    - early_stopping_ms: LoadGen's early-stopping estimate at `percentile`; early_stopping_estimates_ms:
      every estimate its summary gives ("p90", "p99")
    - verdict: LoadGen's "Result is" (VALID / INVALID); merged: VALID only if every round was
    - reason: why this cell has no LoadGen run (a batch above 1: LoadGen's query is one sample)
    - loadgen: version, settings, seeds, SUT threads, the logs (relative to the output folder)
    """

    NAME: ClassVar[str] = "single_stream"
    p99_ms: float | None = None
    early_stopping_estimates_ms: dict[str, float] = field(default_factory=dict)
    qps_without_loadgen_overhead: float | None = None
    reason: str | None = None


@section
class MultiStream(LoadGenLatency):
    """The multi-stream scenario through MLPerf LoadGen (MultiStream): one query of `samples_per_query`
    samples at a time, the next issued when it completes; the figure is LoadGen's latency of queries at
    `percentile` (99: MLPerf's), with its early stopping. ms throughout.

    - each round runs `runs` LoadGen tests per variant, alternated with FP32's cycle by cycle (so the
      speedup vs FP32 is paired per cycle); percentile_ms, p50_ms, mean_ms and early_stopping_ms (LoadGen's
      early-stopping estimate at the percentile) come from the summary of the round's median run (the run
      whose percentile latency is the median of the round's; `loadgen.runs` keeps every run's figures and
      verdict); once merged, percentile_ms is the median over rounds with `ci` over rounds
    - calls_per_query: how a query ran: calls of `batch_size` samples (N / batch of them, a remainder call
      for the rest); a batch above N runs one call padded up to it
    - verdict: VALID only if LoadGen called every run VALID (`runs_valid` of `runs`)
    """

    NAME: ClassVar[str] = "multi_stream"
    samples_per_query: int = 8
    percentile: float = 99.0
    runs: int | None = None
    runs_valid: int | None = None
    batch_size: int | None = None
    calls_per_query: int | None = None
    samples_per_s: float | None = None    # samples_per_query over LoadGen's mean query latency


@section
class Offline(Section):
    """The offline scenario: a pool of `queries`, all available at once, worked through at the cell's batch
    size by `streams` sessions; samples per second over whole passes, with a CI over rounds once merged."""

    NAME: ClassVar[str] = "offline"
    samples_per_s: float | None = None
    ci: tuple[float, float] | None = None
    ci_level: float | None = None
    ci_scope: str | None = None
    ci_method: str | None = None
    queries: int | None = None
    batch_size: int | None = None
    streams: int = 1
    passes: int | None = None
    elapsed_s: float | None = None
    round_samples_per_s: tuple[float, ...] = ()
    unstable: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@section
class Server(Section):
    """The server scenario: Poisson arrivals, latency from each query's scheduled arrival, and the highest
    offered rate (`max_qps`) whose latency at `percentile` stayed within `latency_bound_ms`.

    - percentile_ms / p99_ms / p50_ms: measured at max_qps; curve: (offered qps, latency at the
      percentile) of every probe of the search; probes: each probe's figures
    - early_stopping: LoadGen's check of the max_qps probe (overlatency queries, the queries needed)
    - max_qps_ci: over rounds once merged (each round a fresh worker and its own arrival schedule)
    """

    NAME: ClassVar[str] = "server"
    max_qps: float | None = None
    max_qps_ci: tuple[float, float] | None = None
    ci_level: float | None = None
    ci_scope: str | None = None
    ci_method: str | None = None
    round_max_qps: tuple[float, ...] = ()
    latency_bound_ms: float
    percentile: float = 99.0
    percentile_ms: float | None = None
    p99_ms: float | None = None
    p50_ms: float | None = None
    achieved_qps: float | None = None
    queries: int | None = None
    max_batch: int = 1
    max_wait_ms: float = 0.0
    service_ms: float | None = None       # one query alone, measured before the search
    early_stopping: dict[str, Any] | None = None
    curve: tuple[tuple[float, float], ...] = ()
    probes: list[dict[str, Any]] = field(default_factory=list)
    search: str | None = None             # how the search ended
    reason: str | None = None             # why there is no max_qps
    unstable: bool = False
    # a generative cell (MLPerf's LLM form): latency_bound_ms is the TTFT bound and percentile_ms the TTFT
    # at the percentile (LoadGen's first-token latency from the scheduled arrival), tpot_bound_ms the TPOT
    # bound at the same percentile; tokens: LoadGen's TTFT / TPOT figures at max_qps (or the lowest rate)
    tpot_bound_ms: float | None = None
    tokens: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@section
class Generation(Section):
    """A generative cell (decoder LLM, one request at a time): per-request figures from per-token stamps,
    each the median over a round's requests, then the median over rounds with a CI over rounds
    (`*_ci`, `round_values`); ITL percentiles pooled over a round's tokens (merged: median over rounds).

    - kernel: what the precision ran as on this runtime (weight-only or weight-and-activation, compute, KV type)
    - kv_cache_bytes_analytic: 2 x layers x KV heads x head dim x kv_context_tokens x bytes per element;
      kv_cache_bytes_measured: what the runtime held (kv_measured says how)
    - bandwidth_utilization: decode tokens/s / (bandwidth_bytes_per_s / decode_bytes_per_token)
    - speedup_vs_fp32: metric -> a `comparison` section (paired in one worker, CI over rounds)
    - quality: teacher-forced against FP32 on held text (agreement, mean KL, perplexity for real weights)
    """

    NAME: ClassVar[str] = "generation"
    prompt_tokens: int
    new_tokens: int
    requests: int | None = None
    ttft_ms: float | None = None
    ttft_ms_ci: tuple[float, float] | None = None
    tpot_ms: float | None = None
    tpot_ms_ci: tuple[float, float] | None = None
    e2e_ms: float | None = None
    e2e_ms_ci: tuple[float, float] | None = None
    prefill_tokens_per_s: float | None = None
    prefill_tokens_per_s_ci: tuple[float, float] | None = None
    decode_tokens_per_s: float | None = None
    decode_tokens_per_s_ci: tuple[float, float] | None = None
    itl_ms: dict[str, float] = field(default_factory=dict)
    ci_scope: str | None = None
    ci_method: str | None = None
    round_values: dict[str, list[Any]] = field(default_factory=dict)
    kv_cache_bytes_analytic: int | None = None
    kv_cache_bytes_measured: int | None = None
    kv_measured: str | None = None
    kv_context_tokens: int | None = None
    weight_bytes: int | None = None
    decode_bytes_per_token: int | None = None
    bandwidth_bytes_per_s: float | None = None
    bandwidth_method: str | None = None
    bandwidth_utilization: float | None = None
    kernel: dict[str, Any] = field(default_factory=dict)
    speedup_vs_fp32: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] | None = None
    j_per_output_token: float | None = None
    j_per_prompt_token: float | None = None
    energy_source: str | None = None
    energy_reason: str | None = None
    threads: int | None = None
    reference: str | None = None          # what FP32 is for this model (a dequantised GGUF is not the original)
    prompt: str | None = None             # where the prompt's token ids come from
    # the work the device projections use (counted from the model's shape): the prompt's MACs, one decode
    # step's at the decode's mean context, and the decoder layers
    prefill_macs: int | None = None
    decode_macs_per_token: int | None = None
    layers: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
