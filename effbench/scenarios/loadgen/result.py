"""One LoadGen run's figures, every one read from its own logs (`LoadGenResult`, `TokenFigures`)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from effbench.scenarios.loadgen.settings import MULTI_STREAM, SERVER, SINGLE_STREAM, LoadGenSettings, percentile_key


# ------------------------------------------------------------------------------ result
@dataclass(frozen=True)
class TokenFigures:
    """Token latencies as LoadGen reports them with `use_token_latencies` (ms; percentile keys 'p50'...)."""

    tokens_per_s: float | None                 # offline: tokens/s; server: completed; single-stream: w/ overhead
    ttft_ms: Mapping[str, float]               # min, max, mean, p50 ... p99.9
    tpot_ms: Mapping[str, float]
    ttft_early_stopping: tuple[str, ...]
    tpot_early_stopping: tuple[str, ...]
    ttft_met: bool | None                      # server: TTFT at the percentile within ttft_ms (None elsewhere)
    tpot_met: bool | None

    def to_json(self) -> dict:
        return {"tokens_per_s": self.tokens_per_s, "ttft_ms": dict(self.ttft_ms), "tpot_ms": dict(self.tpot_ms),
                "ttft_early_stopping": list(self.ttft_early_stopping),
                "tpot_early_stopping": list(self.tpot_early_stopping),
                "ttft_met": self.ttft_met, "tpot_met": self.tpot_met}

    @classmethod
    def from_json(cls, d: Mapping) -> TokenFigures:
        return cls(d["tokens_per_s"], dict(d["ttft_ms"]), dict(d["tpot_ms"]), tuple(d["ttft_early_stopping"]),
                   tuple(d["tpot_early_stopping"]), d["ttft_met"], d["tpot_met"])


@dataclass(frozen=True)
class LoadGenResult:
    """One LoadGen run, every figure read from its `mlperf_log_summary.txt` (and `mlperf_log_detail.txt`
    for the version, counts, errors and multi-stream's per-sample latencies).

    `latency_ms` is per sample, except multi-stream where it is per query (8 samples), as LoadGen's
    summary reports it; `sample_latency_ms` is per sample in every scenario."""

    scenario: str
    valid: bool                                 # "Result is : VALID"
    constraints: Mapping[str, bool]             # "Min duration satisfied": True, ...
    recommendations: tuple[str, ...]
    samples_per_s: float | None                 # offline: "Samples per second"
    completed_qps: float | None                 # server: "Completed samples per second"
    scheduled_qps: float | None                 # server: "Scheduled samples per second"
    qps_with_overhead: float | None             # single-stream: "QPS w/ loadgen overhead"
    qps_without_overhead: float | None          # single-stream: "QPS w/o loadgen overhead"
    target_percentile: float                    # percent
    target_percentile_ms: float | None          # single/multi-stream: LoadGen's headline percentile
    latency_ms: Mapping[str, float]
    sample_latency_ms: Mapping[str, float]
    early_stopping: tuple[str, ...]             # LoadGen's early-stopping lines, as written
    early_stopping_ms: Mapping[str, float]      # single/multi-stream estimates: {"p90": ..., "p99": ...}
    queries: int | None                         # queries issued
    overlatency_queries: int | None             # server: samples over the bound
    tokens: TokenFigures | None
    settings: LoadGenSettings
    effective: Mapping[str, str]                # the summary's "Test Parameters Used", as written
    loadgen_version: str
    threads: int
    qsl_samples: int
    performance_samples: int
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    summary_path: str
    detail_path: str
    detail_trimmed: str | None                  # how the detail log was trimmed; None: kept whole

    @property
    def early_stopping_met(self) -> bool | None:
        return self.constraints.get("Early stopping satisfied")

    @property
    def percentile_ms(self) -> float | None:
        """The latency at the target percentile, as LoadGen sorted it (sorted[n * p])."""
        return self.latency_ms.get(percentile_key(self.target_percentile), self.target_percentile_ms)

    @property
    def generator(self) -> str:
        """The label a report puts beside a scenario figure."""
        s = self.settings
        rate = f", {s.target_qps:g} qps offered" if self.scenario == SERVER else ""
        bound = (f", p{s.target_percentile:g} TTFT <= {s.ttft_ms:g} ms, TPOT <= {s.tpot_ms:g} ms"
                 if s.use_token_latencies and self.scenario == SERVER else
                 f", p{s.target_percentile:g} <= {s.latency_bound_ms:g} ms" if self.scenario == SERVER else
                 f", queries of {s.samples_per_query} samples, p{s.target_percentile:g}"
                 if self.scenario == MULTI_STREAM else
                 f", p{s.target_percentile:g}" if self.scenario == SINGLE_STREAM else "")
        cap = f", max {s.max_duration_ms} ms" if s.max_duration_ms else ""
        return (f"LoadGen {self.loadgen_version} ({self.scenario}{rate}{bound}, min {s.min_duration_ms} ms / "
                f"{s.min_query_count} queries{cap}, {self.threads} SUT threads): MLPerf-style, not an MLPerf result")

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["settings"] = self.settings.to_json()
        d["tokens"] = self.tokens.to_json() if self.tokens else None
        for k in ("constraints", "latency_ms", "sample_latency_ms", "early_stopping_ms", "effective"):
            d[k] = dict(d[k])
        for k in ("recommendations", "early_stopping", "errors", "warnings"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> LoadGenResult:
        kw = dict(d)
        kw["settings"] = LoadGenSettings.from_json(d["settings"])
        kw["tokens"] = TokenFigures.from_json(d["tokens"]) if d.get("tokens") else None
        for k in ("recommendations", "early_stopping", "errors", "warnings"):
            kw[k] = tuple(d[k])
        return cls(**kw)
