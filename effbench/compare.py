"""The regression gate: rules, statistics and a verdict per cell and metric for two results stores.

Decision rule (DESIGN.md "The gate", docs/ci.md): a noisy metric regresses only when its change is
beyond the rule's threshold *and* significant *and* clears the cell's own noise floor.
"""
from __future__ import annotations

import json
import math
import sys
import types
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from effbench.errors import UserError, did_you_mean
from effbench.measure.latency import median_ci_ranks
from effbench.results import Record, Results, load

VERDICTS = ("regressed", "improved", "unchanged", "unstable")
TESTS = ("mann-whitney-rounds", "mann-whitney-samples", "ci-overlap", "wilcoxon-paired-rounds",
         "ci-paired-rounds", "exact", "none")
CI_LEVEL = 0.99
# The noise floor is the half-width of this CI of a cell's median over rounds (see `noise_floor`).
FLOOR_LEVEL = 0.95
# Two stores whose machine-speed indexes differ by more than this are not comparable without care.
SPEED_INDEX_TOLERANCE = 0.10


# --------------------------------------------------------------------------- metrics


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
        v = (getattr(r, section) or {}).get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    return get


def _size(r: Record) -> float | None:
    return _get("model_stats", "size_bytes")(r) if _get("model_stats", "size_bytes")(r) is not None \
        else _get("variant", "size_bytes")(r)


def _throughput(r: Record) -> float | None:
    return float(r.throughput_ips) if r.throughput_ips else None


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("latency.median", "timing", False, _get("latency_ms", "median"), speed=1, unit="ms"),
    Metric("latency.p90", "timing", False, _get("latency_ms", "p90"), speed=1, quantile=0.90, unit="ms"),
    Metric("latency.p99", "timing", False, _get("latency_ms", "p99"), speed=1, quantile=0.99, unit="ms"),
    Metric("throughput", "noisy", True, _throughput, speed=-1, unit="items/s"),
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
           "quality": "quality.relative", "flops": "macs", "size_bytes": "size"}


# --------------------------------------------------------------------------- rules


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
    metric = _metric_name(name, source)
    kind = "absolute_pp" if unit == "pp" else "relative"
    if kind not in METRICS[metric].units:
        raise UserError(f"rule '{text}': {metric} takes a relative threshold, not percentage points",
                        field=source, fix=f"write it with %, e.g. {metric}:5%")
    threshold = abs(number) if kind == "absolute_pp" else abs(number) / 100.0
    return Rule(metric, threshold, kind)


def _metric_name(name: str, source: str) -> str:
    name = ALIASES.get(name, name)
    if name not in METRICS:
        raise UserError(f"unknown gate metric '{name}'{did_you_mean(name, [*METRICS, *ALIASES])}",
                        field=source, fix=f"use one of {', '.join(METRICS)}")
    return name


# On by default: the timing most users care about plus everything that cannot be noisy.
# Opt-in (noisy or machine-dependent; add with --rule or a suite's gate: block):
# latency.p90/p99 (tails need n >= 662 per store), throughput (one value per round), energy.
DEFAULT_RULES: list[Rule] = [
    Rule("latency.median", 0.05),
    Rule("memory.peak", 0.10),
    Rule("size", 0.0),
    Rule("macs", 0.0),
    Rule("quality.relative", 0.5, "absolute_pp"),
]
OPT_IN_RULES: list[Rule] = [
    Rule("latency.p99", 0.10),
    Rule("throughput", 0.05),
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
                rules[_metric_name(off.group(1), where)] = None
                continue
            rule = parse_rule(text, source=where)
            rules[rule.metric] = rule
    return [r for r in rules.values() if r is not None]


# --------------------------------------------------------------------------- verdict


@dataclass
class Verdict:
    """Rows per (cell_id, metric), cells present on one side only, warnings, summary and exit code."""

    rows: list[dict[str, Any]]
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0
    rules: list[Rule] = field(default_factory=list)
    alpha: float = 0.01
    mode: str = "stores"  # "stores" | "ab"

    @property
    def regressed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["verdict"] == "regressed"]

    def to_json(self) -> dict[str, Any]:
        return _clean({"schema": "effbench.verdict/1", "mode": self.mode, "exit_code": self.exit_code,
                       "alpha": self.alpha, "rules": [str(r) for r in self.rules],
                       "summary": self.summary, "warnings": self.warnings, "added": self.added,
                       "removed": self.removed, "rows": self.rows})

    def render(self, fmt: str = "table") -> str:
        if fmt == "json":
            return json.dumps(self.to_json(), indent=2, allow_nan=False)
        if fmt == "md":
            return _render_md(self)
        if fmt == "table":
            return _render_table(self)
        raise UserError(f"unknown format '{fmt}'{did_you_mean(fmt, ['table', 'md', 'json'])}",
                        field="--format", fix="use table, md or json")


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (np.floating, np.integer)):
        return _clean(x.item())
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


