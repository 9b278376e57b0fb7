"""What runs inside the workers: preparing a model, building a variant, and the measuring, A/B and
profile workers that open a runner session (`open_session`) and time it by DESIGN.md's rules.
"""
from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from effbench.errors import UserError
from effbench.record import Cell
from effbench.workers import gist

if TYPE_CHECKING:
    from effbench.variants import Variant


def prepare_model(model: dict, index: int, base_dir: str, suite_file: str, cache_dir: str) -> dict:
    from effbench.models.sources import prepare
    from effbench.suite import ModelSpec
    spec = ModelSpec.model_validate(model)
    art = prepare(spec, index, base_dir=Path(base_dir), suite_file=suite_file, cache_dir=Path(cache_dir))
    return _plain(art.to_json())


def _plain(d: dict) -> dict:
    """Plain JSON types only: a worker's result is pickled into the next worker's payload, and a torch
    object in it (torch.__version__ is a TorchVersion) would import torch there on unpickling, before
    the baseline RSS is read (~190 MB into an ONNX Runtime worker's memory figures)."""
    return json.loads(json.dumps(d, default=str))


def build_variant(artifact: dict, label: str, precision: str, method: str | None, options: dict,
                  cache_dir: str, calibration: dict | None = None) -> dict:
    from effbench.models.sources import ModelArtifact
    from effbench.variants import build_variant as _build
    built = _build(ModelArtifact.from_json(artifact), label, precision, method, options, Path(cache_dir),
                   calibration=calibration)
    return _plain(built.to_json())


def _enter_runtime(name: str):
    """The runner, its runtime imported before any baseline RSS is read (the runtime's import is not the
    model's memory). An ONNX Runtime worker must never have torch loaded: see _plain()."""
    import importlib

    from effbench.runners import get_runner
    runner = get_runner(name)
    loaded = [m for m in getattr(runner, "excludes", ()) if m in sys.modules]
    if loaded:
        raise RuntimeError(f"{loaded[0]} was imported into a {name} measuring worker before its baseline")
    importlib.import_module(getattr(runner, "runtime_module", name))
    return runner


@dataclass
class OpenSession:
    session: Any
    variant: Any                          # the loaded `Variant`
    baseline_rss_bytes: int | None       # the worker's RSS just before the load (`memory=True`)
    gpu_start_bytes: int | None          # the GPU's used memory just before the load (`memory=True`, GPU cells)


def open_session(cell: Cell, variant: Variant, artifact: dict, *, runner=None, options: dict | None = None,
                 memory: bool = False) -> OpenSession:
    """A runner session of `variant` for `cell` (its runner, threads, compile and device): the one way
    the measuring, A/B and quality workers open one. Raises `Unsupported` when the runner cannot run
    the variant.

    `runner`: the one `_enter_runtime` returned, where the worker reads memory or timing after its
    runtime's import; `options`: the runner's extra load options; `memory`: read the baseline memory
    after the support check, just before the load (the runtime's import is not the model's memory).
    """
    from effbench.measure import memory as mem
    from effbench.runners import Unsupported, get_runner
    runner = get_runner(cell.runner) if runner is None else runner
    v = variant
    support = runner.supports(v)
    if not support.ok:
        raise Unsupported(support.reason)
    baseline = mem.rss_bytes() if memory else None
    gpu_start = mem.gpu_used_bytes() if memory and cell.device != "cpu" else None
    # what a runner's load needs besides the variant: the model artifact, compile, the device
    session = runner.load(v, cell.threads, {**(options or {}), "artifact": artifact,
                                              "compile": cell.compile,
                                              "device": cell.device})
    return OpenSession(session, v, baseline, gpu_start)


def _on_gpu(session) -> bool:
    """Every runner says `device: cuda` in its session info when it runs there (ORT: only once its CUDA
    provider really started)."""
    return session.info.get("device") == "cuda"


