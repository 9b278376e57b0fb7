"""The worker of one round of a multi-stream, offline or server group: the group's variants loaded in one
process, each driven by MLPerf LoadGen (`scenarios.loadgen`), the drift sentinel before and after; and
single-stream's LoadGen runs, which `execution.tasks.measure_group` calls after its paired loop.
"""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effbench.errors import gist
from effbench.runners.session import enter_runtime, open_session

if TYPE_CHECKING:
    from effbench.results.record import Cell
    from effbench.variants import Variant


def measure_load(group: Cell, members: list[dict], variants: dict[str, Variant], artifact: dict, feeds: dict,
                 budget: dict, options: dict, seed: int, load_reversed: bool = False, log_dir: str = ".") -> dict:
    """The measuring worker of one round of a multi-stream, offline or server group (`effbench.scenarios.plan`):
    the group's variants loaded in this process, the drift sentinel before and after, as `measure_group` does.

    All through MLPerf LoadGen (`scenarios.loadgen`), its logs under `log_dir`. Offline: each variant's
    LoadGen offline runs in randomly ordered cycles, so a per-cycle ratio of samples/s vs FP32 is paired.
    Multi-stream: likewise, LoadGen's MultiStream runs per cycle, the ratio of their percentile latencies.
    Server: each variant's peak-rate search in turn, in an order drawn from `seed`, LoadGen judging each
    rate; its latencies run from the scheduled arrivals.
    `feeds`: str(batch shape) -> arrays, every shape the members' batch sizes need.
    """
    import numpy as np

    from effbench.measure.latency import aligned, sentinel_released, sentinel_us
    from effbench.runners import Unsupported
    from effbench.scenarios.plan import MULTI_STREAM, OFFLINE, batch_shapes
    runner = enter_runtime(group.runner)
    before_us = sentinel_us()
    offline = group.scenario == OFFLINE
    streams = int(options.get("streams") or 1) if offline else 1
    status: dict[str, tuple[str, str]] = {}
    sessions: dict[str, list] = {}
    labels = list(dict.fromkeys(m["label"] for m in members))
    for label in (labels[::-1] if load_reversed else labels):
        try:  # concurrent streams need a pool each; one stream at a time shares the process's pool
            sessions[label] = [open_session(group, variants[label], artifact, runner=runner,
                                            options={"shared_thread_pool": streams == 1}).session
                               for _ in range(streams)]
        except Unsupported as e:
            status[label] = ("unsupported", str(e))
        except Exception as e:
            traceback.print_exc()
            status[label] = ("failed", gist(e))
    calls: dict[str, list[dict[int, Any]]] = {}
    for m in members:
        key = m["key"]
        if m["label"] in status:
            status[key] = status[m["label"]]
            continue
        try:
            calls[key] = [{k: s.timed_call({n: aligned(np.asarray(a)) for n, a in feeds[str(k)].items()})
                           for k in batch_shapes(group.scenario, options, m["batch_size"])}
                          for s in sessions[m["label"]]]
        except Unsupported as e:
            status[key] = ("unsupported", str(e))
        except Exception as e:
            traceback.print_exc()
            status[key] = ("failed", gist(e))
    by_key = {m["key"]: m for m in members}
    if offline:
        figures = _offline_figures(calls, by_key, budget, options, seed, log_dir, group.threads or 1) if calls else {}
    elif group.scenario == MULTI_STREAM:
        figures = _multi_stream_figures(calls, by_key, options, seed, log_dir, group.threads or 1) if calls else {}
    else:
        keys = list(calls)  # one search after another, in an order drawn for this round
        figures = {keys[i]: _server_figures(calls[keys[i]][0], budget, options, seed + int(i),
                                            str(Path(log_dir) / _safe(keys[i])), group.threads or 1)
                   for i in np.random.default_rng(seed).permutation(len(keys))}
    infos = {label: ss[0].info for label, ss in sessions.items()}
    after_us = sentinel_released(calls, sessions)
    out: dict[str, dict] = {}
    for m in members:
        key = m["key"]
        out[key] = ({"status": status[key][0], "reason": status[key][1]} if key in status
                    else {"status": "ok", **figures[key], "session": infos[m["label"]]})
    return {"members": out,
            "sentinel": {"before_us": before_us, "after_us": after_us, "change": after_us / before_us - 1}}


