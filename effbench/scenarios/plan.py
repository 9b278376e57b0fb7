"""The suite's `scenarios:` entries: their grammar and defaults, what a scenario's worker needs (batch shapes,
options, time budget) and its record sections from a worker's answer (`results.merge` merges them over rounds).

single-stream / {single-stream: {loadgen: false}}: one query at a time: the interleaved timing loop of
  `measure.latency` (the paired speedup vs FP32), then, for batch-1 cells, one LoadGen SingleStream run per
  variant and round (its p90 and early-stopping estimate); `loadgen: false` leaves LoadGen out.
multi-stream / {multi-stream: {samples_per_query: 8}}: LoadGen's MultiStream: a query of 8 samples at a time,
  the 99th percentile of the queries' latency.
offline / {offline: {queries: N, streams: k}}: a pool of N queries worked through at the cell's batch size.
{server: {latency_bound_ms: B, percentile: 99}}: Poisson arrivals; the peak rate within the bound.
The load comes from MLPerf LoadGen (`effbench.scenarios.loadgen`); docs/measurement.md, "Scenarios".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from effbench.errors import did_you_mean
from effbench.results.scenarios import MultiStream, Offline, Server, SingleStream

SINGLE_STREAM, MULTI_STREAM, OFFLINE, SERVER = "single-stream", "multi-stream", "offline", "server"
SCENARIOS = (SINGLE_STREAM, MULTI_STREAM, OFFLINE, SERVER)  # the first is the suite's default


class ScenarioError(ValueError):
    """A bad `scenarios:` entry: the message, the path below the entry, the fix."""

    def __init__(self, message: str, path: tuple = (), fix: str | None = None) -> None:
        super().__init__(message)
        self.path, self.fix = path, fix


def _number(unit: str, example: float, *, zero: bool = False, most: float = 86_400_000, default: Any = None):
    """A number of `unit` above 0 (or from 0), at most `most`; its words for an error and an example."""
    what = "0 or a positive number" if zero else "a positive number"
    limits = {"ge": 0} if zero else {"gt": 0}
    return Field(default, **limits, le=most, strict=True, allow_inf_nan=False,
                 description=f"{what} of {unit} up to {most:,.0f}", examples=[example])


def _count(least: int, example: int, why: str = "", most: int = 10_000_000, default: Any = None):
    return Field(default, ge=least, le=most, strict=True, description=f"a whole number from {least}{why} to {most:,}",
                 examples=[example])


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _percentile(default: float, whose: str):
    return Field(default, gt=0, lt=100, strict=True, allow_inf_nan=False, description="above 0 and below 100",
                 examples=[f"{default:g} (MLPerf's {whose} percentile)"])


class SingleStreamOptions(_Options):
    # after the paired loop, one LoadGen SingleStream run per batch-1 cell and round (LoadGen's query is one
    # sample; a batch-8 call is what multi-stream measures). MLPerf asks 1024 queries and 10 minutes for a
    # submission; 256 queries (64 is the fewest with which LoadGen's early stopping bounds a p90) for the
    # suite's measure.min_time_s unless min_duration_s keep `make demo` short. max_duration_s caps a run, as
    # does what the worker's timeout leaves (LoadGen then says INVALID if too few queries ran).
    loadgen: bool = Field(True, strict=True, description="true or false", examples=["false"])
    percentile: float = _percentile(90.0, "single-stream")
    queries: int = _count(1, 1024, " (LoadGen's min_query_count; 64 for early stopping at p90)", default=256)
    min_duration_s: float | None = _number("seconds", 0.5, zero=True, most=86_400)
    max_duration_s: float = _number("seconds", 30, most=86_400, default=30.0)


class MultiStreamOptions(_Options):
    # LoadGen's MultiStream: one query of samples_per_query samples at a time (the next issued when it
    # completes); the figure is its 99th percentile per-query latency. 662 queries is the fewest with which
    # LoadGen's early stopping bounds a p99; each run at least min_duration_s (the suite's
    # measure.min_time_s unless given), at most max_duration_s.
    samples_per_query: int = _count(1, 8, " (LoadGen's multi_stream_samples_per_query)", most=4096, default=8)
    percentile: float = _percentile(99.0, "multi-stream")
    queries: int = _count(1, 662, " (LoadGen's min_query_count; 662 for early stopping at p99)", default=662)
    min_duration_s: float | None = _number("seconds", 1, zero=True, most=86_400)
    max_duration_s: float = _number("seconds", 60, most=86_400, default=60.0)


class OfflineOptions(_Options):
    # a pool of 8 batches (at least 64 queries) unless `queries`; passes repeated until the suite's min_time_s
    queries: int | None = _count(1, 1024)
    streams: int = _count(1, 2, most=64, default=1)
    min_time_s: float | None = _number("seconds", 2, most=86_400)
    max_time_s: float | None = _number("seconds", 20, most=86_400)
    # a generative model (task: generate): how many queued requests its session decodes together, swept; the
    # cell's figure is the size with the most output tokens/s (default 1 and 4). A classifier's offline cells
    # take the suite's batch_sizes instead.
    batch_sizes: list[int] | None = Field(None, min_length=1, max_length=16, strict=True,
                                          description="a list of 1 to 16 whole numbers from 1 to 256",
                                          examples=["[1, 4, 8]"])

    @field_validator("batch_sizes")
    @classmethod
    def _sizes(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(not 1 <= b <= 256 for b in v):
            raise ValueError("whole numbers from 1 to 256")
        return v


class ServerOptions(_Options):
    # LoadGen's server percentile; 1000 queries per probe bound a p99 by its early stopping with one overrun
    # (662), each lasting at least min_duration_s (LoadGen's min_duration_ms is 10 minutes for a submission;
    # one second here); the whole search of one variant stops after max_time_s.
    latency_bound_ms: float | None = _number("milliseconds", 20)
    # a generative model (task: generate), MLPerf's LLM form: TTFT and TPOT at the percentile within these
    ttft_ms: float | None = _number("milliseconds", 2000)
    tpot_ms: float | None = _number("milliseconds", 100)
    percentile: float = Field(99.0, gt=0, lt=100, strict=True, allow_inf_nan=False,
                              description="above 0 and below 100", examples=["99 (MLPerf's server percentile)"])
    queries: int = _count(100, 1000, " (LoadGen's min_query_count)", default=1000)
    min_duration_s: float = _number("seconds", 1, most=86_400, default=1.0)
    max_time_s: float = _number("seconds", 60, most=86_400, default=60.0)
    max_wait_ms: float = _number("milliseconds", 2, zero=True, default=0.0)
    start_qps: float | None = _number("queries per second", 100, most=1e9)

    @model_validator(mode="after")
    def _a_bound(self) -> ServerOptions:
        if (self.ttft_ms is None) != (self.tpot_ms is None):
            raise PydanticCustomError("token_bounds", "ttft_ms and tpot_ms go together")
        if self.latency_bound_ms is None and self.ttft_ms is None:
            raise PydanticCustomError("no_bound", "the server scenario needs latency_bound_ms (or ttft_ms and "
                                      "tpot_ms for a generative model)")
        return self


# name -> its options (pydantic); an option left out takes its default (`ScenarioChoice.settings`)
OPTIONS: dict[str, type[_Options]] = {SINGLE_STREAM: SingleStreamOptions, MULTI_STREAM: MultiStreamOptions,
                                       OFFLINE: OfflineOptions, SERVER: ServerOptions}


def _scenario_error(name: str, e: ValidationError, given: bool) -> ScenarioError:
    """pydantic's first complaint about a scenario's options, in the suite's words."""
    err = e.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else ""
    model = OPTIONS[name]
    if err["type"] in ("no_bound", "token_bounds"):
        return ScenarioError(err["msg"], (name,) if given else (),
                             f"write {{{name}: {{latency_bound_ms: 20, percentile: 99}}}} or "
                             f"{{{name}: {{ttft_ms: 2000, tpot_ms: 100, percentile: 99}}}}")
    if err["type"] == "extra_forbidden":
        allowed = list(model.model_fields)
        hint = f"expected one of {', '.join(allowed)}" if allowed else f"{name} takes no options"
        return ScenarioError(f"unknown key '{key}'{did_you_mean(key, allowed)}", (name, key), hint)
    if err["type"] == "missing":
        return ScenarioError(f"the {name} scenario needs {key}", (name,) if given else (),
                             f"write {{{name}: {{{key}: 20, percentile: 99}}}}")
    f = model.model_fields[key]
    return ScenarioError(f"{key} must be {f.description} (got {err.get('input')!r})", (name, key),
                         f"e.g. {key}: {(f.examples or ['?'])[0]}")