def measure_cell(cell: Cell, variant: Variant, artifact: dict, feeds: dict, budget: dict, runner_options: dict,
                 overhead_ns: float | None = None) -> dict:
    """The measuring worker: load the variant, time it by DESIGN.md's rules, report memory."""
    import numpy as np

    from effbench.measure import energy, memory
    from effbench.measure.latency import Budget, aligned, loop_overhead_ns, measure_latency
    opened = open_session(cell, variant, artifact, runner=_enter_runtime(cell.runner), options=runner_options,
                          memory=True)
    session = opened.session
    arrays = {k: aligned(np.asarray(a)) for k, a in feeds.items()}
    call = session.timed_call(arrays)
    overhead = overhead_ns if overhead_ns is not None else loop_overhead_ns()
    stats = measure_latency(call, Budget(**budget), overhead_ns=overhead)
    peak = memory.peak_rss_bytes()
    lat = stats.to_json()
    inferences = cell.batch_size * lat["calls"]
    b = str(cell.batch_size)
    measured_b = energy_per_batch(energy.detect_meter(gpu=_on_gpu(session)), {b: call}, budget)[b]
    measured, why = measured_b["measured"], measured_b["reason"]
    throughput = inferences / stats.elapsed_s if stats.elapsed_s else None
    return {"latency_ms": lat, "samples_ms": stats.stored_samples_ms(), "throughput_ips": throughput,
            "memory": {"baseline_rss_bytes": opened.baseline_rss_bytes, "peak_rss_bytes": peak,
                       **(memory.gpu_figures(opened.gpu_start_bytes, session) if _on_gpu(session) else {})},
            "session": session.info, "loop_overhead_ns": overhead, "energy": measured, "energy_reason": why}


def energy_per_batch(meter, calls: dict[str, Callable[[], object]], budget: dict) -> dict[str, dict]:
    """{batch: {"measured", "reason"}}: each batch size's calls in a counter window of at least the
    counter's update period, bracketed by idle samples (the one after a batch is the next one's before),
    warmed up before the window opens. Without a counter: None and the meter's reason."""
    from effbench.measure.latency import Budget, measure_latency
    if not meter.available:
        return {b: {"measured": None, "reason": meter.reason} for b in calls}
    idle_s = max(0.5, meter.min_window_s)
    # inside the window, measure_latency makes two untimed calls (its first call, one warm-up call that
    # sizes the timed blocks: both counted below); the warm-up proper runs before the window opens
    timed = Budget(**{**budget, "warmup_s": 0.0, "min_time_s": max(budget["min_time_s"], meter.min_window_s),
                      "max_time_s": max(budget["max_time_s"], meter.min_window_s), "min_warmup_calls": 1})
    out: dict[str, dict] = {}
    before = meter.sample_idle_w(idle_s)
    for b, call in calls.items():
        for _ in range(3):
            call()
        with meter.window() as window:
            stats = measure_latency(call, timed)
        after = meter.sample_idle_w(idle_s)
        measured = window.result(inferences=int(b) * (stats.calls + 2), elapsed_s=stats.elapsed_s,
                                 idle_w=before, idle_after_w=after)
        out[b] = {"measured": measured, "reason": window.reason}
        before = after
    return out


def measure_pair(cell: Cell, sides: list[dict], budget: dict, load_reversed: bool = False) -> dict:
    """A/B mode's paired pass: the baseline's and the candidate's variants of one cell loaded in one worker
    and timed in alternating blocks (`measure.latency.paired_ratio`). Timing only: memory and energy come
    from each side's own worker. `load_reversed` loads the candidate first (odd rounds): two sessions of
    the same model in one process differed by a few percent here, so neither side always loads first."""
    import numpy as np

    from effbench.measure.latency import aligned, paired_ratio
    from effbench.runners import get_runner
    runner = get_runner(cell.runner)
    calls: dict[int, object] = {}
    for i in ((1, 0) if load_reversed else (0, 1)):
        side = sides[i]
        session = open_session(cell, side["variant"], side["artifact"], runner=runner).session
        calls[i] = session.timed_call({k: aligned(np.asarray(a)) for k, a in side["feeds"].items()})
    return paired_ratio(calls[0], calls[1], duration_s=max(1.0, budget["min_time_s"]),
                        warmup_s=budget["warmup_s"])


