"""What the gate can compare: each metric's record field, the direction that is worse, its unit and noise.

Rules (`effbench.gate.rules`) name these metrics; the planner (`effbench.gate.plan`) reads their values.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from effbench.errors import UserError, did_you_mean
from effbench.results.store import Record


@dataclass(frozen=True)
class Metric:
    """What a rule can name: where the value lives, which direction is worse, how noisy it is.

    kind: "timing" (raw samples and per-round values; significance-tested),
          "noisy" (one value per round; significance-tested on rounds, untestable from one round),
          "stable" (one value per round; rounds tested when present, else compared by tolerance),
          "deterministic" (static property of the variant; compared by tolerance only).
    speed: how the value scales with machine speed under --normalize (+1 time, -1 rate, 0 none).
    """

    name: str
    kind: str
    higher_is_better: bool
    value: Callable[[Record], float | None]
    units: tuple[str, ...] = ("relative",)
    speed: int = 0
    quantile: float | None = None  # for tail latency: which quantile of the raw samples
    scale: float = 1.0             # value -> display/rule unit (fractions -> percentage points)
    unit: str = ""


def _get(section: str, key: str) -> Callable[[Record], float | None]:
    def get(r: Record) -> float | None:
        v = getattr(getattr(r, section), key, None)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    return get


def _size(r: Record) -> float | None:
    counted = _get("model_stats", "size_bytes")(r)
    return counted if counted is not None else _get("variant", "size_bytes")(r)


def _throughput(r: Record) -> float | None:
    return float(r.throughput_ips) if r.throughput_ips else None


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("latency.median", "timing", False, _get("latency_ms", "median"), speed=1, unit="ms"),
    Metric("latency.p90", "timing", False, _get("latency_ms", "p90"), speed=1, quantile=0.90, unit="ms"),
    Metric("latency.p99", "timing", False, _get("latency_ms", "p99"), speed=1, quantile=0.99, unit="ms"),
    Metric("throughput", "noisy", True, _throughput, speed=-1, unit="items/s"),
    # the load scenarios (effbench.scenarios.plan): one value per round each
    Metric("server.max_qps", "noisy", True, _get("server", "max_qps"), speed=-1, unit="queries/s"),
    Metric("offline.throughput", "noisy", True, _get("offline", "samples_per_s"), speed=-1, unit="samples/s"),
    # LoadGen's headline latencies: single-stream's 90th percentile, multi-stream's 99th per 8-sample query
    Metric("single_stream.percentile", "noisy", False, _get("single_stream", "percentile_ms"), speed=1, unit="ms"),
    Metric("multi_stream.percentile", "noisy", False, _get("multi_stream", "percentile_ms"), speed=1, unit="ms"),
    # generative cells (task: generate): one value per round each, the round's median over its requests
    Metric("ttft_ms", "noisy", False, _get("generation", "ttft_ms"), speed=1, unit="ms"),
    Metric("tpot_ms", "noisy", False, _get("generation", "tpot_ms"), speed=1, unit="ms"),
    Metric("decode_tokens_per_s", "noisy", True, _get("generation", "decode_tokens_per_s"), speed=-1,
           unit="tokens/s"),
    Metric("energy", "noisy", False, _get("energy", "j_per_inference"), unit="J/inference"),
    Metric("memory.peak", "stable", False, _get("memory", "peak_rss_bytes"), unit="bytes"),
    Metric("size", "deterministic", False, _size, unit="bytes"),
    Metric("macs", "deterministic", False, _get("model_stats", "macs"), unit="MACs"),
    Metric("quality.relative", "deterministic", True, _get("quality", "relative"),
           units=("absolute_pp", "relative"), scale=100.0, unit="pp"),
    Metric("quality.value", "deterministic", True, _get("quality", "value"),
           units=("absolute_pp", "relative"), scale=100.0, unit="pp"),
)}
ALIASES = {"latency": "latency.median", "memory": "memory.peak", "memory.peak_rss": "memory.peak",
           "quality": "quality.relative", "flops": "macs", "size_bytes": "size", "max_qps": "server.max_qps",
           "single_stream.percentile_ms": "single_stream.percentile", "multi_stream.percentile_ms": "multi_stream.percentile",
           "generation.ttft_ms": "ttft_ms", "generation.tpot_ms": "tpot_ms",
           "generation.decode_tokens_per_s": "decode_tokens_per_s"}


def metric_name(name: str, source: str) -> str:
    """The metric a rule names (aliases resolved); an unknown name is a UserError at `source`."""
    name = ALIASES.get(name, name)
    if name not in METRICS:
        raise UserError(f"unknown gate metric '{name}'{did_you_mean(name, [*METRICS, *ALIASES])}",
                        field=source, fix=f"use one of {', '.join(METRICS)}")
    return name