@dataclass(frozen=True)
class ScenarioChoice:
    """One entry of `scenarios:`: its name (the cell id's last part) and the options the user gave."""

    name: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def settings(self) -> dict[str, Any]:
        """Every option, the defaults filled in (a required option the choice lacks is absent)."""
        defaults = {k: f.default for k, f in OPTIONS[self.name].model_fields.items()
                    if not f.is_required() and f.default is not None}  # None: the suite's measure: decides
        return {**defaults, **self.options}


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
    try:
        out = OPTIONS[name].model_validate(options).model_dump(exclude_unset=True)
    except ValidationError as e:
        raise _scenario_error(name, e, bool(options)) from None
    choice = ScenarioChoice(name=name, options=out)
    s = choice.settings
    if s.get("min_duration_s") is not None and s.get("max_duration_s", 1e300) < s["min_duration_s"]:
        raise ScenarioError(f"max_duration_s ({s['max_duration_s']:g}) is below min_duration_s "
                            f"({s['min_duration_s']:g}): LoadGen would stop every run short of its minimum",
                            (name, "max_duration_s"), f"e.g. max_duration_s: {max(2 * s['min_duration_s'], 1):g}")
    return choice


# ------------------------------------------------------------------------------ the worker's plan
@dataclass(frozen=True)
class LoadPlan:
    """What a scenario's group worker needs: its target, options, the batch shapes per cell batch size."""

    target: str
    options: dict[str, Any]
    timeout_s_per_member: float

    @property
    def loop(self) -> bool:
        """The single-stream group worker (`execution.tasks.measure_group`: the paired interleaved loop)."""
        return self.target.endswith(":measure_group")

    @property
    def logs(self) -> bool:
        """Whether the worker runs LoadGen, so needs a folder for its logs (`log_dir`)."""
        return not self.loop or bool(self.options.get("loadgen"))

    def payload(self, overhead_ns: float) -> dict[str, Any]:
        """The worker's arguments besides the group's: the timing loop's overhead (and single-stream's LoadGen
        settings where it runs), or the options."""
        if not self.loop:
            return {"options": self.options}
        if not self.options.get("loadgen"):
            return {"overhead_ns": overhead_ns}
        # the worker's timeout is this per member: its LoadGen runs end within it (`scenarios.worker`)
        return {"overhead_ns": overhead_ns, "loadgen": {**self.options, "timeout_s_per_member": self.timeout_s_per_member}}

    def sizes(self, scenario: str, batch_size: int) -> list[int]:
        return batch_shapes(scenario, self.options, batch_size)