def measure_group(group: Cell, members: list[dict], variants: dict[str, Variant], artifact: dict, feeds: dict,
                  budget: dict, overhead_ns: float, seed: int, load_reversed: bool = False) -> dict:
    """The measuring worker of one round of a group: the variants of one model on one runner, every
    batch size, loaded in this process and timed in randomly interleaved blocks
    (`measure.latency.measure_interleaved`), with the drift sentinel timed before and after.

    `members`: [{"key", "label", "batch_size", "reference"}]; `variants`: label -> built variant; `feeds`: str(batch)
    -> arrays. A variant this runtime cannot load or run is reported for its members alone; the others
    are still timed. Memory and energy are not measured here: a variant's memory needs its own process.
    """
    import numpy as np

    from effbench.measure.latency import Budget, aligned, measure_interleaved, sentinel_us
    from effbench.runners import Unsupported
    runner = _enter_runtime(group.runner)
    before_us = sentinel_us()
    status: dict[str, tuple[str, str]] = {}   # member key -> (status, reason) when it cannot be timed
    sessions: dict[str, Any] = {}
    labels = list(dict.fromkeys(m["label"] for m in members))
    for label in (labels[::-1] if load_reversed else labels):  # neither side always loads first
        try:
            sessions[label] = open_session(group, variants[label], artifact, runner=runner,
                                           options={"shared_thread_pool": True}).session
        except Unsupported as e:
            status[label] = ("unsupported", str(e))
        except Exception as e:  # one variant's failure must not cost the others their measurement
            traceback.print_exc()
            status[label] = ("failed", gist(e))
    calls = {}
    for m in members:
        if m["label"] in status:
            status[m["key"]] = status[m["label"]]
            continue
        arrays = {k: aligned(np.asarray(a)) for k, a in feeds[str(m["batch_size"])].items()}
        try:
            calls[m["key"]] = sessions[m["label"]].timed_call(arrays)
        except Unsupported as e:
            status[m["key"]] = ("unsupported", str(e))
        except Exception as e:
            traceback.print_exc()
            status[m["key"]] = ("failed", gist(e))
    references = {m["key"]: m["reference"] for m in members if m.get("reference")}
    timed = (measure_interleaved(calls, Budget(**budget), overhead_ns=overhead_ns, references=references, seed=seed)
             if calls else None)
    infos = {label: sess.info for label, sess in sessions.items()}
    after_us = _sentinel_unloaded(calls, sessions)
    out: dict[str, dict] = {}
    for m in members:
        key = m["key"]
        if key in status:
            out[key] = {"status": status[key][0], "reason": status[key][1]}
            continue
        st = timed.stats[key]
        inferences = m["batch_size"] * st.calls
        out[key] = {"status": "ok", "latency_ms": st.to_json(), "samples_ms": st.stored_samples_ms(),
                    "throughput_ips": inferences / st.elapsed_s if st.elapsed_s else None,
                    "block_ms": timed.block_ms[key], "session": infos[m["label"]]}
    return {"members": out,
            "sentinel": {"before_us": before_us, "after_us": after_us, "change": after_us / before_us - 1}}


def profile_variant(cell: Cell, variant: Variant, artifact: dict, feeds: dict, budget: dict,
                    quality: dict | None) -> dict:
    """The variant's own worker, once per run: peak memory at each batch size, measured energy where
    the machine has counters, then the untimed quality pass.

    Memory: baseline RSS before loading, then for each batch size (smallest first, as the runtime's
    arenas only grow) the kernel's high-water mark over load and a few calls, reset between batch sizes
    (/proc/self/clear_refs 5). Peak RSS needs a process of its own; timing does not (`measure_group`).
    """
    import numpy as np

    from effbench.measure import energy, memory
    from effbench.measure.latency import aligned
    from effbench.runners import Unsupported
    opened = open_session(cell, variant, artifact, runner=_enter_runtime(cell.runner), memory=True)
    session, baseline, gpu_start = opened.session, opened.baseline_rss_bytes, opened.gpu_start_bytes
    load_peak = memory.peak_rss_bytes()
    out: dict[str, Any] = {"memory": {}, "energy": {}}
    batches = sorted(feeds, key=int)
    calls = {}
    for b in batches:
        resettable = memory.reset_peak(session)
        try:
            call = session.timed_call({k: aligned(np.asarray(a)) for k, a in feeds[b].items()})
            for _ in range(10):
                call()
        except Exception as e:  # e.g. out of memory at the largest batch: the smaller ones keep their figures
            traceback.print_exc()
            out["memory"][b] = {"reason": f"memory not measured: {gist(e)}"}
            continue
        calls[b] = call
        peak = max(load_peak, memory.peak_rss_bytes()) if resettable else memory.peak_rss_bytes()
        gpu = memory.gpu_figures(gpu_start, session) if _on_gpu(session) else {}
        out["memory"][b] = {"baseline_rss_bytes": baseline, "peak_rss_bytes": peak, **gpu,
                            "measured": "own worker, once per run" + ("" if resettable else
                                        "; peak not resettable here: includes smaller batch sizes")}
    out["energy"] = energy_per_batch(energy.detect_meter(gpu=_on_gpu(session)), calls, budget)
    if calls and hasattr(session, "placement"):
        first = min(calls, key=int)
        out["placement"] = session.placement({k: np.asarray(a) for k, a in feeds[first].items()})
    del calls, session, opened  # the session is freed before the quality pass loads its own
    if quality is not None:
        from effbench.measure.quality import quality_pass
        try:
            out["quality"] = quality_pass(cell=cell, variant=variant, artifact=artifact, **quality)
        except (Unsupported, UserError):
            raise
        except Exception as e:
            traceback.print_exc()
            out["quality"] = {"metric": quality.get("metric"), "value": None, "status": "failed", "reason": gist(e)}
    return out


