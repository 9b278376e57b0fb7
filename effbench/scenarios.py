"""The suite's `scenarios:` entries: their grammar and defaults, what a scenario's worker needs (batch shapes,
options, time budget), and how a scenario's record sections merge over rounds.

single-stream: one query at a time (the interleaved timing loop of `measure.latency`).
offline / {offline: {queries: N, streams: k}}: a pool of N queries worked through at the cell's batch size.
{server: {latency_bound_ms: B, percentile: 99}}: Poisson arrivals; the peak rate within the bound.
The engines are `effbench.measure.scenarios`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from effbench.errors import did_you_mean
from effbench.record import Offline, Record, Server

SINGLE_STREAM, OFFLINE, SERVER = "single-stream", "offline", "server"
SCENARIOS = (SINGLE_STREAM, OFFLINE, SERVER)


class ScenarioError(ValueError):
    """A bad `scenarios:` entry: the message, the path below the entry, the fix."""

    def __init__(self, message: str, path: tuple = (), fix: str | None = None) -> None:
        super().__init__(message)
        self.path, self.fix = path, fix


def _number(name: str, unit: str, example: float, *, zero: bool = False, most: float = 86_400_000):
    """A check of a number of `unit` above 0 (or from 0), at most `most`."""
    def check(v: Any) -> float:
        low_ok = (v >= 0 if zero else v > 0) if isinstance(v, (int, float)) and not isinstance(v, bool) else False
        if not low_ok or not math.isfinite(v) or v > most:
            what = "0 or a positive number" if zero else "a positive number"
            raise ScenarioError(f"{name} must be {what} of {unit} up to {most:,.0f} (got {v!r})", (name,),
                                f"e.g. {name}: {example:g}")
        return float(v)
    return check


def _count(name: str, least: int, example: int, why: str = "", most: int = 10_000_000):
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not least <= v <= most:
            raise ScenarioError(f"{name} must be a whole number from {least}{why} to {most:,} (got {v!r})", (name,),
                                f"e.g. {name}: {example}")
        return v
    return check


def _percentile(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 100:
        raise ScenarioError(f"percentile must be above 0 and below 100 (got {v!r})", ("percentile",),
                            "e.g. percentile: 99 (MLPerf's server percentile)")
    return float(v)


# name -> {option: check}; an option left out takes its default (`ScenarioChoice.settings`)
OPTIONS: dict[str, dict[str, Any]] = {
    SINGLE_STREAM: {},
    OFFLINE: {"queries": _count("queries", 1, 1024), "streams": _count("streams", 1, 2, most=64),
              "min_time_s": _number("min_time_s", "seconds", 2, most=86_400),
              "max_time_s": _number("max_time_s", "seconds", 20, most=86_400)},
    SERVER: {"latency_bound_ms": _number("latency_bound_ms", "milliseconds", 20),
             "percentile": _percentile,
             "queries": _count("queries", 100, 1000, " (LoadGen's min_query_count)"),
             "min_duration_s": _number("min_duration_s", "seconds", 1, most=86_400),
             "max_time_s": _number("max_time_s", "seconds", 60, most=86_400),
             "max_wait_ms": _number("max_wait_ms", "milliseconds", 2, zero=True),
             "start_qps": _number("start_qps", "queries per second", 100, most=1e9)},
}
REQUIRED = {SERVER: ("latency_bound_ms",)}
# Per variant and round. Offline: a pool of 8 batches (at least 64 queries), passes repeated until the
# suite's min_time_s. Server: LoadGen's server percentile; 1000 queries per probe bound a p99 by its early
# stopping with one overrun (662) and each lasts at least min_duration_s (LoadGen's min_duration_ms is
# 10 minutes for a submission; one second here); the whole search of one variant stops after max_time_s.
DEFAULTS: dict[str, dict[str, Any]] = {
    OFFLINE: {"streams": 1},
    SERVER: {"percentile": 99.0, "queries": 1000, "min_duration_s": 1.0, "max_time_s": 60.0, "max_wait_ms": 0.0,
             "start_qps": None},
}


@dataclass(frozen=True)
class ScenarioChoice:
    """One entry of `scenarios:`: its name (the cell id's last part) and the options the user gave."""

    name: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def settings(self) -> dict[str, Any]:
        return {**DEFAULTS.get(self.name, {}), **self.options}


def parse_scenario(entry: Any) -> ScenarioChoice:
    """`single-stream`, `offline`, `{offline: {...}}` or `{server: {latency_bound_ms: B, ...}}`."""
    if isinstance(entry, dict):
        if len(entry) != 1:
            raise ScenarioError("a scenario with options is a one-key mapping", (),
                                "e.g. {server: {latency_bound_ms: 20, percentile: 99}}")
        (name, options), = entry.items()
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ScenarioError(f"the options of {name} are a mapping (got {options!r})", (name,),
                                "e.g. {server: {latency_bound_ms: 20}}")
    elif isinstance(entry, str):
        name, options = entry, {}
    else:
        raise ScenarioError(f"a scenario is a name or a one-key mapping (got {entry!r})", (),
                            f"use one of {', '.join(SCENARIOS)}")
    if name not in OPTIONS:
        raise ScenarioError(f"unknown scenario '{name}'{did_you_mean(str(name), SCENARIOS)}", (),
                            f"expected one of {', '.join(SCENARIOS)}")
    allowed = OPTIONS[name]
    out = {}
    for key, value in options.items():
        if key not in allowed:
            hint = f"expected one of {', '.join(allowed)}" if allowed else f"{name} takes no options"
            raise ScenarioError(f"unknown key '{key}'{did_you_mean(str(key), allowed)}", (name, key), hint)
        try:
            out[key] = allowed[key](value)
        except ScenarioError as e:
            raise ScenarioError(str(e), (name, *e.path), e.fix) from None
    for key in REQUIRED.get(name, ()):
        if key not in out:
            raise ScenarioError(f"the {name} scenario needs {key}", (name,) if options else (),
                                f"write {{{name}: {{{key}: 20, percentile: 99}}}}")
    return ScenarioChoice(name=name, options=out)


# ------------------------------------------------------------------------------ the worker's plan
@dataclass(frozen=True)
class LoadPlan:
    """What a scenario's group worker needs: its target, options, the batch shapes per cell batch size."""

    target: str
    options: dict[str, Any]
    timeout_s_per_member: float

    def payload(self, overhead_ns: float) -> dict[str, Any]:
        """The worker's arguments besides the group's: the timing loop's overhead, or the options."""
        return {"overhead_ns": overhead_ns} if self.target.endswith("measure_group") else {"options": self.options}

    def sizes(self, scenario: str, batch_size: int) -> list[int]:
        return batch_shapes(scenario, self.options, batch_size)


def batch_shapes(scenario: str, options: dict[str, Any], batch_size: int) -> list[int]:
    """The batch shapes a cell of `batch_size` runs: a server's dynamic batcher pads to powers of two up to
    it; an offline pool needs the batch and its remainder."""
    from effbench.measure.scenarios import batcher_sizes, pool_sizes
    if scenario == SERVER:
        return batcher_sizes(batch_size)
    if scenario == OFFLINE:
        return pool_sizes(offline_queries(options, batch_size), batch_size)
    return [batch_size]


def offline_queries(options: dict[str, Any], batch_size: int) -> int:
    return int(options.get("queries") or max(64, 8 * batch_size))


# --quick: a server search of at most this long per variant, with probes of at most this many queries
QUICK_SERVER = {"max_time_s": 10.0, "queries": 300, "min_duration_s": 0.3}


def load_plan(choice: ScenarioChoice, budget: dict, base_timeout_s: float, quick: bool = False) -> LoadPlan:
    """The group worker of a scenario, its options with their defaults, and its timeout per member."""
    s = choice.settings
    if quick and choice.name == SERVER:
        s = {**s, **{k: min(s[k], v) for k, v in QUICK_SERVER.items()}}
    if choice.name == OFFLINE:
        s = {**s, "min_time_s": s.get("min_time_s", budget["min_time_s"]),
             "max_time_s": s.get("max_time_s", budget["max_time_s"])}
        return LoadPlan("effbench.measuring:measure_load", s, base_timeout_s + 3 * s["max_time_s"])
    if choice.name == SERVER:
        return LoadPlan("effbench.measuring:measure_load", s, base_timeout_s + 2 * s["max_time_s"])
    return LoadPlan("effbench.measuring:measure_group", s, base_timeout_s)


# ------------------------------------------------------------------------------ record sections
def sections(member: dict) -> dict[str, Any]:
    """The scenario's typed sections from one member of a group worker's answer."""
    out: dict[str, Any] = {}
    if member.get("offline"):
        out["offline"] = Offline.from_json(member["offline"])
    if member.get("server"):
        out["server"] = Server.from_json(member["server"])
    return out


def merged_sections(ok: Sequence[Record]) -> dict[str, Any]:
    """A cell's offline and server sections over its rounds: the median of the rounds' values with a
    t-interval on logs over them (`measure.stats.over_rounds`), as a latency median is merged."""
    out: dict[str, Any] = {}
    offs = [r.offline for r in ok if r.offline]
    if offs:
        out["offline"] = _merge_offline(offs)
    servers = [r.server for r in ok if r.server]
    if servers:
        out["server"] = _merge_server(servers)
    return out


def _over_rounds(values: list[float]):
    from effbench.measure.stats import UNSTABLE_REL_HALFWIDTH, over_rounds
    est = over_rounds(values)
    return est, bool(est and est.rel_halfwidth > UNSTABLE_REL_HALFWIDTH)


def _merge_offline(offs: list[Offline]) -> Offline:
    values = [o.samples_per_s for o in offs if o.samples_per_s]
    last = offs[-1]
    est, unstable = _over_rounds(values)
    if est is None:
        return last
    return last.replace(samples_per_s=est.value, ci=(est.lo, est.hi), ci_level=est.level, ci_scope=est.scope,
                        ci_method=est.method, passes=sum(o.passes or 0 for o in offs),
                        elapsed_s=sum(o.elapsed_s or 0 for o in offs), round_samples_per_s=tuple(values),
                        unstable=unstable)


def _merge_server(servers: list[Server]) -> Server:
    """max_qps over rounds; the figures at the peak come from the median round; the curve holds every
    round's probes."""
    found = [s for s in servers if s.max_qps]
    last = servers[-1]
    if not found:
        return last
    values = [s.max_qps for s in found]
    median_round = sorted(found, key=lambda s: s.max_qps)[(len(found) - 1) // 2]
    est, unstable = _over_rounds(values)
    curve = tuple(sorted(p for s in servers for p in s.curve))
    probes = [{**p, "round": i} for i, s in enumerate(servers) for p in s.probes]
    base = median_round.replace(curve=curve, probes=probes, round_max_qps=tuple(values))
    if est is None:
        return base
    note = (f"{len(servers) - len(found)} of {len(servers)} rounds found no rate within the bound"
            if len(found) < len(servers) else None)
    return base.replace(max_qps=est.value, max_qps_ci=(est.lo, est.hi), ci_level=est.level, ci_scope=est.scope,
                        ci_method=est.method, unstable=unstable, reason=note or base.reason)
