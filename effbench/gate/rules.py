"""Gate rules: `METRIC:THRESHOLD` texts (`--rule`, a suite's `gate:` block), their defaults and `METRIC:off`.

A rule says how much change in the worse direction a metric may show; `effbench.gate.decide` applies it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from effbench.errors import UserError
from effbench.gate.metrics import METRICS, metric_name


@dataclass(frozen=True)
class Rule:
    """`metric:threshold`: how much change in the worse direction a metric may show.

    kind "relative": threshold is a fraction (5% -> 0.05) of the baseline value.
    kind "absolute_pp": threshold is in percentage points (quality metrics, which are fractions).
    The sign in the text is optional: the metric itself knows which direction is worse.
    """

    metric: str
    threshold: float
    kind: str = "relative"

    def __str__(self) -> str:
        # written as the allowed change in the worse direction: quality.relative:-0.5pp, latency.median:5%
        sign = "-" if self.metric in METRICS and METRICS[self.metric].higher_is_better and self.threshold else ""
        if self.kind == "absolute_pp":
            return f"{self.metric}:{sign}{self.threshold:g}pp"
        return f"{self.metric}:{sign}{self.threshold * 100:g}%"


_RULE_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*:\s*([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*(%|pp)\s*$")
_OFF_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*:\s*off\s*$")


def parse_rule(text: str, *, source: str = "--rule") -> Rule:
    """'latency.median:5%', 'quality.relative:-0.5pp', 'size:0%' -> Rule; bad text -> UserError."""
    example = "e.g. latency.median:5% or quality.relative:-0.5pp"
    m = _RULE_RE.match(str(text))
    if not m:
        if isinstance(text, str) and ":" in text and text.split(":", 1)[1].strip().lstrip("+-").replace(".", "", 1).isdigit():
            raise UserError(f"rule '{text}' has no unit", field=source,
                            fix=f"end the threshold with % (relative) or pp (percentage points), {example}")
        raise UserError(f"cannot read rule '{text}'", field=source,
                        fix=f"write METRIC:THRESHOLD with METRIC one of {', '.join(METRICS)}; {example}")
    name, number, unit = m.group(1), float(m.group(2)), m.group(3)
    metric = metric_name(name, source)
    kind = "absolute_pp" if unit == "pp" else "relative"
    if kind not in METRICS[metric].units:
        raise UserError(f"rule '{text}': {metric} takes a relative threshold, not percentage points",
                        field=source, fix=f"write it with %, e.g. {metric}:5%")
    threshold = abs(number) if kind == "absolute_pp" else abs(number) / 100.0
    return Rule(metric, threshold, kind)


# On by default: the timing most users care about plus everything that cannot be noisy.
# Opt-in (noisy or machine-dependent; add with --rule or a suite's gate: block):
# latency.p90/p99 (tails need n >= 662 per store), throughput and offline.throughput (one value per round),
# LoadGen's single-/multi-stream percentiles (one per round, tails), energy.
DEFAULT_RULES: list[Rule] = [
    Rule("latency.median", 0.05),
    Rule("memory.peak", 0.10),
    Rule("size", 0.0),
    Rule("macs", 0.0),
    Rule("quality.relative", 0.5, "absolute_pp"),
    # the peak rate under a latency bound: its search stops within 5%, so 10% is the smallest drop it can see
    Rule("server.max_qps", 0.10),
    # generative cells: a request's first token and each token after it, and decode's rate (one value per
    # round: tested on rounds; a store of one round cannot show significance and reads as unstable)
    Rule("ttft_ms", 0.10),
    Rule("tpot_ms", 0.05),
    Rule("decode_tokens_per_s", 0.05),
]
OPT_IN_RULES: list[Rule] = [
    Rule("latency.p99", 0.10),
    Rule("throughput", 0.05),
    Rule("offline.throughput", 0.05),
    Rule("single_stream.percentile", 0.10),
    Rule("multi_stream.percentile", 0.10),
    Rule("energy", 0.05),
]


def resolve_rules(texts: Iterable[str] = (), *, suite_gate: Iterable[str] | None = None,
                  source: str = "--rule", suite_source: str = "gate.rules") -> list[Rule]:
    """DEFAULT_RULES, overridden by metric by a suite's `gate:` list, then by `--rule` texts.

    `METRIC:off` drops a rule (e.g. `memory.peak:off`).
    """
    rules: dict[str, Rule | None] = {r.metric: r for r in DEFAULT_RULES}
    for texts_, src in ((suite_gate or (), suite_source), (texts, source)):
        for i, text in enumerate(texts_):
            where = f"{src}[{i}]" if src == suite_source else src
            off = _OFF_RE.match(str(text))
            if off:
                rules[metric_name(off.group(1), where)] = None
                continue
            rule = parse_rule(text, source=where)
            rules[rule.metric] = rule
    return [r for r in rules.values() if r is not None]