# LoadGen's offline runs per variant and round: alternated in a random order cycle after cycle, so each
# cycle's samples/s ratio vs FP32 is paired (LoadGen runs one system under test at a time).
OFFLINE_CYCLES = 3


def _timed(call, sink: list[int]):
    """`call` with its duration appended to `sink` (ns): the per-call service time beside LoadGen's figures."""
    import time

    def run() -> object:
        t0 = time.perf_counter_ns()
        out = call()
        sink.append(time.perf_counter_ns() - t0)
        return out
    return run


def _relative(path: str, root: str) -> str:
    """A LoadGen log's path from the run's output folder (`loadgen/...`), as the report links it."""
    parts = Path(path).parts
    return str(Path(*parts[parts.index("loadgen"):])) if "loadgen" in parts else path


def _loadgen_section(r, log_root: str) -> dict:
    """What a record keeps of one LoadGen run: its verdict, version, the settings used and its logs."""
    return {"generator": r.generator, "version": r.loadgen_version, "valid": r.valid,
            "constraints": dict(r.constraints), "early_stopping": list(r.early_stopping),
            "settings": r.settings.to_json(), "seeds": r.settings.seeds, "threads": r.threads,
            "qsl_samples": r.qsl_samples, "summary": _relative(r.summary_path, log_root),
            "detail": _relative(r.detail_path, log_root), "detail_trimmed": r.detail_trimmed}


def _offline_figures(calls: dict, members: dict, budget: dict, options: dict, seed: int, log_dir: str,
                     threads: int) -> dict[str, dict]:
    """Each variant's offline samples/s from LoadGen's Offline scenario (its summary's "Samples per second"),
    OFFLINE_CYCLES runs per variant in an order drawn per cycle; the per-cycle ms per sample are the blocks
    the paired speedup vs FP32 is taken from."""
    import numpy as np

    from effbench.measure.latency import LatencyStats
    from effbench.measure.stats import within_one_round
    from effbench.scenarios.loadgen import OFFLINE, LoadGenSettings, run_loadgen
    from effbench.scenarios.plan import offline_queries
    rng = np.random.default_rng(seed)
    keys = list(calls)
    call_ns: dict[str, list[int]] = {k: [] for k in keys}
    timed = {k: [{b: _timed(c, call_ns[k]) for b, c in stream.items()} for stream in calls[k]] for k in keys}
    runs: dict[str, list] = {k: [] for k in keys}
    per_run_ms = max(int(1000 * options["min_time_s"] / OFFLINE_CYCLES), 100)
    for cycle in range(OFFLINE_CYCLES):
        for k in rng.permutation(keys):
            batch = members[k]["batch_size"]
            settings = LoadGenSettings(scenario=OFFLINE, min_duration_ms=per_run_ms,
                                       min_query_count=offline_queries(options, batch))
            runs[k].append(run_loadgen(timed[k], settings, Path(log_dir) / _safe(k) / f"cycle-{cycle}",
                                       qsl_samples=max(timed[k][0]), threads=threads * len(timed[k])))
    out = {}
    noop = _generator_limit_offline(timed[keys[0]], settings, log_dir, None, threads * len(timed[keys[0]]))
    for k in keys:
        rs = runs[k]
        sps = [r.samples_per_s for r in rs if r.samples_per_s]
        est = within_one_round(sps)
        ns = call_ns[k] or [0]
        st = LatencyStats(tuple(float(x) for x in ns), first_call_ns=float(ns[0]), elapsed_s=sum(ns) / 1e9,
                          calls=len(ns))
        batch = members[k]["batch_size"]
        median_sps = float(np.median(sps)) if sps else None
        out[k] = {"latency_ms": st.to_json(), "samples_ms": st.stored_samples_ms(), "throughput_ips": median_sps,
                  "block_ms": [1000.0 / v for v in sps],
                  "offline": {"samples_per_s": median_sps, "ci": [est.lo, est.hi] if est else None,
                              "ci_level": est.level if est else None, "ci_scope": est.scope if est else None,
                              "ci_method": est.method if est else None,
                              "queries": offline_queries(options, batch), "batch_size": batch,
                              "streams": len(calls[k]), "passes": len(rs),
                              "loadgen": {**_loadgen_section(rs[-1], log_dir),
                                          "noop_samples_per_s": noop["noop_samples_per_s"],
                                          "limited_by_generator": bool(median_sps and noop["noop_samples_per_s"]
                                                                       and 2 * median_sps > noop["noop_samples_per_s"]),
                                          "generator_check": noop["generator_check"],
                                          "runs": [{"samples_per_s": r.samples_per_s, "valid": r.valid,
                                                    "summary": _relative(r.summary_path, log_dir)} for r in rs]}}}
    return out