def layer_profile(cell: Cell, variant: Variant, artifact: dict, feeds: dict, runs: int) -> dict:
    """The per-layer worker: the runner's own profiler over `runs` calls, folded onto the graph's nodes
    with their MACs and bytes (`measure.layers`). A runner without a profiler is Unsupported."""
    import numpy as np

    from effbench.measure.flops import count_work
    from effbench.measure.layers import fold, kernel_times, links
    from effbench.runners import Unsupported, runner_class
    profile = getattr(runner_class(cell.runner), "profile_kernels", None)
    if profile is None:
        raise Unsupported(f"the {cell.runner} runner has no per-kernel profiler wired to effbench yet")
    arrays = {k: np.asarray(a) for k, a in feeds.items()}
    if variant.own_graph(cell.runner):
        events, graph = profile(variant, cell.threads or 1, arrays, runs)
        work = count_work(graph, batch_size=cell.batch_size, dims=artifact.get("dims") or {})
        rows = fold(kernel_times(events, runs), work.by_node, links(graph))
        return {"rows": [r.to_json() for r in rows], "graph": graph, "runs": runs}
    # a runner of modules: its profiler answers per module, with the modules' own MACs
    supported = runner_class(cell.runner)().supports(variant)
    if not supported.ok:
        raise Unsupported(supported.reason)
    events, modules = profile(variant, cell.threads or 1, arrays, runs, artifact)
    rows = fold(kernel_times(events, runs), modules)
    return {"rows": [r.to_json() for r in rows], "graph": None, "runs": runs}


def _sentinel_unloaded(*holders: dict) -> float:
    """The sentinel after a group, in the same conditions as before it: every session released first (a
    loaded session's thread pool slowed it by a steady 10-15% here, which is not drift)."""
    import gc

    from effbench.measure.latency import sentinel_us
    for h in holders:
        h.clear()
    gc.collect()
    return sentinel_us()


def measure_load(group: Cell, members: list[dict], variants: dict[str, Variant], artifact: dict, feeds: dict,
                 budget: dict, options: dict, seed: int, load_reversed: bool = False) -> dict:
    """The measuring worker of one round of an offline or server group (`effbench.scenarios`): the group's
    variants loaded in this process, the drift sentinel before and after, as `measure_group` does.

    Offline: every variant's passes over its pool in randomly ordered cycles (`measure_offline`), so a
    per-cycle ratio of samples/s vs FP32 is paired. Server: each variant's peak-rate search in turn, in
    an order drawn from `seed` (`find_peak`); its latencies run from the scheduled arrivals.
    `feeds`: str(batch shape) -> arrays, every shape the members' batch sizes need.
    """
    import numpy as np

    from effbench.measure.latency import aligned, sentinel_us
    from effbench.runners import Unsupported
    from effbench.scenarios import OFFLINE, batch_shapes
    runner = _enter_runtime(group.runner)
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
    after_us = _sentinel_unloaded(calls, sessions)
    out: dict[str, dict] = {}
    for m in members:
        key = m["key"]
        out[key] = ({"status": status[key][0], "reason": status[key][1]} if key in status
                    else {"status": "ok", **figures[key], "session": infos[m["label"]]})
    return {"members": out,
            "sentinel": {"before_us": before_us, "after_us": after_us, "change": after_us / before_us - 1}}


def _offline_figures(calls: dict, members: dict, budget: dict, options: dict, seed: int) -> dict[str, dict]:
    from effbench.measure import scenarios as sc
    from effbench.measure.latency import LatencyStats
    from effbench.measure.stats import within_one_round
    from effbench.scenarios import offline_queries
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

    from effbench.measure import scenarios as sc
    from effbench.measure.latency import LatencyStats
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
