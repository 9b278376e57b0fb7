"""The four scenarios through MLPerf LoadGen: a system-under-test around a runner's pre-bound timed calls,
LoadGen run in PerformanceOnly mode, and every figure parsed from LoadGen's own summary and detail logs.

MLPerf-style runs, never MLPerf results: no audit, no accuracy run, no submission checker. The peak-rate
search (`find_max_qps`) drives server runs at candidate rates and lets LoadGen judge each one.
"""
from __future__ import annotations

import gc
import json
import math
import re
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

Call = Callable[[], object]
# A generative request: called with a zero-argument callback that the generator calls once, when its first
# output token exists; returns the number of tokens it produced (the first included, at least 2: LoadGen
# computes TPOT = (latency - TTFT) / (n_tokens - 1) and rejects 0 or 1).
Generate = Callable[[Callable[[], None]], int]

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
_RUN_LOCK = threading.Lock()  # LoadGen's logger is process-global: one test at a time


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
        return self.latency_ms.get(_pkey(self.target_percentile), self.target_percentile_ms)

    @property
    def generator(self) -> str:
        """The label a report puts beside a scenario figure."""
        s = self.settings
        rate = f", {s.target_qps:g} qps offered" if self.scenario == SERVER else ""
        bound = (f", p{s.target_percentile:g} TTFT <= {s.ttft_ms:g} ms, TPOT <= {s.tpot_ms:g} ms"
                 if s.use_token_latencies and self.scenario == SERVER else
                 f", p{s.target_percentile:g} <= {s.latency_bound_ms:g} ms" if self.scenario == SERVER else "")
        return (f"LoadGen {self.loadgen_version} ({self.scenario}{rate}{bound}, min {s.min_duration_ms} ms / "
                f"{s.min_query_count} queries, {self.threads} SUT threads): MLPerf-style, not an MLPerf result")

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


class SUTError(RuntimeError):
    """A call raised inside the SUT. Its samples were still completed (LoadGen waits for every sample, so
    a worker that stopped would hang the test); the run's figures mean nothing and none are returned."""