def _noop(calls: dict) -> dict:
    return {b: (lambda: None) for b in calls}


def _generator_limit_server(calls: dict, base, log_dir: str, max_qps: float, threads: int) -> dict:
    """Whether the peak is the generator's: LoadGen with a no-op system under test at twice the peak. Where
    even a no-op cannot be served there (INVALID), the peak lies within 2x of what LoadGen and this Python
    SUT can drive on this machine, and the record says it is limited by the generator."""
    from dataclasses import replace

    from effbench.scenarios.loadgen import run_loadgen
    s = replace(base, target_qps=2 * max_qps, max_async_queries=max(100, int(20 * max_qps * base.latency_bound_ms / 1e3)))
    r = run_loadgen(_noop(calls), s, Path(log_dir) / "noop-at-2x-peak", qsl_samples=max(calls), threads=threads)
    return {"noop_at_2x_peak_valid": r.valid,
            "limited_by_generator": not r.valid,
            "generator_check": f"a no-op system under test at 2x the peak ({2 * max_qps:.4g} queries/s): "
                               f"LoadGen said {'VALID' if r.valid else 'INVALID'}"}


def _generator_limit_offline(calls: list[dict], settings, log_dir: str, samples_per_s: float | None,
                             threads: int) -> dict:
    """Offline's counterpart: a no-op SUT's samples/s under the same settings; within 2x of it, the figure is
    the generator's."""
    from effbench.scenarios.loadgen import run_loadgen
    r = run_loadgen([_noop(c) for c in calls], settings, Path(log_dir) / "noop", qsl_samples=max(calls[0]),
                    threads=threads)
    limited = bool(samples_per_s and r.samples_per_s and samples_per_s * 2 > r.samples_per_s)
    return {"noop_samples_per_s": r.samples_per_s, "limited_by_generator": limited,
            "generator_check": f"a no-op system under test ran {r.samples_per_s:.4g} samples/s under the same "
                               "settings" if r.samples_per_s else "the no-op run gave no samples/s"}


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in key)


