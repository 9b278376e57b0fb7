"""The worker of one round of a generative offline or server group (`task: generate`): every precision's
session of one model on one runtime loaded in this process, each driven by MLPerf LoadGen with token
latencies (`scenarios.loadgen.run_loadgen_tokens`). The system under test calls LoadGen's
`FirstTokenComplete` from the session's `on_first_token` hook, at the real first token, and
`QuerySamplesComplete` with the token count at the last; LoadGen computes TTFT (from the query's
scheduled arrival: queueing included) and TPOT = (latency - TTFT) / (tokens - 1).

offline: LoadGen's Offline scenario, `OFFLINE_CYCLES` runs per precision and prompt length in an order
drawn per cycle; output tokens/s (LoadGen's "Tokens per second") per run, and the per-cycle ratio vs
FP32 is the paired speedup.
server (MLPerf's LLM form): Poisson arrivals; the highest offered rate at which TTFT and TPOT at the
percentile stay within `ttft_ms` and `tpot_ms`, every rate judged by LoadGen (VALID / INVALID, with its
early stopping) and kept with its logs.

Every generative runtime here serves one request at a time (`GenerationSession.concurrency`, `serving`
says why): the SUT has one worker and the other requests wait in its queue. MLPerf-style runs, never
MLPerf results. Runs in a fresh worker (`execution.workers.run_in_worker`): plain JSON in and out.
"""
from __future__ import annotations

import math
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from effbench.errors import gist

OFFLINE_CYCLES = 3
OFFLINE_HEADROOM = 1.5   # offline's expected rate over the warm-up's one-at-a-time rate
WARMUP_REQUESTS = 3      # per member, before any LoadGen run: first-call allocations, and the service time
BACKLOG_FACTOR = 10.0    # LoadGen ends a server run once this many x the in-flight queries within the bound wait


def serve_generation(runtime: str, threads: int, options: dict, model: dict, members: list[dict], new_tokens: int,
                     scenario: str, scenario_options: dict, cache_dir: str, seed: int, log_dir: str,
                     load_reversed: bool = False) -> dict:
    """One round of a generative offline or server group in this (fresh) worker.

    `members`: [{"key", "label", "precision", "prompt_tokens"}]; `scenario_options`: the scenario's
    options with their defaults (offline: queries, min_time_s; server: ttft_ms, tpot_ms, percentile,
    queries, min_duration_s, max_time_s, start_qps). LoadGen's logs go under `log_dir/<member key>/`.
    A precision that cannot load or run is reported for its members; the others are still driven.
    """
    import numpy as np

    from effbench.models.llm import LlmModel
    from effbench.scenarios.plan import OFFLINE
    from effbench.workloads.generate import prompt_ids
    from effbench.workloads.worker import import_runtime, open_sessions
    llm = LlmModel.from_json(model)
    import_runtime(runtime)
    prompts = sorted({m["prompt_tokens"] for m in members})
    labels = list(dict.fromkeys(m["label"] for m in members))
    precision_of = {m["label"]: m["precision"] for m in members}
    sessions, status, load_s = open_sessions(runtime, llm, [(lb, precision_of[lb]) for lb in labels], load_reversed,
                                             threads=threads, cache_dir=cache_dir,
                                             max_context=max(prompts) + new_tokens, options=options)
    ids = {p: prompt_ids(llm, p) for p in prompts}
    traces: dict[str, list] = {m["key"]: [] for m in members}
    service_s: dict[str, float] = {}
    for m in members:                       # warm-up; its requests' end-to-end times give the service time
        key, label = m["key"], m["label"]
        if label not in sessions:
            continue
        try:
            warm = [sessions[label].generate(ids[m["prompt_tokens"]], new_tokens) for _ in range(WARMUP_REQUESTS)]
            service_s[key] = float(np.median([t.timing().e2e_ms for t in warm])) / 1e3
        except Exception as e:  # noqa: BLE001 - one precision's failure must not cost the others
            traceback.print_exc()
            status[label] = ("failed", f"warm-up request: {gist(e)}")
            sessions.pop(label).close()
    gens = {m["key"]: _generator(sessions[m["label"]], ids[m["prompt_tokens"]], new_tokens, traces[m["key"]])
            for m in members if m["label"] in sessions}
    figures: dict[str, dict] = {}
    errors: dict[str, str] = {}
    if scenario == OFFLINE:
        figures, errors = _offline(gens, scenario_options, seed, log_dir, service_s)
    else:
        for i in np.random.default_rng(seed).permutation(len(gens)):   # one search after another, order drawn
            key = list(gens)[int(i)]
            try:
                figures[key] = _server(gens[key], scenario_options, service_s[key], str(Path(log_dir) / _safe(key)))
            except Exception as e:  # noqa: BLE001 - a SUTError or LoadGen's: recorded for this member only
                traceback.print_exc()
                errors[key] = gist(e)
    out: dict[str, dict] = {}
    for m in members:
        key, label = m["key"], m["label"]
        if label in status:
            out[key] = {"status": status[label][0], "reason": status[label][1]}
        elif key in errors:
            out[key] = {"status": "failed", "reason": f"LoadGen run: {errors[key]}"}
        else:
            s = sessions[label]
            out[key] = {"status": "ok", **figures[key], **_trace_figures(traces[key]),
                        "service_ms": service_s[key] * 1e3, "serving": s.serving, "concurrency": s.concurrency,
                        "kv_cache_bytes_measured": traces[key][-1].kv_cache_bytes if traces[key] else None,
                        "kv_measured": traces[key][-1].kv_measured if traces[key] else None,
                        "kernel": s.kernel.to_json(), "weight_bytes": s.weight_bytes,
                        "decode_weight_bytes": s.decode_weight_bytes, "info": {**s.info, "load_s": load_s.get(label)}}
    for s in sessions.values():
        s.close()
    return {"members": out, "threads": threads}