def batch_shapes(scenario: str, options: dict[str, Any], batch_size: int) -> list[int]:
    """The batch shapes a cell of `batch_size` runs: a server's dynamic batcher pads to powers of two up to
    it; an offline pool needs the batch and its remainder; a multi-stream query of N samples runs as calls of
    the cell's batch and its remainder (N / batch calls), or as one call padded up to a batch above N."""
    from effbench.scenarios.batches import batcher_sizes, pool_sizes
    if scenario == SERVER:
        return batcher_sizes(batch_size)
    if scenario == OFFLINE:
        return pool_sizes(offline_queries(options, batch_size), batch_size)
    if scenario == MULTI_STREAM:
        n = int(options.get("samples_per_query") or 8)
        return [batch_size] if batch_size >= n else pool_sizes(n, batch_size)
    return [batch_size]


def offline_queries(options: dict[str, Any], batch_size: int) -> int:
    return int(options.get("queries") or max(64, 8 * batch_size))


# --quick: a server search of at most this long per variant, LoadGen runs of this many queries (662 is the
# fewest with which LoadGen's early stopping can bound a p99 with one query over the bound)
QUICK_SERVER = {"max_time_s": 10.0, "queries": 700, "min_duration_s": 0.3}
# --quick: LoadGen's fewest queries for early stopping at p90 / p99, a short minimum duration
QUICK_STREAMS = {SINGLE_STREAM: {"queries": 64, "min_duration_s": 0.1, "max_duration_s": 10.0},
                 MULTI_STREAM: {"queries": 662, "min_duration_s": 0.2, "max_duration_s": 10.0}}