def _server_figures(calls: dict[int, Any], budget: dict, options: dict, seed: int, log_dir: str,
                    threads: int) -> dict:
    """One variant's max rate under the bound: LoadGen's Server scenario at candidate rates (bracket, then
    bisect; LoadGen's VALID/INVALID judges each rate, with its early stopping), every rate kept."""
    import time

    import numpy as np

    from effbench.scenarios.loadgen import SERVER, LoadGenSettings, find_max_qps, server_runner
    one = calls[min(calls)]
    t0 = time.perf_counter_ns()
    one()
    first = time.perf_counter_ns() - t0
    service_s = []
    for _ in range(20):
        t0 = time.perf_counter_ns()
        one()
        service_s.append((time.perf_counter_ns() - t0) / 1e9)
    service = max(float(np.median(service_s)), 1e-6)
    bound, pct = options["latency_bound_ms"], options["percentile"]
    base = LoadGenSettings(scenario=SERVER, target_qps=1.0, latency_bound_ms=bound, percentile=pct,
                           min_duration_ms=int(1000 * options["min_duration_s"]), min_query_count=options["queries"])
    run_at = server_runner(calls, base, log_dir, qsl_samples=max(calls), threads=threads,
                           max_wait_ms=options.get("max_wait_ms") or 0.0)
    budget_s = options["max_time_s"]
    # the lowest rate worth a run: 1% utilisation, or LoadGen's minimum queries in a third of the budget
    min_qps = max(0.01 / service, 3 * options["queries"] / budget_s)
    search = find_max_qps(run_at, options.get("start_qps") or max(0.5 / service, min_qps), min_qps=min_qps,
                          budget_s=budget_s)
    best = search.best
    limit = _generator_limit_server(calls, base, log_dir, best.settings.target_qps, threads) if best else None
    shown = best or min(search.runs, key=lambda r: r.settings.target_qps)
    lat = shown.latency_ms
    latency = {"median": lat.get("p50"), "mean": lat.get("mean"), "min": lat.get("min"), "max": lat.get("max"),
               "p90": lat.get("p90"), "p99": lat.get("p99"), "n": shown.queries, "calls": shown.queries,
               "first_call": first / 1e6, "timing": "LoadGen (from each query's scheduled time)",
               "p90_reliable": True, "p99_reliable": bool(shown.early_stopping_met)}
    rates = search.rates()
    server = {"max_qps": search.max_qps, "latency_bound_ms": bound, "percentile": pct,
              "percentile_ms": best.percentile_ms if best else None,
              "p99_ms": best.latency_ms.get("p99") if best else None,
              "p50_ms": best.latency_ms.get("p50") if best else None,
              "achieved_qps": best.completed_qps if best else None, "queries": best.queries if best else None,
              "max_batch": max(calls), "max_wait_ms": options.get("max_wait_ms") or 0.0,
              "early_stopping": ({"met": best.early_stopping_met, "lines": list(best.early_stopping),
                                  "overlatency": best.overlatency_queries} if best else None),
              "curve": [(r["qps"], r["percentile_ms"]) for r in rates if r["percentile_ms"] is not None],
              "probes": [{**r, "summary_path": _relative(r["summary_path"], log_dir),
                          "detail_path": _relative(r["detail_path"], log_dir)} for r in rates],
              "search": search.ended,
              "reason": None if best else (f"{search.ended}: at {shown.settings.target_qps:.4g} queries/s LoadGen "
                                           f"said INVALID (p{pct:g} {shown.percentile_ms} ms against {bound:g} ms)"),
              "service_ms": service * 1e3,
              "loadgen": {**_loadgen_section(shown, log_dir), **(limit or {})}}
    return {"latency_ms": latency, "samples_ms": [], "throughput_ips": best.completed_qps if best else None,
            "block_ms": [],
            "unpaired": "server: each variant's peak rate comes from its own search, so there is no paired "
                        "speedup; compare max_qps and its CI over rounds", "server": server}


# ------------------------------------------------------------------------------ single- and multi-stream
def _stream_figures(r, log_root: str) -> dict:
    """What a single- or multi-stream record keeps of one LoadGen run, each figure read from its summary:
    the headline percentile line, the per-query block's p50 and mean, the early-stopping estimate."""
    from effbench.scenarios.loadgen.settings import percentile_key
    return {"percentile": r.target_percentile, "percentile_ms": r.target_percentile_ms,
            "p50_ms": r.latency_ms.get("p50"), "mean_ms": r.latency_ms.get("mean"),
            "early_stopping_ms": r.early_stopping_ms.get(percentile_key(r.target_percentile)),
            "early_stopping_met": r.early_stopping_met, "verdict": "VALID" if r.valid else "INVALID",
            "queries": r.queries}


