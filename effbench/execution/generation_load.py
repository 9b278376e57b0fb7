"""The worker of one round of a generative offline or server group (`task: generate`): every precision's
session of one model on one runtime loaded in this process, each driven by MLPerf LoadGen with token
latencies (`scenarios.loadgen.run_loadgen_tokens`). The system under test calls LoadGen's
`FirstTokenComplete` from the session's `on_first_token` hook, at the real first token, and
`QuerySamplesComplete` with the token count at the last; LoadGen computes TTFT (from the query's
scheduled arrival: queueing included) and TPOT = (latency - TTFT) / (tokens - 1).

offline: LoadGen's Offline scenario, `OFFLINE_CYCLES` runs per precision, prompt length and batch size
(the scenario's `batch_sizes`, default 1 and 4: that many queued requests decoded together, where the
runtime's session can batch) in an order drawn per cycle; output tokens/s (LoadGen's "Tokens per second")
per run; the member's figure is its best batch size, and that size's per-cycle ratio vs FP32 is the
paired speedup.
server (MLPerf's LLM form): Poisson arrivals; the highest offered rate at which TTFT and TPOT at the
percentile stay within `ttft_ms` and `tpot_ms`, every rate judged by LoadGen (VALID / INVALID, with its
early stopping) and kept with its logs.

Outside offline's batches, every generative runtime here serves one request at a time (`GenerationSession.concurrency`, `serving`
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
# offline's batch sweep when the scenario gives no batch_sizes: one request at a time, and four together
DEFAULT_BATCH_SIZES = (1, 4)
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
        batched = {m["key"]: _batches(sessions[m["label"]], ids[m["prompt_tokens"]], new_tokens,
                                      offline_batch_sizes(scenario_options))
                   for m in members if m["label"] in sessions and m["key"] in service_s}
        figures, errors = _offline(gens, batched, scenario_options, seed, log_dir, service_s)
        for key, f in figures.items():     # the session's own stamps: of the batch size the figure is from
            b = f["offline"]["batch_size"]
            if b != 1:
                traces[key] = batched[key]["traces"][b]
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


def _batch_generator(session, prompt: tuple[int, ...], new_tokens: int, sink: list):
    """LoadGen's batch generator (`scenarios.loadgen.GenerateBatch`): the requests LoadGen handed one SUT
    worker decoded together (the same prompt each: a batch's work does not depend on its token values),
    each one's first token reported through its own hook."""
    def generate(first_tokens: list) -> list[int]:
        traces = session.generate_batch([prompt] * len(first_tokens), new_tokens, on_first_token=first_tokens)
        sink.extend(traces)
        return [len(t.output_ids) for t in traces]
    return generate


def _batches(session, prompt: tuple[int, ...], new_tokens: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    """One member's offline batch sweep, set up: {"sizes": {batch: (generator, its warm-up service time in s)},
    "unsupported": {batch: reason}, "traces": {batch: the traces of the requests LoadGen issued}}. A batch
    is warmed up once (its first forwards allocate), then timed once; batch 1 is the one-request
    generator, timed by the member's own warm-up."""
    import time
    out: dict[str, Any] = {"sizes": {}, "unsupported": {}, "traces": {}}
    for b in sizes:
        if b == 1:
            continue
        if session.batching is not None:
            out["unsupported"][b] = session.batching
            continue
        try:
            session.generate_batch([prompt] * b, new_tokens)
            t0 = time.perf_counter()
            session.generate_batch([prompt] * b, new_tokens)
            out["traces"][b] = []
            out["sizes"][b] = (_batch_generator(session, prompt, new_tokens, out["traces"][b]), time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - this batch size cannot run; the others still do
            traceback.print_exc()
            out["unsupported"][b] = gist(e)
    return out


def offline_batch_sizes(options: dict) -> tuple[int, ...]:
    """The batch sizes a generative offline cell sweeps (requests decoded together), smallest first."""
    return tuple(sorted(set(options.get("batch_sizes") or DEFAULT_BATCH_SIZES)))


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


def _offline(gens: dict, batched: dict, options: dict, seed: int, log_dir: str,
             service_s: dict[str, float]) -> tuple[dict[str, dict], dict[str, str]]:
    """Each member's output tokens/s from LoadGen's Offline scenario with token latencies, at each batch
    size of its sweep (a SUT worker decodes up to that many queued requests together), OFFLINE_CYCLES
    cycles, members and batch sizes in an order drawn per cycle (LoadGen runs one system under test at a
    time). The member's figure is the batch size with the highest median tokens/s; its per-cycle tokens/s
    are what the paired speedup vs FP32 is taken from."""
    import numpy as np

    from effbench.measure.stats import within_one_round
    from effbench.scenarios.loadgen import OFFLINE, LoadGenSettings, run_loadgen_tokens
    from effbench.scenarios.plan import offline_queries
    rng = np.random.default_rng(seed)
    keys = list(gens)
    sizes = {k: {1: (gens[k], service_s[k]), **batched.get(k, {}).get("sizes", {})} for k in keys}
    runs: dict[tuple[str, int], list] = {(k, b): [] for k in keys for b in sizes[k]}
    cycles: dict[tuple[str, int], list[int]] = {kb: [] for kb in runs}
    errors: dict[str, str] = {}
    failed: dict[tuple[str, int], str] = {}
    n_runs = max(len(v) for v in sizes.values()) if sizes else 1
    per_run_ms = max(int(1000 * options["min_time_s"] / (OFFLINE_CYCLES * n_runs)), 100)
    base_queries = offline_queries(options, 1)
    for cycle in range(OFFLINE_CYCLES):
        for k in rng.permutation(keys):
            for b in rng.permutation(sorted(sizes[k])):
                b = int(b)
                if (k, b) in failed:
                    continue
                gen, service = sizes[k][b]
                # LoadGen sizes its one query by the expected rate: set above the warm-up's (x OFFLINE_HEADROOM), so
                # the query outlasts min_duration (too low a rate ends the run short of it: INVALID)
                settings = LoadGenSettings(scenario=OFFLINE, use_token_latencies=True, min_duration_ms=per_run_ms,
                                           min_query_count=max(base_queries, 2 * b),
                                           expected_qps=OFFLINE_HEADROOM * b / service)
                folder = Path(log_dir) / _safe(k) / (f"cycle-{cycle}" if b == 1 else f"b{b}-cycle-{cycle}")
                try:
                    runs[k, b].append(run_loadgen_tokens(gens[k], settings, folder, qsl_samples=1, threads=1,
                                                         warmup_calls=0, generate_batch=None if b == 1 else gen,
                                                         max_batch=b))
                    cycles[k, b].append(cycle)
                except Exception as e:  # noqa: BLE001 - recorded for this member and batch size only
                    traceback.print_exc()
                    failed[k, b] = gist(e)
    out = {}
    for k in keys:
        sweep, best = [], None
        for b in sorted(sizes[k]):
            row = _sweep_row(b, runs[k, b], failed.get((k, b)))
            sweep.append(row)
            if row["output_tokens_per_s"] and (best is None or row["output_tokens_per_s"] > best["output_tokens_per_s"]):
                best = row
        if best is None:
            errors[k] = failed.get((k, 1)) or "no LoadGen run finished"
            continue
        b = best["batch"]
        rs = runs[k, b]
        sps = [r.samples_per_s for r in rs if r.samples_per_s]
        tps = [r.tokens.tokens_per_s if r.tokens else None for r in rs]
        est = within_one_round(sps)
        unsupported = {**batched.get(k, {}).get("unsupported", {})}
        out[k] = {"per_cycle": {"output_tokens_per_s": tps, "cycle": cycles[k, b], "batch": b},
                  "offline": {"samples_per_s": _median(sps), "ci": [est.lo, est.hi] if est else None,
                              "ci_level": est.level if est else None, "ci_scope": est.scope if est else None,
                              "ci_method": est.method if est else None, "queries": max(base_queries, 2 * b),
                              "batch_size": b, "streams": 1, "passes": len(rs),
                              "output_tokens_per_s": best["output_tokens_per_s"],
                              "batch_sweep": sweep,
                              "batch_unsupported": {str(x): why for x, why in sorted(unsupported.items())},
                              "what": "requests/s (samples_per_s) and output tokens/s over LoadGen Offline runs with "
                                      "token latencies, at the batch size of the sweep with the most output tokens/s "
                                      "(batch_size: that many queued requests decoded together; batch_sweep: every "
                                      "size tried)",
                              "loadgen": {**_loadgen(rs[-1]),
                                          "runs": [{"samples_per_s": r.samples_per_s, "valid": r.valid,
                                                    "tokens_per_s": r.tokens.tokens_per_s if r.tokens else None,
                                                    "summary": _relative(r.summary_path)} for r in rs]}}}
    return out, errors


def _sweep_row(batch: int, rs: list, reason: str | None) -> dict:
    """One batch size of a member's offline sweep: medians over its LoadGen runs."""
    tps = [r.tokens.tokens_per_s for r in rs if r.tokens and r.tokens.tokens_per_s]
    return {"batch": batch, "output_tokens_per_s": _median(tps),
            "samples_per_s": _median([r.samples_per_s for r in rs]),
            "ttft_p50_ms": _median([r.tokens.ttft_ms.get("p50") for r in rs if r.tokens]),
            "tpot_p50_ms": _median([r.tokens.tpot_ms.get("p50") for r in rs if r.tokens]),
            "runs": len(rs), "valid": [r.valid for r in rs], "reason": reason}


def _median(xs: list) -> float | None:
    import numpy as np
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


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