# ------------------------------------------------------------------------------ the SUT
class _PoolSUT:
    """LoadGen's SUT: `issue_query` queues the samples; `threads` workers each take up to the largest
    bound batch of queued samples, run the call bound for the smallest batch size that holds them (a
    remainder is padded up, as a dynamic batcher does) and complete them with `QuerySamplesComplete`.
    Offline's one query of N samples becomes N / batch calls taken by whichever worker is free; a server
    worker takes what has arrived, waiting up to `max_wait_ms` after the first for more (0: no wait).

    Why `threads` workers, matched to the runner's threads: a call blocks in native code with the GIL
    released and runs its parallel sections on the runtime's intra-op pool of `threads` (one pool per
    session, shared by concurrent calls on it). With one worker, a query that arrives while a call runs
    waits even when that call leaves cores idle (batch-1 calls of small models rarely use every core);
    with more workers than the runtime has threads, extra calls only queue inside the runtime and contend
    for the same cores. `threads` workers let as many queries be in service at once as the cell has cores.
    Single-stream has one sample outstanding at a time, so there the pool size does not matter."""

    def __init__(self, calls: Sequence[Mapping[int, Call]], generate: Generate | None, threads: int,
                 max_wait_ms: float = 0.0) -> None:
        import mlperf_loadgen as lg
        self._lg = lg
        self._calls = [dict(c) for c in calls]
        self._sizes = sorted(self._calls[0]) if self._calls else [1]
        self._max_batch = 1 if generate is not None else self._sizes[-1]
        self._wait_s = max_wait_ms / 1e3
        self._generate = generate
        self._pending: deque[int] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self.error: str | None = None
        self._workers = [threading.Thread(target=self._work, args=(i,), name=f"effbench-sut-{i}", daemon=True)
                         for i in range(threads)]

    def start(self) -> None:
        for w in self._workers:
            w.start()

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        for w in self._workers:
            w.join()

    def issue_query(self, samples) -> None:  # LoadGen's issue thread, holding the GIL: return quickly
        with self._cv:
            self._pending.extend(s.id for s in samples)
            self._cv.notify(len(samples))

    def flush_queries(self) -> None:
        pass

    def _take(self) -> list[int] | None:
        with self._cv:
            while not self._pending and not self._closing:
                self._cv.wait()
            if not self._pending:
                return None
            if self._wait_s and len(self._pending) < self._max_batch:
                deadline = time.perf_counter() + self._wait_s
                while len(self._pending) < self._max_batch and not self._closing:
                    left = deadline - time.perf_counter()
                    if left <= 0 or not self._pending:
                        break
                    self._cv.wait(left)
                if not self._pending:  # another worker took them while this one waited
                    return []
            k = min(len(self._pending), self._max_batch)
            return [self._pending.popleft() for _ in range(k)]

    def _work(self, index: int) -> None:
        lg = self._lg
        calls = self._calls[index % len(self._calls)] if self._calls else {}
        while (ids := self._take()) is not None:
            if not ids:
                continue
            try:
                if self._generate is None:
                    calls[min(s for s in self._sizes if s >= len(ids))]()
                    lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])
                else:
                    (qid,) = ids
                    first_token, reported = _first_token_reporter(lg, qid)
                    n = int(self._generate(first_token))
                    if not reported():
                        raise RuntimeError("the generator returned without reporting its first token")
                    lg.QuerySamplesComplete([lg.QuerySampleResponse(qid, 0, 0, n)])
            except Exception:  # noqa: BLE001 - raised as SUTError after the test; LoadGen must see every sample end
                if self.error is None:
                    self.error = traceback.format_exc()
                lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0, 2) for i in ids])


def _first_token_reporter(lg, qid: int) -> tuple[Callable[[], None], Callable[[], bool]]:
    """The callback a generator calls at its first token (LoadGen's `FirstTokenComplete`, timed by LoadGen
    when called; later calls are ignored), and whether it was called."""
    done = [False]

    def first_token() -> None:
        if not done[0]:
            done[0] = True
            lg.FirstTokenComplete([lg.QuerySampleResponse(qid, 0, 0)])
    return first_token, lambda: done[0]


# ------------------------------------------------------------------------------ running
def run_loadgen(calls: Mapping[int, Call] | Sequence[Mapping[int, Call]], settings: LoadGenSettings,
                out_dir: str | Path, *, qsl_samples: int, performance_samples: int | None = None, threads: int = 1,
                max_wait_ms: float = 0.0, warmup_calls: int = 2,
                max_detail_bytes: int = DETAIL_LOG_LIMIT_BYTES) -> LoadGenResult:
    """Run LoadGen once over `calls` (batch size -> the runner's pre-bound timed call; one call processes
    one batch) and parse its logs, which stay in `out_dir`.

    `qsl_samples`: the model's evaluation inputs (the QSL's total count); `performance_samples`: how many
    of them the worker holds in memory (LoadGen's performance sample count; default all). The calls are
    bound to their inputs already, so a sample's index does not choose the data it runs on. `threads`:
    the SUT's workers, matched to the runner's threads (see `_PoolSUT`); `calls` may instead be one
    mapping per stream (a session each: worker i uses `calls[i % len(calls)]`); `max_wait_ms`: how long
    a worker holding fewer samples than its largest batch waits for more. Each call runs `warmup_calls`
    times first; when the settings leave offline's expected rate or the streams' expected latency open,
    the fastest warmup call sets it (they only size the queries LoadGen generates)."""
    if settings.use_token_latencies:
        raise ValueError("token latencies need a generator: use run_loadgen_tokens")
    streams = [calls] if isinstance(calls, Mapping) else list(calls)
    if not streams or not all(streams) or any(sorted(c) != sorted(streams[0]) for c in streams):
        raise ValueError("calls: one mapping of batch size -> call (or one per stream, with the same sizes)")
    fastest_s = _warm_up([kv for c in streams for kv in c.items()], warmup_calls, lambda c: c())
    return _run(_PoolSUT(streams, None, threads, max_wait_ms), _resolved(settings, fastest_s, threads), out_dir,
                qsl_samples, performance_samples, threads, max_detail_bytes)


