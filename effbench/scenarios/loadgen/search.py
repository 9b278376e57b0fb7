"""The peak-rate search of the server scenario: LoadGen runs at candidate rates, its VALID/INVALID judging each."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from effbench.scenarios.loadgen.result import LoadGenResult
from effbench.scenarios.loadgen.run import run_loadgen
from effbench.scenarios.loadgen.settings import SERVER, Call, LoadGenSettings

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
        """Per rate tried (in order): LoadGen's verdict, its early stopping (the lines, whether satisfied, the
        queries over the bound; LoadGen's server early stopping gives no percentile estimate, so
        `early_stopping_ms` is empty there), the percentile's latency, the queries, both logs."""
        return [{"qps": r.settings.target_qps, "valid": r.valid, "verdict": "VALID" if r.valid else "INVALID",
                 "constraints": dict(r.constraints), "percentile_ms": r.percentile_ms,
                 "completed_qps": r.completed_qps, "queries": r.queries, "overlatency_queries": r.overlatency_queries,
                 "early_stopping": list(r.early_stopping), "early_stopping_met": r.early_stopping_met,
                 "early_stopping_ms": dict(r.early_stopping_ms), "recommendations": list(r.recommendations),
                 "summary_path": r.summary_path, "detail_path": r.detail_path}
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
