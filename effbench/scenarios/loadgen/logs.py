"""Reading LoadGen's `mlperf_log_summary.txt` and `mlperf_log_detail.txt` into a `LoadGenResult`, and trimming
a huge detail log."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from effbench.scenarios.loadgen.result import LoadGenResult, TokenFigures
from effbench.scenarios.loadgen.settings import DETAIL_LOG_LIMIT_BYTES, SERVER, LoadGenSettings, percentile_key

# ------------------------------------------------------------------------------ parsing
_RULE = re.compile(r"^=+$")
_KV = re.compile(r"^\s*(?P<key>[^:]+?)\s*:\s*(?P<value>.*?)\s*$")
_PCT = re.compile(r"^(?P<p>\d+(?:\.\d+)?)(?:th)? percentile (?P<what>.*?) ?\(ns\)$")
_ES_ESTIMATE = re.compile(r"Early stopping (?P<p>\d+(?:\.\d+)?)th percentile estimate: (?P<ns>\d+)")
_BLOCKS = ("Recommendations:", "Early Stopping Result:", "TTFT Early Stopping Result:",
           "TPOT Early Stopping Result:")




def _num(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


@dataclass
class _Summary:
    results: dict[str, str] = field(default_factory=dict)     # the first section
    stats: dict[str, str] = field(default_factory=dict)       # "Additional Stats"
    per_query: dict[str, str] = field(default_factory=dict)   # multi-stream's "Per-query latency" block
    params: dict[str, str] = field(default_factory=dict)      # "Test Parameters Used"
    blocks: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)            # "No warnings encountered during test." ...


def read_summary(path: str | Path) -> _Summary:
    """`mlperf_log_summary.txt` split into its sections; values kept as LoadGen wrote them."""
    out = _Summary()
    lines = Path(path).read_text().splitlines()
    section, block, target = "", None, out.results
    i = 0
    while i < len(lines):
        line = lines[i]
        if _RULE.match(line.strip()) and i + 2 < len(lines) and _RULE.match(lines[i + 2].strip()):
            section, block = lines[i + 1].strip(), None
            target = {"Additional Stats": out.stats, "Test Parameters Used": out.params}.get(section, out.results)
            i += 3
            continue
        i += 1
        stripped = line.strip()
        if stripped in _BLOCKS:
            block = stripped.rstrip(":")
            out.blocks[block] = []
            continue
        if block is not None:
            if stripped and (line.startswith(" ") or stripped.startswith("*")):
                out.blocks[block].append(stripped)
                continue
            block = None
        if not stripped:
            continue
        if stripped.startswith("Per-query latency"):
            target = out.per_query
            continue
        if "encountered" in stripped and section == "Test Parameters Used":
            out.notes.append(stripped)
            continue
        m = _KV.match(line)
        if m:
            target[m["key"]] = m["value"]
    return out


def read_detail(path: str | Path) -> tuple[dict[str, object], list[str], list[str]]:
    """`mlperf_log_detail.txt`'s `:::MLLOG` lines: key -> value (the last one logged), errors, warnings."""
    values: dict[str, object] = {}
    errors: list[str] = []
    warnings: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith(":::MLLOG "):
                continue
            try:
                rec = json.loads(line[len(":::MLLOG "):])
            except json.JSONDecodeError:
                continue
            key, value, meta = rec.get("key"), rec.get("value"), rec.get("metadata") or {}
            values[key] = value
            if meta.get("is_error"):
                errors.append(f"{key}: {value}")
            elif meta.get("is_warning"):
                warnings.append(f"{key}: {value}")
    return values, errors, warnings


def _latencies(block: Mapping[str, str], what: str = "latency") -> dict[str, float]:
    """min / max / mean and pNN from a summary block, ns -> ms."""
    out: dict[str, float] = {}
    for key, value in block.items():
        v = _num(value)
        if v is None or not key.endswith("(ns)"):
            continue
        for stat in ("Min", "Max", "Mean"):
            if key == f"{stat} {what} (ns)":
                out[stat.lower()] = v / 1e6
        m = _PCT.match(key)
        if m and m["what"] == what:
            out[percentile_key(float(m["p"]))] = v / 1e6
    return out


def _yes(v: str | None) -> bool | None:
    return None if v is None else v.strip().lower() == "yes"


