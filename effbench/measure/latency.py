"""Latency: the timing loop with its stopping rule, and the statistics of its samples.

Follows docs/measurement.md "Measurement rules": first call apart, warmup, per-call timing or timed blocks,
stop on min time + minimum n + CI target, or at max time flagged `unstable`.
"""
from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from effbench.measure.stats import CI_LEVEL, median_ci_ranks  # noqa: F401  (re-exported)

# MLPerf loadgen's early-stopping minimums: fewer samples cannot bound these percentiles.
MIN_N_P90 = 64
MIN_N_P99 = 662
# A call must be this many times the timing loop's own overhead to be timed one by one.
PER_CALL_FACTOR = 100
STORED_SAMPLES_MAX = 10_000


@dataclass(frozen=True)
class LatencyStats:
    """Samples of per-call latency in nanoseconds and everything derived from them."""

    samples_ns: tuple[float, ...]
    timing: str = "per-call"          # "per-call" | "blocks" (each sample is a block's mean per call)
    block_size: int = 1
    first_call_ns: float | None = None
    unstable: bool = False
    elapsed_s: float | None = None
    calls: int | None = None

    @cached_property
    def _sorted(self) -> np.ndarray:
        return np.sort(np.asarray(self.samples_ns, dtype=np.float64))

    @property
    def n(self) -> int:
        return len(self.samples_ns)

    @cached_property
    def median_ns(self) -> float:
        return float(np.median(self._sorted)) if self.n else math.nan

    @cached_property
    def median_ci_ns(self) -> tuple[float, float]:
        if not self.n:
            return (math.nan, math.nan)
        lo, hi = median_ci_ranks(self.n)
        return float(self._sorted[lo]), float(self._sorted[hi])

    @cached_property
    def rel_ci_halfwidth(self) -> float:
        lo, hi = self.median_ci_ns
        return (hi - lo) / 2 / self.median_ns if self.n and self.median_ns > 0 else math.inf

    def percentile_ns(self, q: float) -> float:
        return float(np.percentile(self._sorted, q)) if self.n else math.nan

    @cached_property
    def iqr_ns(self) -> float:
        return self.percentile_ns(75) - self.percentile_ns(25)

    @cached_property
    def iqr_ratio(self) -> float:
        """IQR / median: above 0.10 means a noisy machine."""
        return self.iqr_ns / self.median_ns if self.n and self.median_ns > 0 else math.nan

    @cached_property
    def outliers(self) -> int:
        """Tukey's rule (1.5 IQR beyond the quartiles); counted and flagged, never dropped."""
        if not self.n:
            return 0
        q1, q3 = self.percentile_ns(25), self.percentile_ns(75)
        lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
        return int(np.count_nonzero((self._sorted < lo) | (self._sorted > hi)))

    @property
    def tail_measurable(self) -> bool:
        """Blocks average calls together, so they cannot show the tail of single calls."""
        return self.timing == "per-call"

    def to_json(self) -> dict:
        ms = 1e-6
        a = self._sorted
        lo, hi = self.median_ci_ns
        return {
            "n": self.n,
            "calls": self.calls if self.calls is not None else self.n * self.block_size,
            "median": self.median_ns * ms,
            "ci": [lo * ms, hi * ms],
            "ci_level": CI_LEVEL,
            "rel_ci_halfwidth": _finite(self.rel_ci_halfwidth),
            "mean": float(a.mean()) * ms if self.n else None,
            "std": float(a.std(ddof=1)) * ms if self.n > 1 else None,
            "min": float(a[0]) * ms if self.n else None,
            "max": float(a[-1]) * ms if self.n else None,
            "p90": self.percentile_ns(90) * ms if self.n else None,
            "p99": self.percentile_ns(99) * ms if self.n else None,
            "p90_reliable": self.tail_measurable and self.n >= MIN_N_P90,
            "p99_reliable": self.tail_measurable and self.n >= MIN_N_P99,
            "p90_early_stopping": self.early_stopping_ms(90),
            "p99_early_stopping": self.early_stopping_ms(99),
            "iqr": self.iqr_ns * ms if self.n else None,
            "iqr_ratio": _finite(self.iqr_ratio),
            "outliers": self.outliers,
            "first_call": self.first_call_ns * ms if self.first_call_ns is not None else None,
            "unstable": self.unstable,
            "timing": self.timing,
            "block_size": self.block_size,
            "elapsed_s": self.elapsed_s,
        }

    def early_stopping_ms(self, percentile: float) -> float | None:
        """MLPerf LoadGen's early-stopping estimate of a percentile of single calls (None for timed blocks,
        which cannot show single calls' tail, and below LoadGen's minimum count)."""
        from effbench.measure.early_stopping import early_stopping_estimate
        if not self.tail_measurable:
            return None
        est = early_stopping_estimate(self._sorted, percentile)
        return est * 1e-6 if est is not None else None

    def stored_samples_ms(self, limit: int = STORED_SAMPLES_MAX) -> list[float]:
        """Raw samples in time order for the gate; evenly thinned past `limit` (the record says so)."""
        s = np.asarray(self.samples_ns, dtype=np.float64)
        if len(s) > limit:
            s = s[np.linspace(0, len(s) - 1, limit).round().astype(int)]
        return [round(float(x) * 1e-6, 6) for x in s]

    @classmethod
    def from_samples_ms(cls, samples_ms: Sequence[float], **kw) -> LatencyStats:
        return cls(samples_ns=tuple(float(x) * 1e6 for x in samples_ms), **kw)


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class Budget:
    """How long to measure per cell and round: the suite's `measure:` block, whose defaults are these (the one
    place they are set; `config.suite.MeasureSpec` reads them). Several short rounds in fresh workers, not one
    long one: a CI over rounds covers the machine's changes of state, a CI over one worker's samples covers one
    moment; a speedup's spread between processes (a few % here) dominates its within-round error."""

    warmup_s: float = 0.1
    min_time_s: float = 0.3
    max_time_s: float = 3.0
    target_rel_ci: float = 0.02
    min_warmup_calls: int = 10
    min_n: int = MIN_N_P90

    def quick(self) -> Budget:
        """`--quick`: smoke-run budgets, still honest (the CI target may then be missed)."""
        return Budget(warmup_s=min(self.warmup_s, 0.1), min_time_s=min(self.min_time_s, 0.2),
                      max_time_s=min(self.max_time_s, 1.0), target_rel_ci=max(self.target_rel_ci, 0.05),
                      min_warmup_calls=3, min_n=min(self.min_n, 16))


