"""The load scenarios after MLPerf LoadGen (loadgen/test_settings.h, results.cc, early_stopping.cc):
early-stopping percentile estimates, offline (a pool of queries, all available at once, worked through at
a batch size) and server (Poisson arrivals from a load-generator thread; the peak rate under a latency
bound, found by bracketing then bisecting as LoadGen's FindPeakPerformance does).

Pure engines: they time zero-argument calls (a runner's `timed_call`, or a test's fake) and know nothing of
suites or records.
"""
from __future__ import annotations

import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# LoadGen widens the bracket by server_find_peak_qps_boundary_step_size = 1 (x2 per step) and bisects until
# the bounds agree to a precision; ours is relative (5%) because one probe costs seconds, not minutes.
BRACKET_FACTOR = 2.0
SEARCH_PRECISION = 0.05
# After the search, one probe at this multiple of the peak shows the bound really breaks above it; when it
# does not, the search goes on above it, at most this many times.
VERIFY_FACTOR = 1.3
RESUMES = 2
# The load generator's wake-ups must not wait on the inference thread's GIL slices (5 ms by default):
# a late issue counts against the system measured, as latency runs from the scheduled arrival.
SWITCH_INTERVAL_S = 0.0005

from effbench.measure.early_stopping import (  # noqa: F401
    EARLY_STOPPING_CONFIDENCE,
    early_stopping_estimate,
    min_queries,
    percentile_of,
    server_early_stopping,
)

Call = Callable[[], object]


# ------------------------------------------------------------------------------ batch shapes
def padded_size(k: int, sizes: Sequence[int]) -> int:
    """The smallest bound batch size that holds k queries (a dynamic batcher pads up to it)."""
    return min(s for s in sizes if s >= k)


def batcher_sizes(max_batch: int) -> list[int]:
    """The batch shapes a dynamic batcher of `max_batch` runs: powers of two below it, and it."""
    return sorted({*(2 ** i for i in range(max(1, max_batch).bit_length()) if 2 ** i < max_batch), max_batch})


def pool_sizes(queries: int, batch_size: int) -> list[int]:
    """The batch shapes an offline pass over `queries` needs: the batch size and the remainder."""
    return sorted({min(batch_size, queries), *([queries % batch_size] if queries % batch_size else [])})


# ------------------------------------------------------------------------------ offline
@dataclass(frozen=True)
class OfflinePass:
    """One pass over the pool: every query available at the start, the time until the last returned."""

    queries: int
    elapsed_ns: int
    call_ns: tuple[int, ...]   # each full batch's call duration, in the order they ran (not the remainder's)

    @property
    def samples_per_s(self) -> float:
        return self.queries / (self.elapsed_ns / 1e9) if self.elapsed_ns > 0 else math.nan


def offline_pass(streams: Sequence[Mapping[int, Call]], queries: int, batch_size: int) -> OfflinePass:
    """Work through a pool of `queries` at `batch_size` (the last batch holds the remainder). With several
    streams (one session each), each thread takes the next batch from the pool as it finishes one."""
    pc = time.perf_counter_ns
    batches = [min(batch_size, queries - i) for i in range(0, queries, batch_size)]
    durations: list[int] = []
    if len(streams) == 1:
        calls = streams[0]
        t0 = pc()
        for k in batches:
            c0 = pc()
            calls[k]()
            if k == batches[0]:
                durations.append(pc() - c0)
        return OfflinePass(queries, pc() - t0, tuple(durations))
    lock = threading.Lock()
    todo = iter(batches)
    ends: list[int] = []

    def work(calls: Mapping[int, Call]) -> None:
        while True:
            with lock:
                k = next(todo, None)
            if k is None:
                return
            c0 = pc()
            calls[k]()
            c1 = pc()
            with lock:
                if k == batches[0]:
                    durations.append(c1 - c0)
                ends.append(c1)

    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in streams]
    t0 = pc()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return OfflinePass(queries, (max(ends) if ends else pc()) - t0, tuple(durations))