def _stream_settings(scenario: str, options: dict):
    from effbench.scenarios.loadgen import LoadGenSettings
    return LoadGenSettings(scenario=scenario, percentile=float(options["percentile"]),
                           samples_per_query=int(options.get("samples_per_query") or 8),
                           min_duration_ms=int(1000 * options["min_duration_s"]), min_query_count=int(options["queries"]),
                           max_duration_ms=int(1000 * options["max_duration_s"]))


def single_stream_loadgen(calls: dict[str, Any], members: list[dict], options: dict, seed: int,
                          log_dir: str) -> dict[str, dict]:
    """Single-stream through LoadGen, after the paired loop of `execution.tasks.measure_group` (which
    calls this with its bound calls, so the sessions are the ones it timed): one LoadGen SingleStream run
    per batch-1 member, in an order drawn from `seed`, its logs under `log_dir/<member>`. LoadGen's query
    is one sample, so a member of a larger batch gets the reason instead (its call is a query of that many
    samples: multi-stream with samples_per_query). Each run ends before the worker's timeout
    (`timeout_s_per_member` x members, counted from the process's start): its max_duration is the smaller of
    the suite's and what that leaves, so a slow model's run can end INVALID (too few queries) rather than
    the worker being killed. A run that fails costs only its own section.
    Returns member key -> {"single_stream": section}."""
    import time
    from dataclasses import replace

    import numpy as np

    from effbench.scenarios.loadgen import SINGLE_STREAM, SUTError, run_loadgen
    settings = _stream_settings(SINGLE_STREAM, options)
    batch = {m["key"]: m["batch_size"] for m in members}
    keys = list(calls)
    out: dict[str, dict] = {}
    age = _process_age_s()
    per_member = options.get("timeout_s_per_member")
    deadline = (time.monotonic() - age + per_member * len(members) - TIMEOUT_MARGIN_S
                if age is not None and per_member else None)
    for i in np.random.default_rng(seed).permutation(len(keys)):
        k = keys[i]
        left_ms = int(1000 * (deadline - time.monotonic())) if deadline is not None else None
        if batch[k] == 1 and left_ms is not None and left_ms < settings.min_duration_ms + 1000:
            out[k] = {"single_stream": {"percentile": settings.target_percentile,
                                        "reason": "no LoadGen run: the worker's timeout left too little time for it"}}
            continue
        if batch[k] != 1:
            out[k] = {"single_stream": {
                "percentile": settings.target_percentile,
                "reason": f"no LoadGen run: LoadGen's single-stream query is one sample, and this cell's call runs "
                          f"a batch of {batch[k]} (a query of {batch[k]} samples is what multi-stream with "
                          f"samples_per_query: {batch[k]} measures)"}}
            continue
        capped = settings if left_ms is None else replace(
            settings, max_duration_ms=min(settings.max_duration_ms or left_ms, left_ms))
        try:  # the SUT runs one query at a time: one worker thread
            r = run_loadgen({1: calls[k]}, capped, Path(log_dir) / _safe(k), qsl_samples=1, threads=1)
        except Exception as e:  # noqa: BLE001 - the paired loop's figures stand without it
            traceback.print_exc()
            why = (f"a call raised {str(e).strip().splitlines()[-1]}" if isinstance(e, SUTError) else gist(e))
            out[k] = {"single_stream": {"percentile": settings.target_percentile,
                                        "reason": f"the LoadGen run failed: {why}"}}
            continue
        out[k] = {"single_stream": {**_stream_figures(r, log_dir), "p99_ms": r.latency_ms.get("p99"),
                                    "early_stopping_estimates_ms": dict(r.early_stopping_ms),
                                    "qps_without_loadgen_overhead": r.qps_without_overhead,
                                    "loadgen": _loadgen_section(r, log_dir)}}
    return out