def _median_call_ns(call: Callable[[], object], n: int) -> float:
    """Median of `n` per-call timings of `call` (the per-call timing loop)."""
    pc = time.perf_counter_ns
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = pc()
        call()
        out[i] = pc() - t0
    return float(np.median(out))


def loop_overhead_ns(reps: int = 20_000) -> float:
    """Median cost of one iteration of the per-call timing loop around an empty call."""
    def noop() -> None:
        return None
    return _median_call_ns(noop, reps)


@dataclass
class _Loop:
    call: Callable[[], object]
    block: int
    samples: list[float] = field(default_factory=list)

    def run_for(self, seconds: float, max_samples: int | None = None) -> None:
        pc = time.perf_counter_ns
        call, block, samples = self.call, self.block, self.samples
        end = pc() + int(seconds * 1e9)
        count = 0
        if block == 1:
            while True:
                t0 = pc()
                call()
                t1 = pc()
                samples.append(t1 - t0)
                count += 1
                if t1 >= end or (max_samples and count >= max_samples):
                    return
        rng = range(block)
        while True:
            t0 = pc()
            for _ in rng:
                call()
            t1 = pc()
            samples.append((t1 - t0) / block)
            count += 1
            if t1 >= end or (max_samples and count >= max_samples):
                return


def _warmup(call: Callable[[], object], budget: Budget, clock: Callable[[], int]) -> float:
    """At least `min_warmup_calls` calls and `warmup_s`, never mixed into the samples; returns the
    mean time of one call in ns."""
    start, n = clock(), 0
    while n < budget.min_warmup_calls or (clock() - start) < budget.warmup_s * 1e9:
        call()
        n += 1
    return (clock() - start) / n


def _calls_per_sample(est_call_ns: float, overhead_ns: float) -> int:
    """1 (per-call timing) when a call is at least PER_CALL_FACTOR x the timing loop's own overhead, else
    how many calls one timed block needs to be."""
    if est_call_ns >= PER_CALL_FACTOR * overhead_ns:
        return 1
    return max(2, math.ceil(PER_CALL_FACTOR * overhead_ns / max(est_call_ns, 1.0)))


