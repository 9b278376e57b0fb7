"""The worker of one round of an offline or server group: the group's variants loaded in one process,
each driven by the load generator (`scenarios.load`), the drift sentinel before and after.
"""
from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

from effbench.errors import gist
from effbench.runners.session import enter_runtime, open_session

if TYPE_CHECKING:
    from effbench.results.record import Cell
    from effbench.variants import Variant


def measure_load(group: Cell, members: list[dict], variants: dict[str, Variant], artifact: dict, feeds: dict,
                 budget: dict, options: dict, seed: int, load_reversed: bool = False) -> dict:
    """The measuring worker of one round of an offline or server group (`effbench.scenarios.plan`): the group's
    variants loaded in this process, the drift sentinel before and after, as `measure_group` does.

    Offline: every variant's passes over its pool in randomly ordered cycles (`measure_offline`), so a
    per-cycle ratio of samples/s vs FP32 is paired. Server: each variant's peak-rate search in turn, in
    an order drawn from `seed` (`find_peak`); its latencies run from the scheduled arrivals.
    `feeds`: str(batch shape) -> arrays, every shape the members' batch sizes need.
    """
    import numpy as np

    from effbench.measure.latency import aligned, sentinel_released, sentinel_us
    from effbench.runners import Unsupported
    from effbench.scenarios.plan import OFFLINE, batch_shapes
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
        figures = _offline_figures(calls, by_key, budget, options, seed) if calls else {}
    else:
        keys = list(calls)  # one search after another, in an order drawn for this round
        figures = {keys[i]: _server_figures(calls[keys[i]][0], budget, options, seed + int(i))
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


def _offline_figures(calls: dict, members: dict, budget: dict, options: dict, seed: int) -> dict[str, dict]:
    from effbench.measure.latency import LatencyStats
    from effbench.measure.stats import within_one_round
    from effbench.scenarios import load as sc
    from effbench.scenarios.plan import offline_queries
    pools = {key: (streams, offline_queries(options, members[key]["batch_size"]), members[key]["batch_size"])
             for key, streams in calls.items()}
    refs = {key: members[key]["reference"] for key in pools if members[key].get("reference") in pools}
    runs = sc.measure_offline(pools, warmup_s=budget["warmup_s"], min_time_s=options["min_time_s"],
                              max_time_s=options["max_time_s"], seed=seed, references=refs)
    out = {}
    for key, run in runs.items():
        _, queries, batch = pools[key]
        st = LatencyStats(tuple(float(x) for x in run.call_ns), first_call_ns=run.first_call_ns,
                          elapsed_s=run.elapsed_s, calls=len(run.call_ns))
        est = within_one_round([p.samples_per_s for p in run.passes])
        out[key] = {"latency_ms": st.to_json(), "samples_ms": st.stored_samples_ms(),
                    "throughput_ips": run.samples_per_s, "block_ms": run.pass_ms_per_sample,
                    "offline": {"samples_per_s": run.samples_per_s, "ci": [est.lo, est.hi] if est else None,
                                "ci_level": est.level if est else None, "ci_scope": est.scope if est else None,
                                "ci_method": est.method if est else None, "queries": queries, "batch_size": batch,
                                "streams": len(calls[key]), "passes": len(run.passes), "elapsed_s": run.elapsed_s}}
    return out


def _server_figures(calls: dict[int, Any], budget: dict, options: dict, seed: int) -> dict:
    """One variant's peak-rate search: warm up, estimate the service time of one query, then probe."""
    import math
    import time

    import numpy as np

    from effbench.measure.latency import LatencyStats
    from effbench.scenarios import load as sc
    one = calls[min(calls)]
    t0 = time.perf_counter_ns()
    one()
    first = time.perf_counter_ns() - t0
    end, n = time.monotonic() + budget["warmup_s"], 0
    while n < 10 * len(calls) or time.monotonic() < end:
        list(calls.values())[n % len(calls)]()
        n += 1
    service_s = []
    for _ in range(20):
        t0 = time.perf_counter_ns()
        one()
        service_s.append((time.perf_counter_ns() - t0) / 1e9)
    service = max(float(np.median(service_s)), 1e-6)
    bound, pct, queries = options["latency_bound_ms"], options["percentile"], options["queries"]
    max_batch = max(calls)
    budget_s, min_s = options["max_time_s"], options["min_duration_s"]
    gaps = sc.GapStream(seed)

    def probe(qps: float) -> sc.Probe:
        # `queries` and `min_duration_s`, whichever is longer (a probe shorter than the bound could never
        # build a backlog), but at most a sixth of the search's budget (and at least 100 queries)
        k = min(max(queries, math.ceil(qps * min_s)), max(100, math.ceil(qps * budget_s / 6)))
        return sc.run_probe(calls, qps, gaps.first(k), bound_ms=bound, percentile=pct, max_batch=max_batch,
                            max_wait_ms=options.get("max_wait_ms") or 0.0)

    # the lowest rate worth a probe: 1% utilisation, or 100 queries (LoadGen's minimum) in a third of the budget
    min_qps = max(0.01 / service, 300 / budget_s)
    search = sc.find_peak(probe, options.get("start_qps") or max(0.5 / service, min_qps), min_qps=min_qps,
                          budget_s=budget_s)
    shown = search.best or min(search.probes, key=lambda p: p.offered_qps)
    lat_ns = tuple(x * 1e6 for x in shown.latencies_ms)
    st = LatencyStats(lat_ns, first_call_ns=float(first), elapsed_s=shown.elapsed_s, calls=len(lat_ns))
    best = search.best
    server = {"max_qps": search.max_qps, "latency_bound_ms": bound, "percentile": pct,
              "percentile_ms": best.percentile_ms if best else None,
              "p99_ms": sc.percentile_of(best.latencies_ms, 99) if best else None,
              "p50_ms": sc.percentile_of(best.latencies_ms, 50) if best else None,
              "achieved_qps": best.achieved_qps if best else None, "queries": best.queries if best else None,
              "max_batch": max_batch, "max_wait_ms": options.get("max_wait_ms") or 0.0,
              "early_stopping": sc.server_early_stopping(best.latencies_ms, bound, pct) if best else None,
              "curve": search.curve(), "probes": [p.to_json() for p in search.probes], "search": search.ended,
              "reason": None if best else (f"{search.ended} (down to {min_qps:.3g} queries/s): at "
                                           f"{shown.offered_qps:.3g} queries/s the p{pct:g} latency was "
                                           f"{shown.percentile_ms:.3g} ms against a bound of {bound:g} ms"),
              "service_ms": service * 1e3}
    return {"latency_ms": st.to_json(), "samples_ms": st.stored_samples_ms(),
            "throughput_ips": best.achieved_qps if best else None, "block_ms": [],
            "unpaired": "server: each variant's peak rate comes from its own search, so there is no paired "
                        "speedup; compare max_qps and its CI over rounds", "server": server}
