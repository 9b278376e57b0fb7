"""The regression gate: a verdict per cell and metric for two results stores (`compare`) or for baseline
and candidate records measured interleaved (`compare_ab`). Statistics live in `effbench.measure.stats`.

metrics: what can be compared; rules: `METRIC:THRESHOLD`; plan: one row's values and test; decide:
significance and verdicts; provenance: can the stores be compared; verdict and render: the answer.
"""
from __future__ import annotations

from effbench.gate.ab import compare_ab
from effbench.gate.metrics import ALIASES, METRICS, Metric
from effbench.gate.provenance import environment_warnings, speed_ratio
from effbench.gate.rules import DEFAULT_RULES, OPT_IN_RULES, Rule, parse_rule, resolve_rules
from effbench.gate.stores import compare, compare_paths
from effbench.gate.verdict import TESTS, VERDICTS, Verdict, render_verdict

__all__ = ["compare", "compare_paths", "compare_ab", "Verdict", "VERDICTS", "TESTS", "Rule", "parse_rule",
           "resolve_rules", "DEFAULT_RULES", "OPT_IN_RULES", "Metric", "METRICS", "ALIASES", "speed_ratio",
           "environment_warnings", "render_verdict"]