# single-stream's LoadGen runs end this long before the worker's timeout (warmup, log parsing, the sentinel)
TIMEOUT_MARGIN_S = 10.0


def _process_age_s() -> float | None:
    """How long this worker process has run (Linux: /proc), or None where that cannot be read."""
    import os
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def _multi_stream_figures(calls: dict, members: dict, options: dict, seed: int, log_dir: str,
                          threads: int) -> dict[str, dict]:
    """Each variant's multi-stream figure: LoadGen's MultiStream, MULTI_STREAM_CYCLES runs per variant in an
    order drawn per cycle (so each cycle's percentile latency is paired with FP32's: the blocks of the
    speedup). The round's figures are those of its median run, read from that run's summary.

    A query of N samples runs on the SUT's `threads` workers (matched to the runner's threads, as offline
    and server): as N / batch calls of the cell's batch when the batch is at most N (a batch-1 cell: N
    calls, up to `threads` at a time), as one call padded up to the batch above N."""
    import math

    import numpy as np

    from effbench.measure.latency import LatencyStats
    from effbench.measure.stats import within_one_round
    from effbench.scenarios.loadgen import MULTI_STREAM, run_loadgen
    from effbench.scenarios.plan import MULTI_STREAM_CYCLES
    rng = np.random.default_rng(seed)
    settings = _stream_settings(MULTI_STREAM, options)
    n = settings.samples_per_query
    keys = list(calls)
    call_ns: dict[str, list[int]] = {k: [] for k in keys}
    timed = {k: {b: _timed(c, call_ns[k]) for b, c in calls[k][0].items()} for k in keys}
    runs: dict[str, list] = {k: [] for k in keys}
    for cycle in range(MULTI_STREAM_CYCLES):
        for k in rng.permutation(keys):
            runs[k].append(run_loadgen(timed[k], settings, Path(log_dir) / _safe(k) / f"cycle-{cycle}",
                                       qsl_samples=max(n, *timed[k]), threads=threads))
    out = {}
    for k in keys:
        rs = runs[k]
        batch = members[k]["batch_size"]
        mid = sorted(rs, key=lambda r: r.target_percentile_ms or 0.0)[(len(rs) - 1) // 2]
        figs = [r.target_percentile_ms for r in rs if r.target_percentile_ms is not None]
        est = within_one_round(figs)
        ns = call_ns[k] or [0]
        st = LatencyStats(tuple(float(x) for x in ns), first_call_ns=float(ns[0]), elapsed_s=sum(ns) / 1e9,
                          calls=len(ns))
        mean_ms = mid.latency_ms.get("mean")
        sps = n / (mean_ms / 1e3) if mean_ms else None
        out[k] = {"latency_ms": st.to_json(), "samples_ms": st.stored_samples_ms(), "throughput_ips": sps,
                  "block_ms": [r.target_percentile_ms for r in rs],
                  "multi_stream": {
                      **_stream_figures(mid, log_dir), "samples_per_query": n,
                      "ci": [est.lo, est.hi] if est else None, "ci_level": est.level if est else None,
                      "ci_scope": est.scope if est else None, "ci_method": est.method if est else None,
                      "verdict": "VALID" if all(r.valid for r in rs) else "INVALID",
                      "early_stopping_met": all(bool(r.early_stopping_met) for r in rs),
                      "runs": len(rs), "runs_valid": sum(r.valid for r in rs),
                      "queries": sum(r.queries or 0 for r in rs), "batch_size": batch,
                      "calls_per_query": math.ceil(n / batch) if batch <= n else 1, "samples_per_s": sps,
                      "loadgen": {**_loadgen_section(mid, log_dir),
                                  "runs": [{"cycle": i, **_stream_figures(r, log_dir),
                                            "summary": _relative(r.summary_path, log_dir),
                                            "detail": _relative(r.detail_path, log_dir)}
                                           for i, r in enumerate(rs)]}}}
    return out