@dataclass
class OfflineMember:
    """One variant's offline passes in a worker, and each cycle's time per sample (NaN: it sat out)."""

    passes: list[OfflinePass] = field(default_factory=list)
    pass_ms_per_sample: list[float] = field(default_factory=list)
    first_call_ns: float | None = None

    @property
    def samples_per_s(self) -> float | None:
        """Over the whole run: every query of every pass over the time all the passes took."""
        t = sum(p.elapsed_ns for p in self.passes)
        return sum(p.queries for p in self.passes) / (t / 1e9) if t else None

    @property
    def elapsed_s(self) -> float:
        return sum(p.elapsed_ns for p in self.passes) / 1e9

    @property
    def call_ns(self) -> list[int]:
        return [d for p in self.passes for d in p.call_ns]


def measure_offline(members: Mapping[str, tuple[Sequence[Mapping[int, Call]], int, int]], *, warmup_s: float,
                    min_time_s: float, max_time_s: float, seed: int = 0, min_cycles: int = 3,
                    min_warmup_calls: int = 3, references: Mapping[str, str] | None = None
                    ) -> dict[str, OfflineMember]:
    """Offline passes of several variants in one worker, in randomly ordered cycles (each cycle one pass
    of each, so a per-cycle ratio compares two variants at one moment of the machine, as
    `measure.latency.measure_interleaved` does for single calls). `members`: key -> (streams, queries,
    batch size). A member stops after `min_cycles` once it spent `min_time_s`, or at `max_time_s`, unless it
    is the reference (`references`: member -> the member it is compared with) of one still running; a pass
    is never cut short."""
    import gc
    out = {k: OfflineMember() for k in members}
    pc = time.perf_counter_ns
    for key, (streams, _, _) in members.items():
        calls = [c for s in streams for c in s.values()]
        t0 = pc()
        calls[0]()
        out[key].first_call_ns = float(pc() - t0)
        end, n = pc() + warmup_s * 1e9, 0
        while n < min_warmup_calls * len(calls) or pc() < end:
            calls[n % len(calls)]()
            n += 1
    rng = np.random.default_rng(seed)
    keys = list(members)
    active = set(keys)
    cycles = 0
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a pass is noise from us, not from the model
    try:
        while active:
            for i in rng.permutation(len(keys)):
                key = keys[i]
                m = out[key]
                if key not in active:
                    m.pass_ms_per_sample.append(math.nan)
                    continue
                streams, queries, batch = members[key]
                for calls in streams:  # untimed: the previous pass ran another session (measure_interleaved)
                    calls[min(batch, queries)]()
                p = offline_pass(streams, queries, batch)
                m.passes.append(p)
                m.pass_ms_per_sample.append(p.elapsed_ns / 1e6 / queries)
            cycles += 1
            still = {k for k in active if out[k].elapsed_s < max_time_s
                     and (cycles < min_cycles or out[k].elapsed_s < min_time_s)}
            active = still | {references[k] for k in still if k in (references or {}) and references[k] in out}
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


# ------------------------------------------------------------------------------ server
def poisson_gaps(n: int, seed: int) -> np.ndarray:
    """Unit-mean exponential inter-arrival gaps; a probe at rate r uses gaps / r."""
    return np.random.default_rng(seed).exponential(1.0, n)