# LoadGen's multi-stream runs per variant and round, alternated in a random order cycle after cycle so each
# cycle's ratio of the percentile latency vs FP32 is paired (`scenarios.worker`)
MULTI_STREAM_CYCLES = 3


def load_plan(choice: ScenarioChoice, budget: dict, base_timeout_s: float, quick: bool = False) -> LoadPlan:
    """The group worker of a scenario, its options with their defaults, and its timeout per member."""
    s = choice.settings
    if quick and choice.name == SERVER:
        s = {**s, **{k: min(s[k], v) for k, v in QUICK_SERVER.items()}}
    if choice.name in QUICK_STREAMS:  # a run lasts the suite's min_time_s unless the scenario says
        s = {**s, "min_duration_s": s.get("min_duration_s", budget["min_time_s"])}
        if quick:
            s = {**s, **{k: min(s[k], v) for k, v in QUICK_STREAMS[choice.name].items()}}
        s["max_duration_s"] = max(s["max_duration_s"], s["min_duration_s"])
    if choice.name == OFFLINE:
        s = {**s, "min_time_s": s.get("min_time_s", budget["min_time_s"]),
             "max_time_s": s.get("max_time_s", budget["max_time_s"])}
        return LoadPlan("effbench.scenarios.worker:measure_load", s, base_timeout_s + 3 * s["max_time_s"])
    if choice.name == SERVER:
        return LoadPlan("effbench.scenarios.worker:measure_load", s, base_timeout_s + 2 * s["max_time_s"])
    if choice.name == MULTI_STREAM:  # each run ends by max_duration_s (+ its warmup and log parsing)
        return LoadPlan("effbench.scenarios.worker:measure_load", s,
                        base_timeout_s + MULTI_STREAM_CYCLES * (s["max_duration_s"] + 5))
    # single-stream: its LoadGen runs fit in the worker's own timeout (each capped by what it leaves), so a
    # hung worker is found as soon as without them
    return LoadPlan("effbench.execution.tasks:measure_group", s, base_timeout_s)


# ------------------------------------------------------------------------------ record sections
def sections(member: dict) -> dict[str, Any]:
    """The scenario's typed sections from one member of a group worker's answer."""
    out: dict[str, Any] = {}
    if member.get("offline"):
        out["offline"] = Offline.from_json(member["offline"])
    if member.get("server"):
        out["server"] = Server.from_json(member["server"])
    if member.get("multi_stream"):
        out["multi_stream"] = MultiStream.from_json(member["multi_stream"])
    if member.get("single_stream"):
        out["single_stream"] = SingleStream.from_json(member["single_stream"])
    return out