def _generator(session, prompt: tuple[int, ...], new_tokens: int, sink: list):
    """LoadGen's generator (`scenarios.loadgen.Generate`): one request on the session, its first token
    reported through the session's hook, its trace kept in `sink`, its token count returned."""
    def generate(first_token) -> int:
        trace = session.generate(prompt, new_tokens, on_first_token=first_token)
        sink.append(trace)
        return len(trace.output_ids)
    return generate


def _trace_figures(traces: list) -> dict[str, Any]:
    """The session's own stamps of the requests LoadGen issued: service TTFT (from the request's start in
    the session, queueing excluded) and TPOT, medians; they sit beside LoadGen's (queueing included)."""
    import numpy as np

    from effbench.measure.latency import LatencyStats
    if not traces:
        return {"requests": 0}
    t = [x.timing() for x in traces]
    tpot = [x.tpot_ms for x in t if x.tpot_ms is not None]
    return {"requests": len(t), "service_ttft_ms": float(np.median([x.ttft_ms for x in t])),
            "service_tpot_ms": float(np.median(tpot)) if tpot else None,
            "service_latency_ms": {**LatencyStats.from_samples_ms([x.e2e_ms for x in t]).to_json(),
                                   "timing": "the session's own stamps: request start to last token, no queueing"}}


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in key)


def _relative(path: str) -> str:
    """A LoadGen log's path from the run's output folder (`loadgen/...`), as the report links it."""
    parts = Path(path).parts
    return str(Path(*parts[parts.index("loadgen"):])) if "loadgen" in parts else path


def _loadgen(r) -> dict[str, Any]:
    """What a record keeps of one LoadGen run: its verdict, version, the settings used and its logs."""
    return {"generator": r.generator, "version": r.loadgen_version, "valid": r.valid,
            "constraints": dict(r.constraints), "early_stopping": list(r.early_stopping),
            "settings": r.settings.to_json(), "seeds": r.settings.seeds, "threads": r.threads,
            "qsl_samples": r.qsl_samples, "summary": _relative(r.summary_path), "detail": _relative(r.detail_path),
            "detail_trimmed": r.detail_trimmed}