class GapStream:
    """The gaps of `poisson_gaps(n, seed)` for any n, drawn on demand from one seeded stream. Every probe of
    a search takes a prefix of the same gaps (common random numbers, as LoadGen's fixed schedule_rng_seed
    does): each query's latency then grows with the rate, so the bisection never meets a schedule that
    contradicts another."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._gaps = np.empty(0)

    def first(self, n: int) -> np.ndarray:
        if n > len(self._gaps):
            self._gaps = np.concatenate([self._gaps, self._rng.exponential(1.0, n - len(self._gaps))])
        return self._gaps[:n]


@dataclass(frozen=True)
class Probe:
    """One run at an offered rate: each issued query's latency from its scheduled arrival (a backlog
    counts). Stopped early once more queries overran the bound than the percentile allows; then the
    queries still in flight hold their age at the stop, a lower bound."""

    offered_qps: float
    percentile: float
    bound_ms: float
    latencies_ms: tuple[float, ...]
    completed: int
    elapsed_s: float
    stopped_early: bool = False
    batches: int = 0
    late_issue_ms: float = 0.0     # the load generator's own worst lateness (it counts in the latencies)

    @property
    def queries(self) -> int:
        return len(self.latencies_ms)

    @property
    def percentile_ms(self) -> float:
        return percentile_of(self.latencies_ms, self.percentile)

    @property
    def passed(self) -> bool:
        return not self.stopped_early and self.queries > 0 and self.percentile_ms <= self.bound_ms

    @property
    def achieved_qps(self) -> float | None:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else None

    def to_json(self) -> dict:
        lat = self.latencies_ms
        return {"offered_qps": _sig(self.offered_qps), "achieved_qps": _sig(self.achieved_qps),
                "queries": self.queries, "completed": self.completed, "percentile_ms": _sig(self.percentile_ms),
                "p50_ms": _sig(percentile_of(lat, 50)), "p99_ms": _sig(percentile_of(lat, 99)),
                "passed": self.passed, "stopped_early": self.stopped_early, "batches": self.batches,
                "late_issue_ms": _sig(self.late_issue_ms)}


def _sig(x: float | None, digits: int = 5) -> float | None:
    return float(f"{x:.{digits}g}") if x is not None and math.isfinite(x) else None


# Over 80 lines on purpose: the load generator thread and its accounting share one closure.
def run_probe(calls: Mapping[int, Call], rate_qps: float, gaps: np.ndarray, *, bound_ms: float, percentile: float,
              max_batch: int = 1, max_wait_ms: float = 0.0, schedule_s: np.ndarray | None = None) -> Probe:
    """Offer `len(gaps)` queries at `rate_qps` (Poisson: arrival i at sum(gaps[:i+1]) / rate) from a load
    generator thread, served in this thread: up to `max_batch` queued queries per call, waiting at most
    `max_wait_ms` after the oldest for more. `calls`: batch size -> call (a batch is padded up to the
    next bound size). `schedule_s`: explicit arrival times instead (tests)."""
    sched_ns = ((np.asarray(schedule_s, dtype=np.float64) if schedule_s is not None else np.cumsum(gaps) / rate_qps)
                * 1e9).astype(np.int64)
    n = len(sched_ns)
    sizes = sorted(calls)
    allowed = n - int(n * percentile / 100) - 1  # overruns the percentile absorbs (sorted[n * p] <= bound)
    bound_ns, wait_ns = int(bound_ms * 1e6), int(max_wait_ms * 1e6)
    pending: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    issued = [0, 0]   # [queries issued, worst lateness of an issue in ns]
    pc = time.perf_counter_ns
    start = pc() + 2_000_000  # the generator starts before the first arrival is due

    def generate() -> None:
        i, late = 0, 0
        try:
            while i < n and not stop.is_set():
                due = start + int(sched_ns[i])
                now = pc()
                if due > now:
                    stop.wait((due - now) / 1e9)  # a sleep that a stopped probe cuts short
                    now = pc()
                late = max(late, now - due)
                while i < n and start + sched_ns[i] <= now:  # everything due by now, in order
                    pending.put(i)
                    i += 1
                issued[0], issued[1] = i, late
        finally:
            pending.put(None)

    done = np.full(n, -1, dtype=np.int64)
    over = batches = 0
    stopped = False
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gen = threading.Thread(target=generate, name="effbench-loadgen", daemon=True)
    gen.start()
    try:
        ended = False
        while not ended:
            item = pending.get()
            if item is None:
                break
            batch = [item]
            deadline = start + int(sched_ns[item]) + wait_ns
            while len(batch) < max_batch:
                try:
                    left = (deadline - pc()) / 1e9
                    nxt = pending.get(timeout=left) if left > 0 else pending.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    ended = True
                    break
                batch.append(nxt)
            calls[padded_size(len(batch), sizes)]()
            t = pc()
            batches += 1
            for j in batch:
                done[j] = t
                over += t - (start + int(sched_ns[j])) > bound_ns
            if over > allowed:  # the percentile is over the bound whatever the rest does
                stopped = True
                break
    finally:
        stop.set()
        gen.join()
        sys.setswitchinterval(old_switch)
    t_end = pc()
    k = issued[0]
    ends = np.where(done[:k] >= 0, done[:k], t_end)
    lat = (ends - (start + sched_ns[:k])) / 1e6
    last = int(done.max()) if (done >= 0).any() else t_end
    return Probe(offered_qps=float(rate_qps), percentile=percentile, bound_ms=bound_ms,
                 latencies_ms=tuple(float(x) for x in lat), completed=int(np.count_nonzero(done[:k] >= 0)),
                 elapsed_s=max(last - start, 1) / 1e9, stopped_early=stopped, batches=batches,
                 late_issue_ms=issued[1] / 1e6)


@dataclass
class PeakSearch:
    """The highest offered rate whose probe kept the percentile within the bound, and every probe run."""

    probes: list[Probe]
    best: Probe | None
    ended: str

    @property
    def max_qps(self) -> float | None:
        return self.best.offered_qps if self.best else None

    def curve(self) -> list[tuple[float, float]]:
        """(offered rate, latency at the percentile) of every probe, by rate."""
        return sorted((p.offered_qps, p.percentile_ms) for p in self.probes if p.queries)


def find_peak(probe: Callable[[float], Probe], start_qps: float, *, min_qps: float, budget_s: float,
              precision: float = SEARCH_PRECISION, verify_factor: float | None = VERIFY_FACTOR,
              max_probes: int = 40, clock: Callable[[], float] = time.monotonic) -> PeakSearch:
    """LoadGen's FindPeakPerformance: widen the bracket x2 until a rate fails (halving down when the first
    fails, to `min_qps`), then bisect until the passing and failing rates agree to `precision`; then one
    probe at `verify_factor` x the peak, so the curve shows the bound breaking above it. The search stops
    where `budget_s` runs out, and says so in `ended`."""
    probes: list[Probe] = []
    end = clock() + budget_s

    def run(q: float) -> Probe:
        p = probe(q)
        probes.append(p)
        return p

    def time_left() -> bool:
        return clock() < end and len(probes) < max_probes

    lo: Probe | None = None
    hi: Probe | None = None
    first = run(start_qps)
    if first.passed:
        lo = first
        while time_left():
            p = run(lo.offered_qps * BRACKET_FACTOR)
            if not p.passed:
                hi = p
                break
            lo = p
    else:
        hi = first
        while time_left() and hi.offered_qps / BRACKET_FACTOR >= min_qps:
            p = run(hi.offered_qps / BRACKET_FACTOR)
            if p.passed:
                lo = p
                break
            hi = p
    if lo is None:
        return PeakSearch(probes, None, "no rate met the bound" if time_left()
                          else "time budget spent before any rate met the bound")
    ended, resumed = "", 0
    for _ in range(1 + RESUMES):
        if hi is None:
            return PeakSearch(probes, lo, "time budget spent while widening the bracket: the peak is higher")
        while (hi.offered_qps - lo.offered_qps) / lo.offered_qps > precision:
            if not time_left():
                return PeakSearch(probes, lo, f"time budget spent: bracket [{lo.offered_qps:.4g}, "
                                              f"{hi.offered_qps:.4g}] qps")
            p = run((lo.offered_qps + hi.offered_qps) / 2)
            if p.passed:
                lo = p
            else:
                hi = p
        ended = f"bisected to {precision:.0%}" + (f"; searched on above a pass at {verify_factor:g}x the peak "
                                                  f"({resumed}x)" if resumed else "")
        if not verify_factor or not time_left():
            break
        target = verify_factor * lo.offered_qps
        p = next((p for p in probes if abs(p.offered_qps / target - 1) < 0.02), None) or run(target)
        if not p.passed:
            ended += f"; at {verify_factor:g}x the peak the bound was missed"
            break
        # A machine that stalls only ever adds latency, so a pass above a failure is the stronger evidence:
        # the failure that bounded the bisection was noise. Search on above the passing rate.
        lo = p
        above = [q for q in probes if not q.passed and q.offered_qps > lo.offered_qps]
        hi = min(above, key=lambda q: q.offered_qps) if above else None
        while hi is None and time_left():
            q = run(lo.offered_qps * BRACKET_FACTOR)
            if q.passed:
                lo = q
            else:
                hi = q
        resumed += 1
        ended = f"met the bound at {verify_factor:g}x the peak {resumed}x: stopped searching on"
    return PeakSearch(probes, lo, ended)