def measure_latency(call: Callable[[], object], budget: Budget,
                    overhead_ns: float | None = None) -> LatencyStats:
    """Time `call` (which must synchronize any device work before it returns) by the rules of docs/measurement.md."""
    pc = time.perf_counter_ns
    overhead = overhead_ns if overhead_ns is not None else loop_overhead_ns()

    t0 = pc()
    call()
    first_call = pc() - t0

    block = _calls_per_sample(_warmup(call, budget, pc), overhead)
    timing = "per-call" if block == 1 else "blocks"

    loop = _Loop(call, block)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed call is noise from us, not from the model
    try:
        t_start = pc()
        while True:
            elapsed = (pc() - t_start) / 1e9
            # check the stopping rule every ~10% of min time (at least every 50 ms)
            loop.run_for(max(0.05, budget.min_time_s / 10))
            elapsed = (pc() - t_start) / 1e9
            if elapsed >= budget.max_time_s:
                break
            if elapsed < budget.min_time_s or len(loop.samples) < budget.min_n:
                continue
            st = LatencyStats(tuple(loop.samples))
            if st.rel_ci_halfwidth <= budget.target_rel_ci:
                break
        elapsed = (pc() - t_start) / 1e9
    finally:
        if gc_was_enabled:
            gc.enable()

    final = LatencyStats(tuple(loop.samples), timing=timing, block_size=block,
                         first_call_ns=float(first_call), elapsed_s=elapsed,
                         calls=len(loop.samples) * block)
    unstable = (final.rel_ci_halfwidth > budget.target_rel_ci) or final.n < budget.min_n
    return LatencyStats(final.samples_ns, timing=timing, block_size=block, first_call_ns=float(first_call),
                        unstable=unstable, elapsed_s=elapsed, calls=len(loop.samples) * block)


def paired_ratio(call_a: Callable[[], object], call_b: Callable[[], object], *, duration_s: float = 1.0,
                 warmup_s: float = 0.1, min_block_s: float = 0.05, min_block_calls: int = 8,
                 min_pairs: int = 6) -> dict:
    """B's latency relative to A's, timed in alternating blocks in one process (A/B mode).

    docs/runtime-notes.md: this machine flips between two speeds within seconds, so two cells timed one after the
    other can land in different states (per-round ratios of back-to-back workers spread +-25% here).
    Blocks of at least `min_block_s` and `min_block_calls` calls alternate A B, B A, A B ... (the order
    flips each pair so neither side always runs first); each pair gives median(B) / median(A), and the
    result is the median over pairs. Both sides see the same machine state to within one block.
    """
    pc = time.perf_counter_ns
    for call in (call_a, call_b):
        end = pc() + warmup_s * 1e9
        n = 0
        while n < 3 or pc() < end:
            call()
            n += 1
    probe = [max(_median_call_ns(call, 5), 1.0) for call in (call_a, call_b)]
    calls = [max(min_block_calls, math.ceil(min_block_s * 1e9 / t)) for t in probe]
    block = _median_call_ns

    ratios, a_med, b_med = [], [], []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        end = pc() + duration_s * 1e9
        while len(ratios) < min_pairs or pc() < end:
            if len(ratios) % 2 == 0:
                a = block(call_a, calls[0])
                b = block(call_b, calls[1])
            else:
                b = block(call_b, calls[1])
                a = block(call_a, calls[0])
            ratios.append(b / a)
            a_med.append(a)
            b_med.append(b)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {"ratio": float(np.median(ratios)), "pairs": len(ratios), "calls_per_block": calls,
            "a_median_ms": float(np.median(a_med)) / 1e6, "b_median_ms": float(np.median(b_med)) / 1e6,
            "ratio_range": [float(min(ratios)), float(max(ratios))]}


# ------------------------------------------------------------------------------ interleaved rounds
@dataclass(frozen=True)
class Interleaved:
    """One round of interleaved timing in one worker: each member's statistics, and the median of each
    of its blocks per cycle (every cycle times every member once, in a fresh random order)."""

    stats: dict[str, LatencyStats]
    block_ms: dict[str, list[float]]
    cycles: int

    def ratios(self, reference: str, member: str) -> list[float]:
        """Per cycle, reference block median / member block median: the member's speedup in that cycle.
        Both blocks ran within one cycle (a fraction of a second apart), so both saw the same machine."""
        return block_ratios(self.block_ms[reference], self.block_ms[member])


def block_ratios(reference_ms: Sequence[float], member_ms: Sequence[float]) -> list[float]:
    """Cycle by cycle, the reference's block median over the member's: the member's speedup per cycle."""
    return [r / m for r, m in zip(reference_ms, member_ms) if r > 0 and m > 0]  # NaN (sat out) compares False