def parse_logs(summary_path: str | Path, detail_path: str | Path, settings: LoadGenSettings, *, threads: int,
               qsl_samples: int, performance_samples: int,
               max_detail_bytes: int = DETAIL_LOG_LIMIT_BYTES) -> LoadGenResult:
    """A `LoadGenResult` from LoadGen's two logs; then the detail log is trimmed if it exceeds
    `max_detail_bytes` (`trim_detail_log`)."""
    s = read_summary(summary_path)
    detail, errors, warnings = read_detail(detail_path)
    verdict = s.results.get("Result is")
    if verdict not in ("VALID", "INVALID"):
        raise RuntimeError(f"{summary_path}: no 'Result is' line (LoadGen ended before summarising?)")
    if detail.get("result_validity") not in (None, verdict):
        raise RuntimeError(f"{summary_path} says {verdict}, {detail_path} says {detail['result_validity']}")
    constraints = {k: _yes(s.results[k]) for k in ("Performance constraints satisfied", "Min duration satisfied",
                                                    "Min queries satisfied", "Early stopping satisfied")
                   if k in s.results}
    recs = tuple(s.blocks.get("Recommendations", ()))
    head_pct = next((k for k in s.results if _PCT.match(k) and _PCT.match(k)["what"] == "latency"), None)
    latency = _latencies(s.per_query if s.per_query else s.stats)
    if s.per_query:  # multi-stream: the summary's block is per query; per sample lives in the detail log
        sample_latency = {}
        for key, v in detail.items():
            m = re.fullmatch(r"result_(\d+\.\d+)_percentile_latency_ns", key)
            if m and isinstance(v, (int, float)):
                sample_latency[percentile_key(float(m[1]))] = v / 1e6
        for stat in ("min", "max", "mean"):
            v = detail.get(f"result_{stat}_latency_ns")
            if isinstance(v, (int, float)):
                sample_latency[stat] = v / 1e6
    else:
        sample_latency = dict(latency)
    es_key = "TTFT Early Stopping Result" if settings.use_token_latencies else "Early Stopping Result"
    es_lines = tuple(s.blocks.get(es_key, ()))
    es_ms = {percentile_key(float(m["p"])): int(m["ns"]) / 1e6 for m in map(_ES_ESTIMATE.search, es_lines) if m}
    tokens = None
    if settings.use_token_latencies:
        server = settings.scenario == SERVER
        perf_ok = constraints.get("Performance constraints satisfied")
        tps = (s.results.get("Completed tokens per second") or s.results.get("Tokens per second")
               or s.stats.get("TPS w/ loadgen overhead"))
        tokens = TokenFigures(
            tokens_per_s=_num(tps) if tps else None,
            ttft_ms=_latencies(s.stats, "first token latency") | {
                k: v for k, v in _latencies(s.stats, "First Token latency").items() if k in ("min", "max", "mean")},
            tpot_ms=_latencies(s.stats, "time to output token") | {
                k: v for k, v in _latencies(s.stats, "Time per Output Token").items() if k in ("min", "max", "mean")},
            ttft_early_stopping=es_lines, tpot_early_stopping=tuple(s.blocks.get("TPOT Early Stopping Result", ())),
            ttft_met=(perf_ok or not any("TTFT constrain not met" in r for r in recs)) if server else None,
            tpot_met=(perf_ok or not any("TPOT constrain not met" in r for r in recs)) if server else None)
    summary_path, detail_path = Path(summary_path), Path(detail_path)
    trimmed = trim_detail_log(detail_path, max_detail_bytes)
    queries = detail.get("result_query_count")
    over = detail.get("result_overlatency_query_count")
    return LoadGenResult(
        scenario=settings.scenario, valid=verdict == "VALID", constraints=constraints, recommendations=recs,
        samples_per_s=_num(s.results.get("Samples per second", "")),
        completed_qps=_num(s.results.get("Completed samples per second", "")),
        scheduled_qps=_num(s.stats.get("Scheduled samples per second", "")),
        qps_with_overhead=_num(s.stats.get("QPS w/ loadgen overhead", "")),
        qps_without_overhead=_num(s.stats.get("QPS w/o loadgen overhead", "")),
        target_percentile=settings.target_percentile,
        target_percentile_ms=(_num(s.results[head_pct]) or 0) / 1e6 if head_pct else None,
        latency_ms=latency, sample_latency_ms=sample_latency, early_stopping=es_lines, early_stopping_ms=es_ms,
        queries=int(queries) if isinstance(queries, (int, float)) else None,
        overlatency_queries=int(over) if isinstance(over, (int, float)) else None,
        tokens=tokens, settings=settings, effective=dict(s.params),
        loadgen_version=str(detail.get("loadgen_version") or _installed_version()),
        threads=threads, qsl_samples=qsl_samples, performance_samples=performance_samples,
        errors=tuple(errors), warnings=tuple(warnings), summary_path=str(summary_path),
        detail_path=str(detail_path), detail_trimmed=trimmed)


def _installed_version() -> str:
    from importlib.metadata import version
    return version("mlcommons-loadgen")


def trim_detail_log(path: str | Path, max_bytes: int = DETAIL_LOG_LIMIT_BYTES, *, max_line_chars: int = 4000,
                    max_per_key: int = 20) -> str | None:
    """Trim a detail log over `max_bytes` in place, after it was parsed: a key logged more than
    `max_per_key` times (one error per query, say) keeps its first `max_per_key` lines, a line longer
    than `max_line_chars` (`loaded_qsl_set` lists every loaded sample index) is cut there. What was left
    out is said in one `# effbench:` line at the end (LoadGen's log parsers read `:::MLLOG` lines only)
    and returned; None when the log was small enough to keep whole."""
    path = Path(path)
    if path.stat().st_size <= max_bytes:
        return None
    seen: dict[str, int] = {}
    dropped: dict[str, int] = {}
    cut = 0
    tmp = path.with_suffix(".trimming")
    with open(path, encoding="utf-8", errors="replace") as src, open(tmp, "w", encoding="utf-8") as dst:
        for line in src:
            m = re.match(r':::MLLOG \{"key": "([^"]*)"', line)
            key = m[1] if m else ""
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > max_per_key:
                dropped[key] = dropped.get(key, 0) + 1
                continue
            if len(line) > max_line_chars:
                line = line[:max_line_chars] + f" ...[{len(line) - max_line_chars} chars cut]\n"
                cut += 1
            dst.write(line)
        note = (f"trimmed from {path.stat().st_size} bytes: "
                + ", ".join([f"{n} more '{k}' lines dropped" for k, n in dropped.items()]
                            + ([f"{cut} lines cut at {max_line_chars} chars"] if cut else [])))
        dst.write(f"# effbench: {note}\n")
    tmp.replace(path)
    return note
