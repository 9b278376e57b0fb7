"""Latency: the timing loop with its stopping rule, and the statistics of its samples.

Follows DESIGN.md "Measurement rules": first call apart, warmup, per-call timing or timed blocks,
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

# MLPerf loadgen's early-stopping minimums: fewer samples cannot bound these percentiles.
MIN_N_P90 = 64
MIN_N_P99 = 662
# A call must be this many times the timing loop's own overhead to be timed one by one.
PER_CALL_FACTOR = 100
CI_LEVEL = 0.95
STORED_SAMPLES_MAX = 10_000


def median_ci_ranks(n: int, level: float = CI_LEVEL) -> tuple[int, int]:
    """0-based ranks (lo, hi) of the distribution-free order-statistic CI of the median.

    The number of samples below the true median is Binomial(n, 1/2); the interval
    [x_(j), x_(n-j+1)] covers the median with probability >= level.
    """
    if n <= 0:
        return 0, 0
    from scipy import stats as sps  # imported here: workers and the CLI start faster without it
    j = int(sps.binom.ppf((1 - level) / 2, n, 0.5))  # 1-based lower rank
    j = max(j, 1)
    return j - 1, n - j


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
            "iqr": self.iqr_ns * ms if self.n else None,
            "iqr_ratio": _finite(self.iqr_ratio),
            "outliers": self.outliers,
            "first_call": self.first_call_ns * ms if self.first_call_ns is not None else None,
            "unstable": self.unstable,
            "timing": self.timing,
            "block_size": self.block_size,
            "elapsed_s": self.elapsed_s,
        }

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
    """How long to measure; the suite's `measure:` block."""

    warmup_s: float = 1.0
    min_time_s: float = 2.0
    max_time_s: float = 20.0
    target_rel_ci: float = 0.01
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


def measure_latency(call: Callable[[], object], budget: Budget,
                    overhead_ns: float | None = None) -> LatencyStats:
    """Time `call` (which must synchronize any device work before it returns) by DESIGN.md's rules."""
    pc = time.perf_counter_ns
    overhead = overhead_ns if overhead_ns is not None else loop_overhead_ns()

    t0 = pc()
    call()
    first_call = pc() - t0

    # Warmup: at least `min_warmup_calls` calls and `warmup_s`, never mixed into the samples.
    start, calls = pc(), 0
    while calls < budget.min_warmup_calls or (pc() - start) < budget.warmup_s * 1e9:
        call()
        calls += 1
    est_call_ns = (pc() - start) / calls

    block = 1
    timing = "per-call"
    if est_call_ns < PER_CALL_FACTOR * overhead:
        block = max(2, math.ceil(PER_CALL_FACTOR * overhead / max(est_call_ns, 1.0)))
        timing = "blocks"

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

    FIELD-NOTES: this machine flips between two speeds within seconds, so two cells timed one after the
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