# --------------------------------------------------------------------------- statistics


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in input order."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if not m:
        return []
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj = np.maximum.accumulate(adj)
    out = np.empty(m)
    out[order] = adj
    return [float(x) for x in out]


def mwu_min_p(n1: int, n2: int) -> float:
    """Smallest two-sided p-value the exact Mann-Whitney U test can give for these sizes."""
    if not (n1 and n2):
        return 1.0
    log_comb = math.lgamma(n1 + n2 + 1) - math.lgamma(n1 + 1) - math.lgamma(n2 + 1)
    return min(1.0, 2.0 * math.exp(-log_comb))


def wilcoxon_min_p(n: int) -> float:
    """Smallest two-sided p-value the exact signed-rank (or sign) test can give for n pairs."""
    return min(1.0, 2.0 / 2.0 ** n) if n else 1.0


def median_ci(values: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float, float]:
    """(lo, hi, actual coverage): order-statistic CI of the median; small n cannot reach `level`."""
    a = np.sort(np.asarray(values, dtype=float))
    n = len(a)
    lo, hi = median_ci_ranks(n, level)
    cover = float(sps.binom.cdf(hi, n, 0.5) - sps.binom.cdf(lo, n, 0.5)) if n else 0.0
    return float(a[lo]), float(a[hi]), cover


