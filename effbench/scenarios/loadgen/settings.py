"""What one LoadGen run is asked for (`LoadGenSettings`, mapped onto `TestSettings`), the scenarios and
MLPerf's seeds."""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields

Call = Callable[[], object]
# A generative request: called with a zero-argument callback that the generator calls once, when its first
# output token exists; returns the number of tokens it produced (the first included, at least 2: LoadGen
# computes TPOT = (latency - TTFT) / (n_tokens - 1) and rejects 0 or 1).
Generate = Callable[[Callable[[], None]], int]
# Several generative requests decoded together: called with one first-token callback per request (up to the
# run's max_batch), returns each request's token count, in order.
GenerateBatch = Callable[[list[Callable[[], None]]], list[int]]

SINGLE_STREAM, MULTI_STREAM, OFFLINE, SERVER = "single-stream", "multi-stream", "offline", "server"
SCENARIOS = (SINGLE_STREAM, MULTI_STREAM, OFFLINE, SERVER)
_LG_SCENARIO = {SINGLE_STREAM: "SingleStream", MULTI_STREAM: "MultiStream", OFFLINE: "Offline", SERVER: "Server"}
# MLPerf's target percentiles per scenario (loadgen/mlperf.conf: SingleStream 90, MultiStream 99, Server 99).
DEFAULT_PERCENTILE = {SINGLE_STREAM: 90.0, MULTI_STREAM: 99.0, OFFLINE: 90.0, SERVER: 99.0}
# The seeds of the round this LoadGen belongs to (mlcommons/inference loadgen/mlperf.conf at 6.0.17,
# `*.*.qsl_rng_seed` etc.): fixed so that two runs draw the same samples and the same Poisson schedule.
MLPERF_SEEDS = {"qsl_rng_seed": 2085463073848966840, "sample_index_rng_seed": 2747215439041700203,
                "schedule_rng_seed": 16159082839903944936}
# Detail logs above this size are trimmed after parsing (`trim_detail_log`); a run that logs one error per
# query can write hundreds of MB.
DETAIL_LOG_LIMIT_BYTES = 1 << 20
# LoadGen holds per-sample metadata for the one offline query; an estimated expected rate never asks it
# for more samples than this (a no-op call would otherwise ask for tens of millions).
MAX_OFFLINE_SAMPLES = 2_000_000
# LoadGen's issue thread needs the GIL to hand a query to the Python SUT; with the default 5 ms switch
# interval a worker running Python code delays the issue, and LoadGen counts the delay (its latencies run
# from the scheduled time). Same reasoning as `scenarios.load` for the hand-written generator.
SWITCH_INTERVAL_S = 0.0005
RUN_LOCK = threading.Lock()  # LoadGen's logger is process-global: one test at a time


# ------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class LoadGenSettings:
    """What one LoadGen run is asked for, in the suite's units (ms, percent); `test_settings()` maps it
    onto `mlperf_loadgen.TestSettings`. LoadGen's early stopping is always part of its verdict for
    single-stream, multi-stream and server (6.0.17 has no switch), so there is no field for it."""

    scenario: str
    target_qps: float | None = None            # server: the offered Poisson rate
    latency_bound_ms: float | None = None      # server: the bound on the percentile's latency
    percentile: float | None = None            # target percentile in percent; None: MLPerf's for the scenario
    expected_qps: float | None = None          # offline: sizes its one query; None: estimated from warmup
    expected_latency_ms: float | None = None   # single/multi-stream: sizes the queries generated; None: warmup
    samples_per_query: int = 8                 # multi-stream: LoadGen's query of 8 contiguous samples
    min_duration_ms: int = 10_000
    min_query_count: int = 100
    max_duration_ms: int = 0                   # 0: no cap
    max_query_count: int = 0                   # 0: no cap
    max_async_queries: int = 0                 # server: LoadGen ends the run once more are outstanding (0: never)
    qsl_rng_seed: int = MLPERF_SEEDS["qsl_rng_seed"]
    sample_index_rng_seed: int = MLPERF_SEEDS["sample_index_rng_seed"]
    schedule_rng_seed: int = MLPERF_SEEDS["schedule_rng_seed"]
    use_token_latencies: bool = False
    ttft_ms: float | None = None               # server with token latencies: bound on TTFT at the percentile
    tpot_ms: float | None = None               # server with token latencies: bound on TPOT at the percentile

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario {self.scenario!r}: expected one of {', '.join(SCENARIOS)}")
        if self.scenario == SERVER:
            if not self.target_qps or self.target_qps <= 0:
                raise ValueError("server: target_qps must be > 0")
            if self.use_token_latencies:
                if not (self.ttft_ms and self.tpot_ms):
                    raise ValueError("server with token latencies: ttft_ms and tpot_ms are required")
            elif not self.latency_bound_ms or self.latency_bound_ms <= 0:
                raise ValueError("server: latency_bound_ms must be > 0")
        if self.percentile is not None and not 0 < self.percentile < 100:
            raise ValueError(f"percentile {self.percentile}: expected a percent in (0, 100)")
        for name in ("expected_qps", "expected_latency_ms"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.samples_per_query < 1 or self.min_duration_ms < 0 or self.min_query_count < 1:
            raise ValueError("samples_per_query and min_query_count must be >= 1, min_duration_ms >= 0")

    @property
    def target_percentile(self) -> float:
        return self.percentile if self.percentile is not None else DEFAULT_PERCENTILE[self.scenario]

    @property
    def seeds(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in MLPERF_SEEDS}

    def test_settings(self):
        """The `mlperf_loadgen.TestSettings` for this run, PerformanceOnly."""
        import mlperf_loadgen as lg
        ts = lg.TestSettings()
        ts.scenario = getattr(lg.TestScenario, _LG_SCENARIO[self.scenario])
        ts.mode = lg.TestMode.PerformanceOnly
        p = self.target_percentile / 100
        ts.single_stream_target_latency_percentile = p
        ts.multi_stream_target_latency_percentile = p
        ts.server_target_latency_percentile = p
        ts.multi_stream_samples_per_query = self.samples_per_query
        if self.expected_latency_ms:
            ts.single_stream_expected_latency_ns = int(self.expected_latency_ms * 1e6)
            ts.multi_stream_expected_latency_ns = int(self.expected_latency_ms * 1e6)
        if self.expected_qps:
            ts.offline_expected_qps = float(self.expected_qps)
        if self.target_qps:
            ts.server_target_qps = float(self.target_qps)
        bound_ms = self.ttft_ms if self.use_token_latencies else self.latency_bound_ms
        if bound_ms:
            # with token latencies LoadGen still counts "overlatency" queries against this one (results.cc)
            ts.server_target_latency_ns = int(bound_ms * 1e6)
        ts.server_max_async_queries = self.max_async_queries
        ts.min_duration_ms = self.min_duration_ms
        ts.min_query_count = self.min_query_count
        ts.max_duration_ms = self.max_duration_ms
        ts.max_query_count = self.max_query_count
        for k, v in self.seeds.items():
            setattr(ts, k, v)
        ts.use_token_latencies = self.use_token_latencies
        if self.use_token_latencies and self.ttft_ms and self.tpot_ms:
            ts.ttft_latency = int(self.ttft_ms * 1e6)
            ts.tpot_latency = int(self.tpot_ms * 1e6)
        return ts

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> LoadGenSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def percentile_key(percent: float) -> str:
    return f"p{float(percent):g}"
