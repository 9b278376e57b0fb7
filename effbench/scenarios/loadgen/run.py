"""The system under test around a runner's pre-bound timed calls, and running LoadGen (PerformanceOnly).

MLPerf-style runs, never MLPerf results: no audit, no accuracy run, no submission checker."""
from __future__ import annotations

import gc
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from effbench.scenarios.loadgen.logs import parse_logs
from effbench.scenarios.loadgen.result import LoadGenResult
from effbench.scenarios.loadgen.settings import (
    DETAIL_LOG_LIMIT_BYTES,
    MAX_OFFLINE_SAMPLES,
    MULTI_STREAM,
    OFFLINE,
    RUN_LOCK,
    SINGLE_STREAM,
    SWITCH_INTERVAL_S,
    Call,
    Generate,
    GenerateBatch,
    LoadGenSettings,
)


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
                 max_wait_ms: float = 0.0, generate_batch: GenerateBatch | None = None, max_batch: int = 1) -> None:
        import mlperf_loadgen as lg
        self._lg = lg
        self._calls = [dict(c) for c in calls]
        self._sizes = sorted(self._calls[0]) if self._calls else [1]
        self._max_batch = (max_batch if generate_batch is not None else 1) if generate is not None else self._sizes[-1]
        self._wait_s = max_wait_ms / 1e3
        self._generate = generate
        self._generate_batch = generate_batch
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
        with _thread_state():
            self._serve(index)

    def _serve(self, index: int) -> None:
        lg = self._lg
        calls = self._calls[index % len(self._calls)] if self._calls else {}
        while (ids := self._take()) is not None:
            if not ids:
                continue
            try:
                if self._generate is None:
                    calls[min(s for s in self._sizes if s >= len(ids))]()
                    lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])
                elif len(ids) == 1:
                    (qid,) = ids
                    first_token, reported = _first_token_reporter(lg, qid)
                    n = int(self._generate(first_token))
                    if not reported():
                        raise RuntimeError("the generator returned without reporting its first token")
                    lg.QuerySamplesComplete([lg.QuerySampleResponse(qid, 0, 0, n)])
                else:
                    hooks = [_first_token_reporter(lg, qid) for qid in ids]
                    counts = [int(n) for n in self._generate_batch([h[0] for h in hooks])]
                    if len(counts) != len(ids) or not all(h[1]() for h in hooks):
                        raise RuntimeError("the batch generator returned without a token count and a first token "
                                           "for every request")
                    lg.QuerySamplesComplete([lg.QuerySampleResponse(q, 0, 0, n) for q, n in zip(ids, counts)])
            except Exception:  # noqa: BLE001 - raised as SUTError after the test; LoadGen must see every sample end
                if self.error is None:
                    self.error = traceback.format_exc()
                lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0, 2) for i in ids])


def _thread_state():
    """What a runner set up on the thread that bound its calls, set up on a SUT worker's thread too: torch's
    inference mode is thread-local, and the torch runner enters it once on the worker's main thread, so a
    call in a SUT thread would otherwise run with autograd recording (slower, and not what was timed in
    the paired loop). A no-op where torch was not imported."""
    import contextlib
    torch = sys.modules.get("torch")
    return torch.inference_mode() if torch is not None else contextlib.nullcontext()


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
    return _run_sized(lambda s: _run(_PoolSUT(streams, None, threads, max_wait_ms), s, out_dir, qsl_samples,
                                     performance_samples, threads, max_detail_bytes),
                      settings, _resolved(settings, fastest_s, threads))


def run_loadgen_tokens(generate: Generate, settings: LoadGenSettings, out_dir: str | Path, *, qsl_samples: int,
                       performance_samples: int | None = None, threads: int = 1, warmup_calls: int = 1,
                       generate_batch: GenerateBatch | None = None, max_batch: int = 1,
                       max_detail_bytes: int = DETAIL_LOG_LIMIT_BYTES) -> LoadGenResult:
    """`run_loadgen` for generative requests with LoadGen's token latencies: one request per worker at a
    time, or, with `generate_batch` and `max_batch` > 1, up to `max_batch` queued requests decoded
    together (a worker takes what is queued, as a static batcher does; offline's one query fills every
    batch but the last). Each request's first token is reported with `FirstTokenComplete`, its end with
    `QuerySamplesComplete` carrying its token count. LoadGen computes TTFT, TPOT = (latency - TTFT) /
    (n - 1) and, in the server scenario, checks TTFT and TPOT at the percentile against `ttft_ms` and
    `tpot_ms`."""
    if not settings.use_token_latencies:
        raise ValueError("run_loadgen_tokens needs settings with use_token_latencies=True")
    if max_batch < 1 or (max_batch > 1 and generate_batch is None):
        raise ValueError("max_batch: 1, or more with a generate_batch that decodes that many requests together")
    fastest_s = _warm_up([(1, generate)], warmup_calls, lambda g: g(lambda: None))
    return _run_sized(lambda s: _run(_PoolSUT([], generate, threads, generate_batch=generate_batch,
                                              max_batch=max_batch),
                                     s, out_dir, qsl_samples, performance_samples, threads, max_detail_bytes),
                      settings, _resolved(settings, fastest_s, threads * max_batch))   # a batch: up to that many at once


RESIZE_TRIES = 2      # reruns of a run that ended short of its minimum duration on an estimated size
RESIZE_MARGIN = 1.3   # the rerun's expected rate / latency leaves this much room past the rate just observed


def _run_sized(run: Callable[[LoadGenSettings], LoadGenResult], asked: LoadGenSettings,
               resolved: LoadGenSettings) -> LoadGenResult:
    """Run with the sizes estimated from warmup; when the estimate was too pessimistic (the warmup ran
    during one of the VM's slow spells, so offline's one query or the streams' generated queries ran out
    before the minimum duration: LoadGen says INVALID, "Min duration satisfied: NO"), rerun sized from the
    rate LoadGen just measured, as a submitter re-tunes expected QPS. Sizes the user gave are never changed:
    their short run stays INVALID, as LoadGen said."""
    result = run(resolved)
    for _ in range(RESIZE_TRIES):
        if result.constraints.get("Min duration satisfied", True):
            break
        resized = _resized(asked, resolved, result)
        if resized is None:
            break
        resolved = resized
        result = run(resolved)
    return result


def _resized(asked: LoadGenSettings, used: LoadGenSettings, result: LoadGenResult) -> LoadGenSettings | None:
    """Settings sized from what `result` measured, or None when the user fixed the size or nothing was measured."""
    if used.scenario == OFFLINE and asked.expected_qps is None and result.samples_per_s:
        cap = MAX_OFFLINE_SAMPLES / (1.1 * max(used.min_duration_ms, 1) / 1e3)
        qps = min(RESIZE_MARGIN * max(result.samples_per_s, used.expected_qps or 0.0), cap)
        return replace(used, expected_qps=float(f"{qps:.4g}")) if qps > (used.expected_qps or 0.0) else None
    mean = result.latency_ms.get("mean")
    if used.scenario in (SINGLE_STREAM, MULTI_STREAM) and asked.expected_latency_ms is None and mean:
        ms = min(mean, used.expected_latency_ms or mean) / RESIZE_MARGIN
        return replace(used, expected_latency_ms=float(f"{max(ms, 1e-3):.4g}"))
    return None


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
    with RUN_LOCK:
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