def run_loadgen_tokens(generate: Generate, settings: LoadGenSettings, out_dir: str | Path, *, qsl_samples: int,
                       performance_samples: int | None = None, threads: int = 1, warmup_calls: int = 1,
                       max_detail_bytes: int = DETAIL_LOG_LIMIT_BYTES) -> LoadGenResult:
    """`run_loadgen` for generative requests with LoadGen's token latencies: one request per worker at a
    time; its first token is reported with `FirstTokenComplete`, its end with `QuerySamplesComplete`
    carrying the token count. LoadGen computes TTFT, TPOT = (latency - TTFT) / (n - 1) and, in the server
    scenario, checks TTFT and TPOT at the percentile against `ttft_ms` and `tpot_ms`."""
    if not settings.use_token_latencies:
        raise ValueError("run_loadgen_tokens needs settings with use_token_latencies=True")
    fastest_s = _warm_up([(1, generate)], warmup_calls, lambda g: g(lambda: None))
    return _run(_PoolSUT([], generate, threads), _resolved(settings, fastest_s, threads), out_dir,
                qsl_samples, performance_samples, threads, max_detail_bytes)


def _warm_up(items: Sequence[tuple[int, object]], n: int, run: Callable) -> dict[int, float]:
    """Run each item `n` times; batch size -> its fastest call in seconds."""
    fastest: dict[int, float] = {}
    for size, item in items:
        for _ in range(n):
            t0 = time.perf_counter()
            run(item)
            dt = time.perf_counter() - t0
            fastest[size] = min(dt, fastest.get(size, dt))
    return fastest


def _resolved(s: LoadGenSettings, fastest_s: Mapping[int, float], threads: int) -> LoadGenSettings:
    """Fill in the expected rate or latency LoadGen sizes its queries by, from the fastest warmup calls:
    too high a rate / too low a latency only makes LoadGen generate queries it never issues; the other
    way round ends the run short of its minimum duration (INVALID)."""
    need_qps = s.scenario == OFFLINE and s.expected_qps is None
    need_lat = s.scenario in (SINGLE_STREAM, MULTI_STREAM) and s.expected_latency_ms is None
    if not (need_qps or need_lat):
        return s
    if not fastest_s:
        raise ValueError(f"{s.scenario}: give expected_qps / expected_latency_ms, or warmup_calls > 0")
    big = max(fastest_s)
    per_sample = max(fastest_s[big] / big, 1e-9)   # at the largest batch: the least time per sample
    if need_qps:
        cap = MAX_OFFLINE_SAMPLES / (1.1 * max(s.min_duration_ms, 1) / 1e3)
        return replace(s, expected_qps=float(f"{min(threads / per_sample, cap):.4g}"))
    per_query = fastest_s[min(fastest_s)] if s.scenario == SINGLE_STREAM else per_sample * s.samples_per_query
    return replace(s, expected_latency_ms=float(f"{max(per_query * 1e3, 1e-3):.4g}"))