def _offline(gens: dict, options: dict, seed: int, log_dir: str,
             service_s: dict[str, float]) -> tuple[dict[str, dict], dict[str, str]]:
    """Each member's output tokens/s from LoadGen's Offline scenario with token latencies, OFFLINE_CYCLES
    runs each in an order drawn per cycle (LoadGen runs one system under test at a time)."""
    import numpy as np

    from effbench.measure.stats import within_one_round
    from effbench.scenarios.loadgen import OFFLINE, LoadGenSettings, run_loadgen_tokens
    from effbench.scenarios.plan import offline_queries
    rng = np.random.default_rng(seed)
    keys = list(gens)
    runs: dict[str, list] = {k: [] for k in keys}
    cycles: dict[str, list[int]] = {k: [] for k in keys}
    errors: dict[str, str] = {}
    per_run_ms = max(int(1000 * options["min_time_s"] / OFFLINE_CYCLES), 100)
    queries = offline_queries(options, 1)
    for cycle in range(OFFLINE_CYCLES):
        for k in rng.permutation(keys):
            if k in errors:
                continue
            # LoadGen sizes its one query by the expected rate: set above the warm-up's (x OFFLINE_HEADROOM), so
            # the query outlasts min_duration (too low a rate ends the run short of it: INVALID)
            settings = LoadGenSettings(scenario=OFFLINE, use_token_latencies=True, min_duration_ms=per_run_ms,
                                       min_query_count=queries, expected_qps=OFFLINE_HEADROOM / service_s[k])
            try:
                runs[k].append(run_loadgen_tokens(gens[k], settings, Path(log_dir) / _safe(k) / f"cycle-{cycle}",
                                                  qsl_samples=1, threads=1, warmup_calls=0))
                cycles[k].append(cycle)
            except Exception as e:  # noqa: BLE001 - recorded for this member only
                traceback.print_exc()
                errors[k] = gist(e)
    out = {}
    for k in keys:
        rs = runs[k]
        if k in errors or not rs:
            errors.setdefault(k, "no LoadGen run finished")
            continue
        sps = [r.samples_per_s for r in rs if r.samples_per_s]
        tps = [r.tokens.tokens_per_s if r.tokens else None for r in rs]
        est = within_one_round(sps)
        median_sps = float(np.median(sps)) if sps else None
        good_tps = [x for x in tps if x]
        out[k] = {"per_cycle": {"output_tokens_per_s": tps, "cycle": cycles[k]},
                  "offline": {"samples_per_s": median_sps, "ci": [est.lo, est.hi] if est else None,
                              "ci_level": est.level if est else None, "ci_scope": est.scope if est else None,
                              "ci_method": est.method if est else None, "queries": queries, "batch_size": 1,
                              "streams": 1, "passes": len(rs),
                              "output_tokens_per_s": float(np.median(good_tps)) if good_tps else None,
                              "what": "requests/s (samples_per_s) and output tokens/s over LoadGen Offline runs "
                                      "with token latencies; one request decodes at a time",
                              "loadgen": {**_loadgen(rs[-1]),
                                          "runs": [{"samples_per_s": r.samples_per_s, "valid": r.valid,
                                                    "tokens_per_s": r.tokens.tokens_per_s if r.tokens else None,
                                                    "summary": _relative(r.summary_path)} for r in rs]}}}
    return out, errors