def quantile_ci(values: Sequence[float], q: float, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Distribution-free CI of the q-quantile (ranks from Binomial(n, q)); None when n is too small."""
    a = np.sort(np.asarray(values, dtype=float))
    n = len(a)
    if not n:
        return None
    tail = (1 - level) / 2
    lo = int(sps.binom.ppf(tail, n, q))          # 1-based: P(B < lo) < tail
    hi = int(sps.binom.ppf(1 - tail, n, q)) + 1  # 1-based: P(B <= hi - 1) >= 1 - tail
    if lo < 1 or hi > n:
        return None
    return float(a[lo - 1]), float(a[hi - 1])


def noise_floor(values: Sequence[float], *, logs: bool = False) -> float | None:
    """Noise floor of one cell: how far its median over rounds can move by the rounds' spread alone.

    The half-width of the 95% order-statistic CI of the median of the per-round values, in log space,
    as a relative change: exp((log x_(hi) - log x_(lo)) / 2) - 1. With 5 rounds or fewer the interval is
    the whole range (rounds reading 10 and 12 ms: 9.5%). It shrinks as rounds are added, which is how a
    cell whose floor hides the threshold becomes decidable; the whole range would grow instead (more
    rounds, more extremes) and one stray round would set it. `logs`: the values are already log ratios.
    """
    v = [x for x in values if x is not None and (logs or x > 0)]
    if len(v) < 2:
        return None
    lv = sorted(v if logs else (math.log(x) for x in v))
    lo, hi = median_ci_ranks(len(lv), FLOOR_LEVEL)
    return math.exp((lv[hi] - lv[lo]) / 2) - 1


def combined_floor(a: float | None, b: float | None) -> float | None:
    """Floor of a ratio of two independent medians: the two log floors added in quadrature."""
    parts = [math.log1p(f) for f in (a, b) if f is not None]
    return math.exp(math.hypot(*parts)) - 1 if parts else None


# --------------------------------------------------------------------------- comparing one metric


@dataclass
class _Row:
    """A row under construction: values and the plan for its significance test."""

    cell_id: str
    rule: Rule
    base: float | None
    new: float | None
    ratio: float | None = None
    delta: float | None = None
    beyond: str | None = None        # "worse" | "better" | None
    test: str = "exact"
    x: list[float] = field(default_factory=list)   # test inputs (base side / paired log ratios)
    y: list[float] = field(default_factory=list)
    significant: bool | None = None
    p_value: float | None = None
    p_holm: float | None = None
    floor: float | None = None
    notes: list[str] = field(default_factory=list)
    verdict: str = "unchanged"
    quantile: float | None = None    # ci-overlap on a quantile of raw samples instead of the median
    skipped: str | None = None       # why this metric was not compared (becomes a warning)

    def as_dict(self) -> dict[str, Any]:
        m = METRICS[self.rule.metric]
        return {"cell_id": self.cell_id, "metric": self.rule.metric, "base": self.base, "new": self.new,
                "ratio": self.ratio, "delta": self.delta, "unit": m.unit,
                "threshold": str(self.rule).split(":", 1)[1], "p_value": self.p_value,
                "p_holm": self.p_holm, "test": self.test, "noise_floor": self.floor,
                "verdict": self.verdict, "note": "; ".join(self.notes)}


def _direction(rule: Rule, base: float, new: float) -> tuple[float | None, float, str | None]:
    """(ratio, delta in rule units, 'worse'|'better'|None) by the rule's threshold."""
    m = METRICS[rule.metric]
    if base == 0:
        ratio = 1.0 if new == 0 else math.inf
    else:
        ratio = new / base
    delta = (new - base) * m.scale
    if rule.kind == "absolute_pp":
        change = delta
    else:
        change = (ratio - 1.0) if math.isfinite(ratio) else math.copysign(math.inf, new - base)
    if not m.higher_is_better:
        worse, better = change > rule.threshold, change < -rule.threshold
    else:
        worse, better = change < -rule.threshold, change > rule.threshold
    # size:0% means any growth regresses; a float rounding error is not growth
    if rule.threshold == 0 and abs(new - base) <= 1e-12 * max(abs(base), abs(new)):
        worse = better = False
    return ratio, delta, "worse" if worse else "better" if better else None


class _Side:
    """One store, indexed for the gate: merged records by cell, raw rounds by cell."""

    def __init__(self, results: Results, label: str) -> None:
        self.results = results
        self.label = label
        self.by_id = results.by_id()
        self.rounds: dict[str, list[Record]] = {}
        for r in results.raw:
            self.rounds.setdefault(r.cell_id, []).append(r)

    def round_records(self, rec: Record) -> list[Record]:
        raw = [r for r in self.rounds.get(rec.cell_id, [])
               if r.ok and r.config_hash == rec.config_hash and r.round >= 0]
        return sorted(raw, key=lambda r: r.round) if len(raw) >= 2 else []


def _plan_metric(rule: Rule, cell_id: str, b: Record, n: Record, bside: _Side | None,
                 nside: _Side | None, factor: float) -> _Row | None:
    """Values, direction and the significance-test plan for one (cell, metric); None when absent."""
    m = METRICS[rule.metric]
    scale_new = factor ** m.speed if m.speed else 1.0
    bv, nv = m.value(b), m.value(n)
    if m.name == "energy":
        bs, ns = (b.energy or {}).get("source"), (n.energy or {}).get("source")
        if bv is not None and nv is not None and bs != ns:
            return _Row(cell_id, rule, bv, nv, test="none",
                        skipped=f"energy sources differ ({bs} vs {ns}); measured and modeled never mix")
    if bv is None and nv is None:
        return None
    if bv is None or nv is None:
        return _Row(cell_id, rule, bv, nv, test="none",
                    skipped=f"{m.name} is missing in the {'new' if nv is None else 'base'} store")
    row = _Row(cell_id, rule, bv, nv * scale_new)
    if scale_new != 1.0:
        row.notes.append(f"new normalized by speed index x{scale_new:.3f}")

    if m.kind == "deterministic":
        row.test = "exact"
    else:
        brs = bside.round_records(b) if bside else []
        nrs = nside.round_records(n) if nside else []
        if m.name == "latency.median" and len(b.round_medians_ms) >= 2 and len(n.round_medians_ms) >= 2:
            bx, ny = list(b.round_medians_ms), list(n.round_medians_ms)
        elif brs and nrs:
            bx = [v for v in (m.value(r) for r in brs) if v is not None]
            ny = [v for v in (m.value(r) for r in nrs) if v is not None]
        else:
            bx = ny = []
        if len(bx) >= 2 and len(ny) >= 2:
            row.x, row.y = bx, [v * scale_new for v in ny]
            row.base, row.new = float(np.median(row.x)), float(np.median(row.y))
            row.test = "mann-whitney-rounds"
            row.floor = combined_floor(noise_floor(row.x), noise_floor(row.y))
            row.notes.append(f"{len(bx)} vs {len(ny)} rounds")
        elif m.kind == "timing" and b.samples_ms and n.samples_ms:
            row.x, row.y = list(b.samples_ms), [v * scale_new for v in n.samples_ms]
            if m.quantile is None:
                row.test = "mann-whitney-samples"
                row.base, row.new = float(np.median(row.x)), float(np.median(row.y))
            else:
                row.test = "ci-overlap"
                row.quantile = m.quantile
                row.base = float(np.quantile(row.x, m.quantile))
                row.new = float(np.quantile(row.y, m.quantile))
                need = 662 if m.quantile >= 0.99 else 64
                if min(len(row.x), len(row.y)) < need:
                    row.notes.append(f"p{round(m.quantile * 100)} not reliable below n={need}")
            if b.rounds > 1 or n.rounds > 1:
                row.notes.append("rounds in one store only: tested on raw samples")
        elif m.kind == "stable":
            row.test = "exact"
            row.notes.append("one value per store, compared by tolerance")
        else:
            row.test = "none"
            row.notes.append("one round per store: significance cannot be tested")
    row.ratio, row.delta, row.beyond = _direction(rule, row.base, row.new)
    for rec, label in ((b, "base"), (n, "new")):
        if m.kind == "timing" and rec.unstable:
            why = (rec.latency_ms or {}).get("unstable_reason") or "missed its CI target"
            row.notes.append(f"{label} unstable: {why}")
    return row


def _run_tests(rows: list[_Row], alpha: float) -> None:
    """Significance for every planned row; Holm's family is one metric across all cells."""
    families: dict[str, list[_Row]] = {}
    for r in rows:
        families.setdefault(r.rule.metric, []).append(r)
    for family in families.values():
        _run_family(family, alpha)


def _run_family(rows: list[_Row], alpha: float) -> None:
    """U tests (Holm-corrected across the family) or CI non-overlap where U cannot reach alpha."""
    candidates = [r for r in rows if r.test in ("mann-whitney-rounds", "mann-whitney-samples")]
    paired = [r for r in rows if r.test == "wilcoxon-paired-rounds"]
    m = max(1, len(candidates) + len(paired))
    # U cannot reach alpha/m with too few values (3 vs 3 rounds: p >= 0.1): use 99% CIs instead.
    for r in candidates:
        if mwu_min_p(len(r.x), len(r.y)) > alpha / m:
            r.notes.append(f"U cannot reach alpha/{m} with {len(r.x)}+{len(r.y)} values: CI of the median")
            r.test = "ci-overlap"
    for r in paired:
        if wilcoxon_min_p(len(r.x)) > alpha / m:
            r.notes.append(f"signed-rank test cannot reach alpha/{m} with {len(r.x)} rounds: CI of the median ratio")
            r.test = "ci-paired-rounds"
    tested = []
    for r in rows:
        if r.test in ("mann-whitney-rounds", "mann-whitney-samples"):
            if np.ptp(r.x + r.y) == 0:
                r.p_value = 1.0
            else:
                r.p_value = float(sps.mannwhitneyu(r.x, r.y, alternative="two-sided").pvalue)
            tested.append(r)
        elif r.test == "wilcoxon-paired-rounds":
            if not np.any(np.asarray(r.x) != 0):
                r.p_value = 1.0
            else:
                r.p_value = float(sps.wilcoxon(r.x, alternative="two-sided", zero_method="zsplit").pvalue)
            tested.append(r)
        elif r.test == "ci-overlap":
            if r.quantile is not None:
                q = r.quantile
                cb, cn = quantile_ci(r.x, q), quantile_ci(r.y, q)
                if cb is None or cn is None:
                    r.notes.append(f"too few samples for a {CI_LEVEL:.0%} CI of p{round(q * 100)}")
                    r.significant = None
                    r.test = "none"
                    continue
            else:
                lo_b, hi_b, cov_b = median_ci(r.x)
                lo_n, hi_n, cov_n = median_ci(r.y)
                cb, cn = (lo_b, hi_b), (lo_n, hi_n)
                if min(cov_b, cov_n) < CI_LEVEL:
                    r.notes.append(f"CI coverage only {min(cov_b, cov_n):.1%}")
            r.significant = cn[0] > cb[1] or cn[1] < cb[0]
        elif r.test == "ci-paired-rounds":
            lo, hi, cov = median_ci(r.x)
            if cov < CI_LEVEL:
                # A 5-round CI covers 93.8%: gating on it flagged 1 of 16 A/A cells here. Too few
                # rounds to decide is `unstable`, never `regressed`.
                r.notes.append(f"CI coverage only {cov:.1%}: {len(r.x)} rounds cannot decide at "
                               f"{CI_LEVEL:.0%}; use --rounds 12 or more")
                r.significant = None
            else:
                r.significant = lo > 0 or hi < 0
    for r, ph in zip(tested, holm([r.p_value for r in tested])):
        r.p_holm = ph
        r.significant = ph <= alpha


def _decide(r: _Row) -> None:
    kind = METRICS[r.rule.metric].kind
    t = r.rule.threshold
    floor_hides = r.floor is not None and r.rule.kind == "relative" and r.floor > t
    if r.beyond is None:
        r.verdict = "unchanged"
        if floor_hides:
            r.verdict = "unstable"
            r.notes.append(f"noise floor {r.floor:.1%} exceeds the {t:.1%} threshold: a change that small cannot be seen")
        return
    good = "improved" if r.beyond == "better" else "regressed"
    if kind == "deterministic" or r.test == "exact":
        r.verdict = good
        return
    if r.test == "none" or r.significant is None:
        r.verdict = "unstable"
        r.notes.append("beyond the threshold but not testable")
        return
    if not r.significant:
        r.verdict = "unstable"
        r.notes.append("beyond the threshold but not significant")
        return
    if floor_hides and r.ratio is not None and abs(math.log(r.ratio)) <= math.log1p(r.floor):
        r.verdict = "unstable"
        r.notes.append(f"change within the cell's noise floor {r.floor:.1%}")
        return
    r.verdict = good


# --------------------------------------------------------------------------- provenance checks


def _speed_index(results: Results) -> dict[str, Any] | None:
    idx = [r.provenance.get("speed_index") for r in results.records
           if isinstance(r.provenance.get("speed_index"), dict)]
    if not idx:
        return None
    names = sorted({str(i.get("name")) for i in idx})
    ms = [float(i["median_ms"]) for i in idx if isinstance(i.get("median_ms"), (int, float)) and i["median_ms"] > 0]
    gf = [float(i["gflops"]) for i in idx if isinstance(i.get("gflops"), (int, float)) and i["gflops"] > 0]
    return {"names": names, "median_ms": float(np.median(ms)) if ms else None,
            "gflops": float(np.median(gf)) if gf else None}


def speed_ratio(base: Results, new: Results) -> tuple[float | None, list[str]]:
    """(new machine time / base machine time on the speed index, warnings)."""
    bi, ni = _speed_index(base), _speed_index(new)
    if bi is None or ni is None:
        missing = " and ".join(s for s, i in (("base", bi), ("new", ni)) if i is None)
        return None, [f"no machine-speed index in {missing}: the two machines cannot be checked for speed"]
    if bi["names"] != ni["names"]:
        return None, [f"speed indexes differ ({', '.join(bi['names'])} vs {', '.join(ni['names'])}): not comparable"]
    if bi["median_ms"] and ni["median_ms"]:
        ratio = ni["median_ms"] / bi["median_ms"]
    elif bi["gflops"] and ni["gflops"]:
        ratio = bi["gflops"] / ni["gflops"]
    else:
        return None, ["speed index has neither median_ms nor gflops"]
    warns = []
    if abs(ratio - 1) > SPEED_INDEX_TOLERANCE:
        warns.append(f"machine-speed index differs by {ratio - 1:+.1%} (new vs base, {bi['names'][0]}): "
                     "timings compare two machines; consider --normalize or the A/B mode")
    return ratio, warns


def environment_warnings(base: Results, new: Results) -> list[str]:
    """Host, Python and package versions that differ between the stores."""
    def collect(res: Results, key: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for r in res.records:
            v = r.provenance.get(key)
            items = v.items() if isinstance(v, dict) else ([(key, v)] if v is not None else [])
            for k, x in items:
                out.setdefault(k, set()).add(json.dumps(x, sort_keys=True) if isinstance(x, (dict, list)) else str(x))
        return out
    warns = []
    for key, label in (("host", "host"), ("python", "python"), ("effbench", "effbench"),
                       ("packages", "package")):
        b, n = collect(base, key), collect(new, key)
        diffs = [f"{k} {'/'.join(sorted(b.get(k, {'-'})))} -> {'/'.join(sorted(n.get(k, {'-'})))}"
                 for k in sorted(set(b) | set(n)) if b.get(k) != n.get(k)]
        if diffs:
            shown = ", ".join(diffs[:6]) + (f", and {len(diffs) - 6} more" if len(diffs) > 6 else "")
            warns.append(f"{label} differs between stores: {shown}")
    return warns


# --------------------------------------------------------------------------- the gate


def _status_row(cell_id: str, b: Record, n: Record) -> dict[str, Any] | None:
    if b.status == n.status:
        return None
    verdict = "regressed" if b.ok else "improved" if n.ok else "unchanged"
    return {"cell_id": cell_id, "metric": "status", "base": b.status, "new": n.status, "ratio": None,
            "delta": None, "unit": "", "threshold": "ok", "p_value": None, "p_holm": None, "test": "exact",
            "noise_floor": None, "verdict": verdict, "note": n.reason or b.reason or ""}


def _finish(rows: list[_Row], status_rows: list[dict], alpha: float, rules: list[Rule],
            warnings: list[str], added: list[str], removed: list[str], require_same_cells: bool,
            mode: str, extra_summary: dict[str, Any]) -> Verdict:
    for r in rows:
        if r.skipped:
            warnings.append(f"{r.cell_id}: {r.rule.metric} not compared: {r.skipped}")
    rows = [r for r in rows if not r.skipped]
    _run_tests(rows, alpha)
    for r in rows:
        _decide(r)
    out = status_rows + [r.as_dict() for r in rows]
    order = {c: i for i, c in enumerate(dict.fromkeys(r["cell_id"] for r in out))}
    metric_order = {"status": -1, **{r.metric: i for i, r in enumerate(rules)}}
    out.sort(key=lambda d: (order[d["cell_id"]], metric_order.get(d["metric"], 99)))
    counts = {v: sum(1 for d in out if d["verdict"] == v) for v in VERDICTS}
    lat = [d["ratio"] for d in out if d["metric"] == "latency.median" and d["ratio"] and math.isfinite(d["ratio"])]
    summary = {"cells": len(order), "counts": counts, "added": len(added), "removed": len(removed),
               "geomean_latency_ratio": float(np.exp(np.mean(np.log(lat)))) if lat else None,
               "latency_cells": len(lat), **extra_summary}
    failed = counts["regressed"] > 0 or (require_same_cells and bool(added or removed))
    return Verdict(rows=out, added=added, removed=removed, warnings=warnings, summary=summary,
                   exit_code=1 if failed else 0, rules=list(rules), alpha=alpha, mode=mode)


def _check_alpha(alpha: float) -> None:
    if not (0 < alpha < 1):
        raise UserError(f"alpha {alpha} is not a probability", field="--alpha", fix="use e.g. --alpha 0.01")


def compare(base: Results | str | Path, new: Results | str | Path, *, rules: list[Rule] | None = None,
            alpha: float = 0.01, normalize: bool = False, require_same_cells: bool = False) -> Verdict:
    """Gate `new` against `base`, cell by cell (matched by cell id), metric by metric (`rules`).

    `base` and `new` are loaded Results or paths (a results.jsonl or a report folder holding one).
    """
    _check_alpha(alpha)
    base = base if isinstance(base, Results) else load(base)
    new = new if isinstance(new, Results) else load(new)
    rules = list(DEFAULT_RULES if rules is None else rules)
    for res, label in ((base, "base"), (new, "new")):
        if not res.records:
            raise UserError(f"the {label} store holds no result records",
                            file=(res.sources or [None])[0], fix="point at a results.jsonl that a finished run wrote")
    warnings = [f"base: {w}" for w in base.warnings] + [f"new: {w}" for w in new.warnings]
    ratio, speed_warns = speed_ratio(base, new)
    warnings += speed_warns + environment_warnings(base, new)
    factor = 1.0
    if normalize:
        if ratio is None:
            raise UserError("--normalize needs a comparable machine-speed index in both stores",
                            fix="re-run both stores with this effbench version, or drop --normalize")
        factor = 1.0 / ratio
    single = [label for res, label in ((base, "base"), (new, "new"))
              if any(r.ok and r.samples_ms and r.rounds < 2 for r in res.records)]
    if single:
        warnings.append(f"{' and '.join(single)} timed in single rounds: drift between runs (+-30% on shared "
                        "machines) is invisible to the test; use several rounds or the A/B mode")
    for res, label in ((base, "base"), (new, "new")):
        ids = [r.cell_id for r in res.records]
        if len(ids) != len(set(ids)):
            warnings.append(f"{label} holds the same cell from several stores; the last one is compared")
    bside, nside = _Side(base, "base"), _Side(new, "new")
    added = sorted(set(nside.by_id) - set(bside.by_id))
    removed = sorted(set(bside.by_id) - set(nside.by_id))
    common = [c for c in bside.by_id if c in nside.by_id]
    rows: list[_Row] = []
    status_rows = []
    for cell_id in common:
        b, n = bside.by_id[cell_id], nside.by_id[cell_id]
        srow = _status_row(cell_id, b, n)
        if srow:
            status_rows.append(srow)
        if not (b.ok and n.ok):
            continue
        for rule in rules:
            row = _plan_metric(rule, cell_id, b, n, bside, nside, factor)
            if row is not None:
                rows.append(row)
    return _finish(rows, status_rows, alpha, rules, warnings, added, removed, require_same_cells, "stores",
                   {"speed_ratio": ratio, "normalized": normalize})


def compare_paths(base: str | Path, new: str | Path, **kw: Any) -> Verdict:
    """`effbench compare BASE NEW`: load both stores (files or report folders) and gate."""
    return compare(base, new, **kw)


def compare_ab(pairs: list[tuple[Record, Record]], *, rules: list[Rule] | None = None, alpha: float = 0.01,
               warnings: list[str] | None = None) -> Verdict:
    """A/B mode: (baseline record, candidate record) pairs measured interleaved in one job.

    Latency is gated on per-round ratios: the paired pass's block ratio when the candidate records
    have `paired_ratios`, else new_i / base_i of the two workers' round medians (round i of both ran
    back to back). The median ratio must be beyond the threshold and the log ratios significant by
    the Wilcoxon signed-rank test (Holm-corrected across cells), or, with too few rounds for it to
    reach alpha, by a 99% order-statistic CI of the median log ratio that excludes 0. The noise floor
    is that of the ratios (`noise_floor`). Other rules compare the merged records as `compare` does.
    """
    _check_alpha(alpha)
    rules = list(DEFAULT_RULES if rules is None else rules)
    warnings = list(warnings or [])
    rows: list[_Row] = []
    status_rows = []
    for b, n in pairs:
        cell_id = n.cell_id
        srow = _status_row(cell_id, b, n)
        if srow:
            status_rows.append(srow)
        if not (b.ok and n.ok):
            continue
        for rule in rules:
            if rule.metric != "latency.median":
                row = _plan_metric(rule, cell_id, b, n, None, None, 1.0)
            else:
                row = _plan_paired(rule, cell_id, b, n)
            if row is None:
                continue
            if b.cell_id != n.cell_id:
                row.notes.append(f"baseline cell {b.cell_id}")
            rows.append(row)
    return _finish(rows, status_rows, alpha, rules, warnings, [], [], False, "ab", {})


def _plan_paired(rule: Rule, cell_id: str, b: Record, n: Record) -> _Row | None:
    bm, nm = list(b.round_medians_ms), list(n.round_medians_ms)
    if not bm or not nm:
        return _plan_metric(rule, cell_id, b, n, None, None, 1.0)
    row = _Row(cell_id, rule, float(np.median(bm)), float(np.median(nm)))
    if len(bm) != len(nm) or min(bm + nm) <= 0:
        row.test = "none"
        row.notes.append(f"rounds do not pair ({len(bm)} vs {len(nm)}; a round failed?)" if len(bm) != len(nm)
                         else "a round median is not positive")
        row.ratio, row.delta, row.beyond = _direction(rule, row.base, row.new)
        return row
    pr = list(n.paired_ratios)
    if len(pr) >= 2 and len(pr) == len(nm) and min(pr) > 0:
        # each round's ratio from alternating blocks in one worker: both sides saw the same machine state
        logr = [math.log(q) for q in pr]
        row.notes.append(f"{len(logr)} rounds; ratio = median of per-round ratios from alternating blocks in one "
                         "worker (the base and new columns are each side's own workers)")
    else:
        logr = [math.log(y / x) for x, y in zip(bm, nm)]
        row.notes.append(f"{len(logr)} interleaved rounds; ratio = median of per-round ratios")
    med = float(np.median(logr))
    row.x = logr
    row.test = "wilcoxon-paired-rounds"
    row.floor = noise_floor(logr, logs=True)
    # the gate's ratio is the median of per-round ratios, not the ratio of medians
    ratio, _, row.beyond = _direction(rule, 1.0, math.exp(med))
    row.ratio = ratio
    row.delta = (row.new - row.base)
    if len(logr) < 2:
        row.test = "none"
    return row


# --------------------------------------------------------------------------- rendering


def _fmt_value(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if unit == "bytes":
        for u, s in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if abs(v) >= s:
                return f"{v / s:.3g} {u}"
        return f"{v:.0f} B"
    if unit == "pp":
        return f"{v * 100:.2f}%"
    if unit == "ms":
        return f"{v:.4g} ms"
    if unit == "MACs":
        for u, s in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(v) >= s:
                return f"{v / s:.4g} {u}"
    return f"{v:.4g}"


def _fmt_change(d: dict[str, Any]) -> str:
    if d["metric"] == "status":
        return "-"
    if d["unit"] == "pp" and d["threshold"].endswith("pp"):
        return "-" if d["delta"] is None else f"{d['delta']:+.2f} pp"
    r = d["ratio"]
    if r is None:
        return "-"
    if not math.isfinite(r):
        return "new"
    return f"{(r - 1) * 100:+.1f}%"


def _fmt_p(d: dict[str, Any]) -> str:
    p = d["p_holm"] if d["p_holm"] is not None else d["p_value"]
    return "-" if p is None else f"{p:.2g}"


_MARK = {"regressed": "REGRESSED", "improved": "improved", "unchanged": "unchanged", "unstable": "unstable"}


def _headline(v: Verdict) -> str:
    c = v.summary.get("counts", {})
    g = v.summary.get("geomean_latency_ratio")
    parts = [f"{c.get(k, 0)} {k}" for k in VERDICTS]
    geo = f"; geomean latency ratio {g:.3f} over {v.summary['latency_cells']} cells" if g else ""
    cells = f"; {len(v.added)} added, {len(v.removed)} removed" if (v.added or v.removed) else ""
    status = "FAIL" if v.exit_code else "PASS"
    return f"{status}: {', '.join(parts)}{geo}{cells}"


def _table_rows(v: Verdict, rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[d["cell_id"], d["metric"], _fmt_value(d["base"], d["unit"]), _fmt_value(d["new"], d["unit"]),
             _fmt_change(d), d["threshold"], _fmt_p(d), d["test"], _MARK[d["verdict"]], d["note"]]
            for d in rows]


_HEAD = ["cell", "metric", "base", "new", "change", "threshold", "p (Holm)", "test", "verdict", "note"]


def _render_table(v: Verdict) -> str:
    lines = [f"warning: {w}" for w in v.warnings]
    body = _table_rows(v, v.rows)
    if body:
        cols = [_HEAD, *body]
        widths = [max(len(r[i]) for r in cols) for i in range(len(_HEAD) - 1)]
        for r in cols:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1])
    lines += [f"added: {c}" for c in v.added] + [f"removed: {c}" for c in v.removed]
    lines.append(_headline(v))
    return "\n".join(lines)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _md_table(v: Verdict, rows: list[dict[str, Any]]) -> list[str]:
    out = ["| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    for r in _table_rows(v, rows):
        r[0] = f"`{r[0]}`"
        if r[8] == "REGRESSED":
            r[8] = "**regressed**"
        out.append("| " + " | ".join(_md_escape(c) for c in r) + " |")
    return out


def _render_md(v: Verdict) -> str:
    title = "effbench gate (A/B)" if v.mode == "ab" else "effbench gate"
    icon = ":x:" if v.exit_code else ":white_check_mark:"
    lines = [f"## {icon} {title}: {_headline(v)}", ""]
    if v.warnings:
        lines += [f"> **warning:** {_md_escape(w)}" for w in v.warnings] + [""]
    lines.append(f"Rules: {', '.join(f'`{r}`' for r in v.rules)}; alpha {v.alpha:g}, Holm-corrected.")
    lines.append("")
    notable = [d for d in v.rows if d["verdict"] != "unchanged"]
    if notable:
        lines += _md_table(v, notable) + [""]
    elif v.rows:
        lines += ["Every compared metric is unchanged.", ""]
    if v.added or v.removed:
        lines += [f"- added: `{c}`" for c in v.added] + [f"- removed: `{c}`" for c in v.removed] + [""]
    if v.rows:
        lines += ["<details><summary>All rows</summary>", ""] + _md_table(v, v.rows) + ["", "</details>"]
    return "\n".join(lines) + "\n"



class _CallableModule(types.ModuleType):
    """`effbench.compare(base, new, ...)` runs the gate; `effbench.compare` is also this module."""

    def __call__(self, *args: Any, **kwargs: Any) -> Verdict:
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