def _run(sut: _PoolSUT, settings: LoadGenSettings, out_dir: str | Path, qsl_samples: int,
         performance_samples: int | None, threads: int, max_detail_bytes: int) -> LoadGenResult:
    import mlperf_loadgen as lg
    if qsl_samples < 1 or threads < 1:
        raise ValueError("qsl_samples and threads must be >= 1")
    perf = qsl_samples if performance_samples is None else performance_samples
    if not 1 <= perf <= qsl_samples:
        raise ValueError(f"performance_samples {perf}: expected 1..{qsl_samples}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # LoadGen reads TestSettings overrides from an audit.config it finds (default: in the working
    # directory): point it at a path in our folder, and refuse one that is there.
    audit = out / "audit.config"
    if audit.exists():
        raise ValueError(f"{audit}: LoadGen would override the settings from it; remove it")
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        (out / name).unlink(missing_ok=True)
    log = lg.LogSettings()
    log.log_output.outdir = str(out)
    log.log_output.copy_summary_to_stdout = False
    log.log_output.copy_detail_to_stdout = False
    log.enable_trace = False
    ts = settings.test_settings()
    with _RUN_LOCK:
        lg_sut = lg.ConstructSUT(sut.issue_query, sut.flush_queries)
        qsl = lg.ConstructQSL(qsl_samples, perf, lambda _: None, lambda _: None)
        old_switch = sys.getswitchinterval()
        gc_was_enabled = gc.isenabled()
        sut.start()
        try:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            gc.disable()  # a collection in the SUT's threads is noise from the harness, not the model
            lg.StartTestWithLogSettings(lg_sut, qsl, ts, log, str(audit))
        finally:
            if gc_was_enabled:
                gc.enable()
            sys.setswitchinterval(old_switch)
            sut.close()
            lg.DestroyQSL(qsl)
            lg.DestroySUT(lg_sut)
    if sut.error:
        raise SUTError(f"a call failed inside the SUT during the LoadGen run:\n{sut.error}")
    summary, detail = out / "mlperf_log_summary.txt", out / "mlperf_log_detail.txt"
    if not summary.exists() or not detail.exists():
        raise RuntimeError(f"LoadGen wrote no logs to {out} (it returns silently when it cannot open them)")
    return parse_logs(summary, detail, settings, threads=threads, qsl_samples=qsl_samples,
                      performance_samples=perf, max_detail_bytes=max_detail_bytes)


# ------------------------------------------------------------------------------ parsing
_RULE = re.compile(r"^=+$")
_KV = re.compile(r"^\s*(?P<key>[^:]+?)\s*:\s*(?P<value>.*?)\s*$")
_PCT = re.compile(r"^(?P<p>\d+(?:\.\d+)?)(?:th)? percentile (?P<what>.*?) ?\(ns\)$")
_ES_ESTIMATE = re.compile(r"Early stopping (?P<p>\d+(?:\.\d+)?)th percentile estimate: (?P<ns>\d+)")
_BLOCKS = ("Recommendations:", "Early Stopping Result:", "TTFT Early Stopping Result:",
           "TPOT Early Stopping Result:")


def _pkey(percent: float) -> str:
    return f"p{float(percent):g}"


def _num(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


@dataclass
class _Summary:
    results: dict[str, str] = field(default_factory=dict)     # the first section
    stats: dict[str, str] = field(default_factory=dict)       # "Additional Stats"
    per_query: dict[str, str] = field(default_factory=dict)   # multi-stream's "Per-query latency" block
    params: dict[str, str] = field(default_factory=dict)      # "Test Parameters Used"
    blocks: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)            # "No warnings encountered during test." ...


def read_summary(path: str | Path) -> _Summary:
    """`mlperf_log_summary.txt` split into its sections; values kept as LoadGen wrote them."""
    out = _Summary()
    lines = Path(path).read_text().splitlines()
    section, block, target = "", None, out.results
    i = 0
    while i < len(lines):
        line = lines[i]
        if _RULE.match(line.strip()) and i + 2 < len(lines) and _RULE.match(lines[i + 2].strip()):
            section, block = lines[i + 1].strip(), None
            target = {"Additional Stats": out.stats, "Test Parameters Used": out.params}.get(section, out.results)
            i += 3
            continue
        i += 1
        stripped = line.strip()
        if stripped in _BLOCKS:
            block = stripped.rstrip(":")
            out.blocks[block] = []
            continue
        if block is not None:
            if stripped and (line.startswith(" ") or stripped.startswith("*")):
                out.blocks[block].append(stripped)
                continue
            block = None
        if not stripped:
            continue
        if stripped.startswith("Per-query latency"):
            target = out.per_query
            continue
        if "encountered" in stripped and section == "Test Parameters Used":
            out.notes.append(stripped)
            continue
        m = _KV.match(line)
        if m:
            target[m["key"]] = m["value"]
    return out


def read_detail(path: str | Path) -> tuple[dict[str, object], list[str], list[str]]:
    """`mlperf_log_detail.txt`'s `:::MLLOG` lines: key -> value (the last one logged), errors, warnings."""
    values: dict[str, object] = {}
    errors: list[str] = []
    warnings: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith(":::MLLOG "):
                continue
            try:
                rec = json.loads(line[len(":::MLLOG "):])
            except json.JSONDecodeError:
                continue
            key, value, meta = rec.get("key"), rec.get("value"), rec.get("metadata") or {}
            values[key] = value
            if meta.get("is_error"):
                errors.append(f"{key}: {value}")
            elif meta.get("is_warning"):
                warnings.append(f"{key}: {value}")
    return values, errors, warnings


def _latencies(block: Mapping[str, str], what: str = "latency") -> dict[str, float]:
    """min / max / mean and pNN from a summary block, ns -> ms."""
    out: dict[str, float] = {}
    for key, value in block.items():
        v = _num(value)
        if v is None or not key.endswith("(ns)"):
            continue
        for stat in ("Min", "Max", "Mean"):
            if key == f"{stat} {what} (ns)":
                out[stat.lower()] = v / 1e6
        m = _PCT.match(key)
        if m and m["what"] == what:
            out[_pkey(float(m["p"]))] = v / 1e6
    return out


def _yes(v: str | None) -> bool | None:
    return None if v is None else v.strip().lower() == "yes"


def parse_logs(summary_path: str | Path, detail_path: str | Path, settings: LoadGenSettings, *, threads: int,
               qsl_samples: int, performance_samples: int,
               max_detail_bytes: int = DETAIL_LOG_LIMIT_BYTES) -> LoadGenResult:
    """A `LoadGenResult` from LoadGen's two logs; then the detail log is trimmed if it exceeds
    `max_detail_bytes` (`trim_detail_log`)."""
    s = read_summary(summary_path)
    detail, errors, warnings = read_detail(detail_path)
    verdict = s.results.get("Result is")
    if verdict not in ("VALID", "INVALID"):
        raise RuntimeError(f"{summary_path}: no 'Result is' line (LoadGen ended before summarising?)")
    if detail.get("result_validity") not in (None, verdict):
        raise RuntimeError(f"{summary_path} says {verdict}, {detail_path} says {detail['result_validity']}")
    constraints = {k: _yes(s.results[k]) for k in ("Performance constraints satisfied", "Min duration satisfied",
                                                    "Min queries satisfied", "Early stopping satisfied")
                   if k in s.results}
    recs = tuple(s.blocks.get("Recommendations", ()))
    head_pct = next((k for k in s.results if _PCT.match(k) and _PCT.match(k)["what"] == "latency"), None)
    latency = _latencies(s.per_query if s.per_query else s.stats)
    if s.per_query:  # multi-stream: the summary's block is per query; per sample lives in the detail log
        sample_latency = {}
        for key, v in detail.items():
            m = re.fullmatch(r"result_(\d+\.\d+)_percentile_latency_ns", key)
            if m and isinstance(v, (int, float)):
                sample_latency[_pkey(float(m[1]))] = v / 1e6
        for stat in ("min", "max", "mean"):
            v = detail.get(f"result_{stat}_latency_ns")
            if isinstance(v, (int, float)):
                sample_latency[stat] = v / 1e6
    else:
        sample_latency = dict(latency)
    es_key = "TTFT Early Stopping Result" if settings.use_token_latencies else "Early Stopping Result"
    es_lines = tuple(s.blocks.get(es_key, ()))
    es_ms = {_pkey(float(m["p"])): int(m["ns"]) / 1e6 for m in map(_ES_ESTIMATE.search, es_lines) if m}
    tokens = None
    if settings.use_token_latencies:
        server = settings.scenario == SERVER
        perf_ok = constraints.get("Performance constraints satisfied")
        tps = (s.results.get("Completed tokens per second") or s.results.get("Tokens per second")
               or s.stats.get("TPS w/ loadgen overhead"))
        tokens = TokenFigures(
            tokens_per_s=_num(tps) if tps else None,
            ttft_ms=_latencies(s.stats, "first token latency") | {
                k: v for k, v in _latencies(s.stats, "First Token latency").items() if k in ("min", "max", "mean")},
            tpot_ms=_latencies(s.stats, "time to output token") | {
                k: v for k, v in _latencies(s.stats, "Time per Output Token").items() if k in ("min", "max", "mean")},
            ttft_early_stopping=es_lines, tpot_early_stopping=tuple(s.blocks.get("TPOT Early Stopping Result", ())),
            ttft_met=(perf_ok or not any("TTFT constrain not met" in r for r in recs)) if server else None,
            tpot_met=(perf_ok or not any("TPOT constrain not met" in r for r in recs)) if server else None)
    summary_path, detail_path = Path(summary_path), Path(detail_path)
    trimmed = trim_detail_log(detail_path, max_detail_bytes)
    queries = detail.get("result_query_count")
    over = detail.get("result_overlatency_query_count")
    return LoadGenResult(
        scenario=settings.scenario, valid=verdict == "VALID", constraints=constraints, recommendations=recs,
        samples_per_s=_num(s.results.get("Samples per second", "")),
        completed_qps=_num(s.results.get("Completed samples per second", "")),
        scheduled_qps=_num(s.stats.get("Scheduled samples per second", "")),
        qps_with_overhead=_num(s.stats.get("QPS w/ loadgen overhead", "")),
        qps_without_overhead=_num(s.stats.get("QPS w/o loadgen overhead", "")),
        target_percentile=settings.target_percentile,
        target_percentile_ms=(_num(s.results[head_pct]) or 0) / 1e6 if head_pct else None,
        latency_ms=latency, sample_latency_ms=sample_latency, early_stopping=es_lines, early_stopping_ms=es_ms,
        queries=int(queries) if isinstance(queries, (int, float)) else None,
        overlatency_queries=int(over) if isinstance(over, (int, float)) else None,
        tokens=tokens, settings=settings, effective=dict(s.params),
        loadgen_version=str(detail.get("loadgen_version") or _installed_version()),
        threads=threads, qsl_samples=qsl_samples, performance_samples=performance_samples,
        errors=tuple(errors), warnings=tuple(warnings), summary_path=str(summary_path),
        detail_path=str(detail_path), detail_trimmed=trimmed)


def _installed_version() -> str:
    from importlib.metadata import version
    return version("mlcommons-loadgen")


def trim_detail_log(path: str | Path, max_bytes: int = DETAIL_LOG_LIMIT_BYTES, *, max_line_chars: int = 4000,
                    max_per_key: int = 20) -> str | None:
    """Trim a detail log over `max_bytes` in place, after it was parsed: a key logged more than
    `max_per_key` times (one error per query, say) keeps its first `max_per_key` lines, a line longer
    than `max_line_chars` (`loaded_qsl_set` lists every loaded sample index) is cut there. What was left
    out is said in one `# effbench:` line at the end (LoadGen's log parsers read `:::MLLOG` lines only)
    and returned; None when the log was small enough to keep whole."""
    path = Path(path)
    if path.stat().st_size <= max_bytes:
        return None
    seen: dict[str, int] = {}
    dropped: dict[str, int] = {}
    cut = 0
    tmp = path.with_suffix(".trimming")
    with open(path, encoding="utf-8", errors="replace") as src, open(tmp, "w", encoding="utf-8") as dst:
        for line in src:
            m = re.match(r':::MLLOG \{"key": "([^"]*)"', line)
            key = m[1] if m else ""
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > max_per_key:
                dropped[key] = dropped.get(key, 0) + 1
                continue
            if len(line) > max_line_chars:
                line = line[:max_line_chars] + f" ...[{len(line) - max_line_chars} chars cut]\n"
                cut += 1
            dst.write(line)
        note = (f"trimmed from {path.stat().st_size} bytes: "
                + ", ".join([f"{n} more '{k}' lines dropped" for k, n in dropped.items()]
                            + ([f"{cut} lines cut at {max_line_chars} chars"] if cut else [])))
        dst.write(f"# effbench: {note}\n")
    tmp.replace(path)
    return note


# ------------------------------------------------------------------------------ the server search
BRACKET_FACTOR = 2.0       # LoadGen's FindPeakPerformance doubles (server_find_peak_qps_boundary_step_size = 1)
SEARCH_PRECISION = 0.05    # relative: one run costs seconds to minutes, LoadGen's decimal precision is absolute
VERIFY_FACTOR = 1.3        # after bisecting, one run here shows the bound really breaks above the peak
RESUMES = 2                # a VALID verification run resumes the search above it, at most this often


@dataclass(frozen=True)
class RateSearch:
    """The highest offered rate LoadGen called VALID, and every run of the search in the order run."""

    runs: tuple[LoadGenResult, ...]
    best: LoadGenResult | None
    ended: str

    @property
    def max_qps(self) -> float | None:
        return self.best.settings.target_qps if self.best else None

    def rates(self) -> list[dict]:
        """Per rate tried (in order): LoadGen's verdict, its early-stopping lines, the percentile's latency."""
        return [{"qps": r.settings.target_qps, "valid": r.valid, "constraints": dict(r.constraints),
                 "percentile_ms": r.percentile_ms, "completed_qps": r.completed_qps,
                 "early_stopping": list(r.early_stopping), "early_stopping_met": r.early_stopping_met,
                 "recommendations": list(r.recommendations), "summary_path": r.summary_path}
                for r in self.runs]

    def to_json(self) -> dict:
        return {"max_qps": self.max_qps, "ended": self.ended, "rates": self.rates(),
                "best": self.best.to_json() if self.best else None}


def find_max_qps(run_at: Callable[[float], LoadGenResult], start_qps: float, *, min_qps: float, budget_s: float,
                 precision: float = SEARCH_PRECISION, verify_factor: float | None = VERIFY_FACTOR,
                 max_runs: int = 40, clock: Callable[[], float] = time.monotonic) -> RateSearch:
    """The search of `scenarios.load.find_peak`, with LoadGen judging each rate: `run_at(qps)` runs LoadGen's
    server scenario at that rate and its VALID / INVALID decides. Widen x2 from `start_qps` until a rate is
    INVALID (halving down to `min_qps` when the first is), bisect until the VALID and INVALID rates agree
    to `precision`, then one run at `verify_factor` x the peak; a VALID one there resumes the search above
    it (a stalled machine only ever adds latency, so a pass above a failure outweighs it). Stops where
    `budget_s` runs out (checked before each run) and says so in `ended`."""
    runs: list[LoadGenResult] = []
    end = clock() + budget_s

    def run(q: float) -> LoadGenResult:
        r = run_at(float(f"{q:.6g}"))
        runs.append(r)
        return r

    def time_left() -> bool:
        return clock() < end and len(runs) < max_runs

    def qps(r: LoadGenResult) -> float:
        return float(r.settings.target_qps or 0)

    lo: LoadGenResult | None = None
    hi: LoadGenResult | None = None
    first = run(start_qps)
    if first.valid:
        lo = first
        while time_left():
            r = run(qps(lo) * BRACKET_FACTOR)
            if not r.valid:
                hi = r
                break
            lo = r
    else:
        hi = first
        while time_left() and qps(hi) / BRACKET_FACTOR >= min_qps:
            r = run(qps(hi) / BRACKET_FACTOR)
            if r.valid:
                lo = r
                break
            hi = r
    if lo is None:
        return RateSearch(tuple(runs), None, f"LoadGen found no rate VALID down to {qps(hi):.4g} qps"
                          if time_left() else "time budget spent before any rate was VALID")
    ended, resumed = "", 0
    for _ in range(1 + RESUMES):
        if hi is None:
            return RateSearch(tuple(runs), lo, "time budget spent while widening the bracket: the peak is higher")
        while (qps(hi) - qps(lo)) / qps(lo) > precision:
            if not time_left():
                return RateSearch(tuple(runs), lo, f"time budget spent: bracket [{qps(lo):.4g}, {qps(hi):.4g}] qps")
            r = run((qps(lo) + qps(hi)) / 2)
            if r.valid:
                lo = r
            else:
                hi = r
        ended = f"bisected to {precision:.0%}"
        if not verify_factor or not time_left():
            break
        target = verify_factor * qps(lo)
        r = next((x for x in runs if abs(qps(x) / target - 1) < 0.02), None) or run(target)
        if not r.valid:
            ended += f"; at {verify_factor:g}x the peak LoadGen said INVALID"
            break
        lo, resumed = r, resumed + 1
        above = [x for x in runs if not x.valid and qps(x) > qps(lo)]
        hi = min(above, key=qps) if above else None
        while hi is None and time_left():
            x = run(qps(lo) * BRACKET_FACTOR)
            if x.valid:
                lo = x
            else:
                hi = x
        ended = f"VALID at {verify_factor:g}x the peak {resumed}x: searched on above it"
    return RateSearch(tuple(runs), lo, ended)


def rate_dir(out_dir: str | Path, qps: float) -> Path:
    """The folder of one server run of a search: `<out_dir>/qps-<rate>`."""
    return Path(out_dir) / f"qps-{qps:.6g}"


def server_runner(calls: Mapping[int, Call] | Sequence[Mapping[int, Call]], base: LoadGenSettings,
                  out_dir: str | Path, *, qsl_samples: int, performance_samples: int | None = None,
                  threads: int = 1, max_wait_ms: float = 0.0, backlog_factor: float | None = 10.0,
                  warmup_calls: int = 1) -> Callable[[float], LoadGenResult]:
    """`run_at(qps)` for `find_max_qps`: one LoadGen server run per rate, each in its own folder.

    `backlog_factor`: caps LoadGen's outstanding queries (server_max_async_queries) at that many times the
    queries in flight a run within the bound holds (Little's law: rate x bound), at least 100. LoadGen
    ends a run that exceeds it early (INVALID, the reason in its log) instead of draining a backlog that
    grows for the whole run: at 10x the rate a call can serve, a 10 s run would drain for 90 s more."""
    def run_at(qps: float) -> LoadGenResult:
        s = replace(base, scenario=SERVER, target_qps=qps)
        if backlog_factor:
            bound = (s.ttft_ms if s.use_token_latencies else s.latency_bound_ms) or 0
            s = replace(s, max_async_queries=max(100, math.ceil(backlog_factor * qps * bound / 1e3)))
        return run_loadgen(calls, s, rate_dir(out_dir, qps), qsl_samples=qsl_samples,
                           performance_samples=performance_samples, threads=threads, max_wait_ms=max_wait_ms,
                           warmup_calls=warmup_calls)
    return run_at