def measure_interleaved(calls: dict[str, Callable[[], object]], budget: Budget, *, overhead_ns: float,
                        references: dict[str, str] | None = None, seed: int = 0, min_block_s: float = 0.02,
                        min_block_samples: int = 3, min_cycles: int = 6,
                        clock: Callable[[], int] = time.perf_counter_ns) -> Interleaved:
    """Time several calls (variants x batch sizes of one model) in one process, in randomly ordered
    cycles of short blocks, by the rules of docs/measurement.md for each: first call apart, warmup, per-call timing or
    timed blocks, and the stopping rule applied to every member.

    Why: this machine flips between two speeds for seconds at a time (docs/runtime-notes.md), so two cells timed
    in turn can land in different states and their ratio moved 2-3x between identical runs. A cycle
    lasts a fraction of a second, so a ratio of two members' blocks of one cycle compares like with
    like; the median over cycles discards the cycles a flip cut through.

    A member leaves the cycles once its stopping rule is met, unless it is the reference (in
    `references`: member -> the member it is compared with) of a member still being timed. A cycle a
    member sat out holds NaN in its `block_ms`. `clock` is injectable so the estimator can be tested on
    a fake machine with speed flips.
    """
    names = list(calls)
    references = {k: r for k, r in (references or {}).items() if k in calls and r in calls}
    first: dict[str, float] = {}
    est: dict[str, float] = {}
    for name in names:  # the first call of each (a new session or batch shape) is timed apart
        call = calls[name]
        t0 = clock()
        call()
        first[name] = float(clock() - t0)
    for name in names:
        est[name] = max(_warmup(calls[name], budget, clock), 1.0)
    inner = {k: _calls_per_sample(est[k], overhead_ns) for k in names}
    per_block = {k: max(min_block_samples, math.ceil(min_block_s * 1e9 / (est[k] * inner[k]))) for k in names}

    samples: dict[str, list[float]] = {k: [] for k in names}
    block_ms: dict[str, list[float]] = {k: [] for k in names}
    spent = dict.fromkeys(names, 0)
    rng = np.random.default_rng(seed)
    active = set(names)
    cycles = 0
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed call is noise from us, not from the model
    try:
        while active:
            for i in rng.permutation(len(names)):
                name = names[i]
                if name not in active:
                    block_ms[name].append(math.nan)
                    continue
                call, k, out = calls[name], inner[name], []
                # One untimed call first: the previous block ran another session, whose threads and
                # caches this call pays for (it put a 4 ms p99 on a 0.1 ms cell here); steady state is
                # what a cell's percentiles describe.
                call()
                b0 = clock()
                for _ in range(per_block[name]):
                    t0 = clock()
                    if k == 1:
                        call()
                    else:
                        for _ in range(k):
                            call()
                    out.append((clock() - t0) / k)
                spent[name] += clock() - b0
                samples[name].extend(out)
                block_ms[name].append(float(np.median(out)) / 1e6)
            cycles += 1
            if cycles >= min_cycles:
                still = {k for k in active if not _done(samples[k], spent[k], budget)}
                active = still | {references[k] for k in still if k in references}
    finally:
        if gc_was_enabled:
            gc.enable()

    stats = {}
    for name in names:
        st = LatencyStats(tuple(samples[name]))
        unstable = st.rel_ci_halfwidth > budget.target_rel_ci or st.n < budget.min_n
        stats[name] = LatencyStats(st.samples_ns, timing="per-call" if inner[name] == 1 else "blocks",
                                   block_size=inner[name], first_call_ns=first[name], unstable=unstable,
                                   elapsed_s=spent[name] / 1e9, calls=len(samples[name]) * inner[name])
    return Interleaved(stats=stats, block_ms=block_ms, cycles=cycles)


def _done(samples: list[float], spent_ns: int, budget: Budget) -> bool:
    """The stopping rule of one member: max_time_s, or min_time_s with n >= min_n and the CI target."""
    if spent_ns >= budget.max_time_s * 1e9:
        return True
    if spent_ns < budget.min_time_s * 1e9 or len(samples) < budget.min_n:
        return False
    return LatencyStats(tuple(samples)).rel_ci_halfwidth <= budget.target_rel_ci


def aligned(array: np.ndarray, align: int = 64) -> np.ndarray:
    """A C-contiguous copy of `array` whose data starts on an `align`-byte boundary. Why: numpy aligns to
    16 bytes, so whether a buffer is 64-byte aligned changes at random from process to process, and a
    96x96 float32 matmul ran 8.8 us aligned against 11.1 us unaligned here: a between-round difference
    that is the allocator's, not the model's. Every timed input goes through this."""
    a = np.ascontiguousarray(array)
    buf = np.empty(a.nbytes + align, dtype=np.uint8)
    offset = (-buf.ctypes.data) % align
    out = buf[offset:offset + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def sentinel_us(seconds: float = 0.03) -> float:
    """The machine's speed now: median time of a fixed small matmul (numpy, one thread, aligned buffers)
    in µs. Timed before and after each group of cells; a change says the machine drifted meanwhile."""
    a = aligned(np.random.default_rng(0).standard_normal((96, 96)).astype(np.float32))
    out = aligned(np.empty_like(a))
    times = []
    end = time.perf_counter_ns() + seconds * 1e9
    while len(times) < 20 or time.perf_counter_ns() < end:
        t0 = time.perf_counter_ns()
        np.matmul(a, a, out=out)
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e3


def sentinel_released(*holders: dict) -> float:
    """The sentinel after a group, in the same conditions as before it: every session released first (a
    loaded session's thread pool slowed it by a steady 10-15% here, which is not drift)."""
    import gc

    for h in holders:
        h.clear()
    gc.collect()
    return sentinel_us()