def _server(gen, options: dict, service_s: float, log_dir: str) -> dict[str, Any]:
    """One member's max rate with TTFT and TPOT at the percentile within their bounds: LoadGen's Server
    scenario with token latencies at candidate rates (bracket, then bisect; LoadGen's verdict judges each
    rate, with its early stopping on TTFT and TPOT), every rate kept."""
    from effbench.scenarios.loadgen import SERVER, LoadGenSettings, find_max_qps, rate_dir, run_loadgen_tokens
    ttft, tpot, pct = float(options["ttft_ms"]), float(options["tpot_ms"]), float(options["percentile"])
    queries, budget_s = int(options["queries"]), float(options["max_time_s"])
    base = LoadGenSettings(scenario=SERVER, target_qps=1.0, percentile=pct, use_token_latencies=True, ttft_ms=ttft,
                           tpot_ms=tpot, min_duration_ms=int(1000 * options["min_duration_s"]), min_query_count=queries)
    server: dict[str, Any] = {"latency_bound_ms": ttft, "tpot_bound_ms": tpot, "percentile": pct,
                              "max_batch": 1, "max_wait_ms": 0.0, "service_ms": service_s * 1e3}
    shortest_s = queries * service_s      # one run's least time: its requests back to back, none waiting
    if shortest_s > budget_s:
        return {"server": {**server, "search": "not run", "reason": (
            f"one LoadGen run of {queries} requests takes at least {shortest_s:.4g} s here ({service_s * 1e3:.4g} ms "
            f"each, one at a time), beyond max_time_s {budget_s:g} s: give fewer queries or more time")}}

    def run_at(qps: float):
        s = replace(base, target_qps=qps, max_async_queries=max(100, math.ceil(BACKLOG_FACTOR * qps * ttft / 1e3)))
        return run_loadgen_tokens(gen, s, rate_dir(log_dir, qps), qsl_samples=1, threads=1, warmup_calls=0)

    min_qps = max(0.01 / service_s, queries / budget_s)
    search = find_max_qps(run_at, options.get("start_qps") or max(0.5 / service_s, min_qps), min_qps=min_qps,
                          budget_s=budget_s)
    best = search.best
    shown = best or min(search.runs, key=lambda r: r.settings.target_qps)
    key = f"p{pct:g}"
    probes = [_probe(r, key) for r in search.runs]
    tokens = shown.tokens.to_json() if shown.tokens else None
    lat = shown.latency_ms
    return {"server": {
        **server, "max_qps": search.max_qps,
        "percentile_ms": (best.tokens.ttft_ms.get(key) if best and best.tokens else None),
        "p99_ms": best.latency_ms.get("p99") if best else None, "p50_ms": best.latency_ms.get("p50") if best else None,
        "achieved_qps": best.completed_qps if best else None, "queries": best.queries if best else None,
        "early_stopping": ({"met": best.early_stopping_met,
                            "lines": list(best.tokens.ttft_early_stopping + best.tokens.tpot_early_stopping)
                            if best.tokens else list(best.early_stopping),
                            "overlatency": best.overlatency_queries} if best else None),
        "curve": [(p["qps"], p["ttft_ms"]) for p in probes if p["ttft_ms"] is not None],
        "probes": probes, "search": search.ended, "tokens": tokens,
        "reason": None if best else _why_none(search.ended, shown, key, ttft, tpot),
        "latency_what": "end-to-end request latency from the scheduled arrival (LoadGen), at max_qps or the "
                        "lowest rate tried", "loadgen": _loadgen(shown)},
        "latency_ms": {"median": lat.get("p50"), "mean": lat.get("mean"), "min": lat.get("min"),
                       "max": lat.get("max"), "p90": lat.get("p90"), "p99": lat.get("p99"), "n": shown.queries,
                       "calls": shown.queries, "timing": "LoadGen (from each query's scheduled time)",
                       "p90_reliable": True, "p99_reliable": bool(shown.early_stopping_met)}}


def _probe(r, key: str) -> dict[str, Any]:
    """One rate of the search: LoadGen's verdict, TTFT and TPOT at the percentile and whether each met its
    bound, its early stopping, its summary log."""
    t = r.tokens
    return {"qps": r.settings.target_qps, "valid": r.valid, "constraints": dict(r.constraints),
            "ttft_ms": t.ttft_ms.get(key) if t else None, "tpot_ms": t.tpot_ms.get(key) if t else None,
            "ttft_p50_ms": t.ttft_ms.get("p50") if t else None, "tpot_p50_ms": t.tpot_ms.get("p50") if t else None,
            "ttft_met": t.ttft_met if t else None, "tpot_met": t.tpot_met if t else None,
            "completed_qps": r.completed_qps, "tokens_per_s": t.tokens_per_s if t else None,
            "early_stopping_met": r.early_stopping_met,
            "early_stopping": list(t.ttft_early_stopping + t.tpot_early_stopping) if t else list(r.early_stopping),
            "recommendations": list(r.recommendations), "summary_path": _relative(r.summary_path)}


def _why_none(ended: str, r, key: str, ttft: float, tpot: float) -> str:
    t = r.tokens
    got = (f"TTFT {key} {t.ttft_ms.get(key)} ms against {ttft:g}, TPOT {key} {t.tpot_ms.get(key)} ms against {tpot:g}"
           if t else "no token latencies")
    es = "" if r.early_stopping_met is not False else "; LoadGen's early stopping was not satisfied (too few queries?)"
    return f"{ended}: at {r.settings.target_qps:.4g} queries/s LoadGen said INVALID ({got}){es}"
