"""What runs inside the workers: preparing a model, building a variant, and the measuring, A/B, profile
and quality workers that open a runner session (`runners.session.open_session`) and time it.
"""
from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from effbench.errors import UserError, gist
from effbench.results.record import Cell
from effbench.runners import runner_side
from effbench.runners.session import enter_runtime, on_gpu, open_session

if TYPE_CHECKING:
    import numpy as np

    from effbench.variants import Variant


def prepare_model(model: dict, index: int, base_dir: str, suite_file: str, cache_dir: str) -> dict:
    from effbench.config.suite import ModelSpec
    from effbench.models.sources import prepare
    spec = ModelSpec.model_validate(model)
    art = prepare(spec, index, base_dir=Path(base_dir), suite_file=suite_file, cache_dir=Path(cache_dir))
    return plain(art.to_json())


def plain(d: dict) -> dict:
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
    return plain(built.to_json())


def measure_cell(cell: Cell, variant: Variant, artifact: dict, feeds: dict, budget: dict, runner_options: dict,
                 overhead_ns: float | None = None) -> dict:
    """The measuring worker: load the variant, time it by the rules of docs/measurement.md, report memory."""
    import numpy as np

    from effbench.measure import energy, memory
    from effbench.measure.latency import Budget, aligned, loop_overhead_ns, measure_latency
    opened = open_session(cell, variant, artifact, runner=enter_runtime(cell.runner), options=runner_options,
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
    measured_b = energy_per_batch(energy.detect_meter(gpu=on_gpu(session)), {b: call}, budget)[b]
    measured, why = measured_b["measured"], measured_b["reason"]
    throughput = inferences / stats.elapsed_s if stats.elapsed_s else None
    return {"latency_ms": lat, "samples_ms": stats.stored_samples_ms(), "throughput_ips": throughput,
            "memory": {"baseline_rss_bytes": opened.baseline_rss_bytes, "peak_rss_bytes": peak,
                       **(memory.gpu_figures(opened.gpu_start_bytes, session) if on_gpu(session) else {})},
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
                  budget: dict, overhead_ns: float, seed: int, load_reversed: bool = False,
                  loadgen: dict | None = None, log_dir: str = ".", baselines: dict[str, dict] | None = None,
                  contention: dict | None = None) -> dict:
    """The measuring worker of one round of a group: the variants of one model on one runner, every
    batch size, loaded in this process and timed in randomly interleaved blocks
    (`measure.latency.measure_interleaved`), with the drift sentinel timed before and after.

    `members`: [{"key", "label", "batch_size", "reference", "feeds"?}]; `variants`: label -> built variant;
    `feeds`: str(batch) (or a member's "feeds" key) -> arrays. A variant this runtime cannot load or run is
    reported for its members alone; the others are still timed. Memory and energy are not measured here: a
    variant's memory needs its own process.

    `baselines`: label -> {"cell", "artifact"} for the members that are another runner's or model's FP32 (the
    suite's `compare:`, `execution.crosspairs`): opened with that cell's runner and that model's artifact and
    timed in the same cycles, so the group's cells have a paired speedup against them too. Several runtimes in
    one process: see `_thread_pools`.

    `contention`: {"wait_s", "fewer_threads"} (the suite's `measure.contention`): before anything loads, other
    processes busy on this machine are measured (`measure.contention`); the group waits for them to go, else
    runs every session (its baselines' too) with the cores they leave free. What it saw and did goes into the
    sentinel's entry of the record's drift section.
    """
    import numpy as np

    from effbench.measure.latency import Budget, aligned, measure_interleaved, sentinel_us
    from effbench.runners import Unsupported
    runner = enter_runtime(group.runner)
    baselines = baselines or {}
    group, baselines, threads = _contention_plan(group, baselines, contention)
    pools = _thread_pools(group, baselines)
    before_us = sentinel_us()
    labels = list(dict.fromkeys(m["label"] for m in members))
    # member key or label -> (status, reason) when it cannot be timed; neither side always loads first
    sessions, status = _open_sessions(group, labels[::-1] if load_reversed else labels, variants, artifact, runner,
                                      baselines, pools["options"])
    calls = {}
    for m in members:
        if m["label"] in status:
            status[m["key"]] = status[m["label"]]
            continue
        arrays = {k: aligned(np.asarray(a)) for k, a in feeds[m.get("feeds") or str(m["batch_size"])].items()}
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
    # the suite's single-stream LoadGen runs on the same bound calls (`loadgen`: its options; scenarios.worker)
    from effbench.scenarios.worker import single_stream_loadgen
    own = [m for m in members if m["label"] not in baselines]  # LoadGen runs the group's own cells only
    own_calls = {m["key"]: calls[m["key"]] for m in own if m["key"] in calls}
    lg = single_stream_loadgen(own_calls, own, loadgen, seed, log_dir) if loadgen and own_calls else {}
    infos = {label: sess.info for label, sess in sessions.items()}
    from effbench.measure.latency import sentinel_released
    after_us = sentinel_released(calls, sessions)
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
                    "block_ms": timed.block_ms[key], "session": infos[m["label"]], **lg.get(key, {})}
    return {"members": out, **({"thread_pools": pools["record"]} if baselines else {}),
            "sentinel": {"before_us": before_us, "after_us": after_us, "change": after_us / before_us - 1,
                         **threads}}


def _contention_plan(group: Cell, baselines: dict[str, dict], contention: dict | None
                     ) -> tuple[Cell, dict[str, dict], dict]:
    """The group and its baselines with the threads they run with now (`measure.contention.plan_threads`),
    and what the record says about it."""
    from effbench.measure.contention import plan_threads
    if contention is None:
        return group, baselines, {"threads_asked": group.threads, "threads_used": group.threads,
                                  "action": "not checked"}
    plan = plan_threads(group.threads, wait_s=contention.get("wait_s", 10.0))
    out = plan.to_json()
    if plan.threads != group.threads and not contention.get("fewer_threads", True):
        out.update(threads_used=group.threads, action="kept threads",
                   note=f"{plan.note}; kept {group.threads} as the suite asks (measure.contention.fewer_threads: false)")
    used = out["threads_used"]
    if used != group.threads:
        group = group.replace(threads=used)
        baselines = {k: {**b, "cell": b["cell"].replace(threads=used)} for k, b in baselines.items()}
    return group, baselines, out


def _open_sessions(group: Cell, labels: list[str], variants: dict, artifact: dict, runner, baselines: dict[str, dict],
                   options: dict) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """The group worker's sessions by label, in `labels`' order (a baseline's with its own cell, artifact and
    runner), and (status, reason) of each label that could not be opened: one variant's failure must not cost
    the others their measurement."""
    from effbench.runners import Unsupported
    sessions: dict[str, Any] = {}
    status: dict[str, tuple[str, str]] = {}
    for label in labels:
        base = baselines.get(label)
        try:
            if base is None:
                sessions[label] = open_session(group, variants[label], artifact, runner=runner, options=options).session
            else:
                sessions[label] = open_session(base["cell"], variants[label], base["artifact"],
                                               runner=_other_runtime(base["cell"].runner), options=options).session
        except Unsupported as e:
            status[label] = ("unsupported", str(e))
        except Exception as e:
            traceback.print_exc()
            status[label] = ("failed", gist(e))
    return sessions, status


def _other_runtime(name: str):
    """A baseline's runner in a group worker, its runtime imported. No `enter_runtime` check of what is already
    loaded: that guards a worker's baseline memory, and this worker reads none (timing only)."""
    import importlib

    from effbench.runners import get_runner
    runner = get_runner(name)
    importlib.import_module(getattr(runner, "runtime_module", name))
    return runner


def _thread_pools(group: Cell, baselines: dict[str, dict]) -> dict[str, Any]:
    """The load options of a group worker's sessions, and what the record says about them.

    One runtime (the usual group, or a baseline model on the same runner): ONNX Runtime's sessions share
    one process-wide pool (`runners.onnxruntime`): with a pool each, the idle sessions' spinning threads took
    the cores from the one being timed.

    Several runtimes in one process (`compare: runtimes`): each keeps its own pool, and a pool that spins
    after its run would steal the cores from the next block, which is another runtime's. ONNX Runtime's does
    (its threads busy-wait for more work after a run), and its process-wide pool's spinning cannot be turned
    off from Python, so here every ONNX Runtime session gets its own pool with spinning off
    (`session.intra_op.allow_spinning` = "0", and inter-op's), in this mode only, and the record says so.
    torch's OpenMP pool, OpenVINO's TBB arena and XNNPACK's pthreadpool are left as they are: their wait
    policies are fixed when the runtime loads and none is exposed per session; the untimed call that starts
    every block (`measure.latency.measure_interleaved`) absorbs the hand-over; with `threads: 1` no runtime
    has a pool thread that could spin."""
    runtimes = sorted({group.runner, *(b["cell"].runner for b in baselines.values())})
    threads = {group.threads, *(b["cell"].threads for b in baselines.values())}
    if len(runtimes) == 1 and len(threads) == 1:
        return {"options": {"shared_thread_pool": True},
                "record": {"runtimes": runtimes, "pools": "one runtime in the worker: its pools as in its own groups"}}
    return {"options": {"shared_thread_pool": False, "allow_spinning": False},
            "record": {"runtimes": runtimes,
                       "pools": "several runtimes (or thread counts) in one worker: a pool per session; spinning off where a session "
                                "exposes it (ONNX Runtime: session.intra_op.allow_spinning=0 and inter_op's); "
                                "torch's OpenMP, OpenVINO's TBB and XNNPACK's pthreadpool as in their own groups"}}


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
    opened = open_session(cell, variant, artifact, runner=enter_runtime(cell.runner), memory=True)
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
        gpu = memory.gpu_figures(gpu_start, session) if on_gpu(session) else {}
        out["memory"][b] = {"baseline_rss_bytes": baseline, "peak_rss_bytes": peak, **gpu,
                            "measured": "own worker, once per run" + ("" if resettable else
                                        "; peak not resettable here: includes smaller batch sizes")}
    out["energy"] = energy_per_batch(energy.detect_meter(gpu=on_gpu(session)), calls, budget)
    if calls and hasattr(session, "placement"):
        first = min(calls, key=int)
        out["placement"] = session.placement({k: np.asarray(a) for k, a in feeds[first].items()})
    del calls, session, opened  # the session is freed before the quality pass loads its own
    if quality is not None:
        try:
            out["quality"] = quality_pass(cell=cell, variant=variant, artifact=artifact, **quality)
        except (Unsupported, UserError):
            raise
        except Exception as e:
            traceback.print_exc()
            out["quality"] = {"metric": quality.get("metric"), "value": None, "status": "failed", "reason": gist(e)}
    return out


def missing_layer_profiler(runner: str) -> str | None:
    """Why `effbench layers` cannot profile a cell of this runner, or None when it can: the runner's own words
    (its `no_layer_profiler()`), else that none is wired. Never another runtime's profile in its place."""
    from effbench.runners import runner_class
    cls = runner_class(runner)
    if hasattr(cls, "profile_layers") or hasattr(cls, "profile_kernels"):
        return None
    said = getattr(cls, "no_layer_profiler", None)
    return said() if callable(said) else f"the {runner} runner has no per-layer profiler wired to effbench yet"


def layer_profile(cell: Cell, variant: Variant, artifact: dict, feeds: dict, runs: int) -> dict:
    """The per-layer worker: the cell's runtime's own profiler over `runs` calls. A runner with
    `profile_layers` profiles the session the cell measures (opened with the load option "profile") and
    answers rows and what profiled them; one with `profile_kernels` answers a trace, folded here onto the
    graph's nodes with their MACs and bytes (`measure.layers`). A runner without either is Unsupported."""
    import importlib

    import numpy as np

    from effbench.measure.flops import count_work
    from effbench.measure.layers import fold, kernel_times, links
    from effbench.runners import Unsupported, runner_class
    cls = runner_class(cell.runner)
    missing = missing_layer_profiler(cell.runner)
    if missing:
        raise Unsupported(missing)
    arrays = {k: np.asarray(a) for k, a in feeds.items()}
    if hasattr(cls, "profile_layers"):
        session = open_session(cell, variant, artifact, runner=enter_runtime(cell.runner),
                               options={"profile": True}).session
        return plain(cls.profile_layers(session, arrays, runs, batch_size=cell.batch_size,
                                        dims=artifact.get("dims") or {}))
    profile = cls.profile_kernels
    meta = {"profiler": getattr(cls, "layer_profiler", f"{cell.runner}'s profiler"), "runtime": cell.runner,
            "runtime_version": str(getattr(importlib.import_module(cls.runtime_module), "__version__", "") or "")}
    if variant.own_graph(runner_side(cell.runner)):
        events, graph = profile(variant, cell.threads or 1, arrays, runs)
        work = count_work(graph, batch_size=cell.batch_size, dims=artifact.get("dims") or {})
        rows = fold(kernel_times(events, runs), work.by_node, links(graph))
        return {"rows": [r.to_json() for r in rows], "graph": graph, "runs": runs, **meta,
                "timing": "per-kernel durations, median over the calls"}
    # a runner of modules: its profiler answers per module, with the modules' own MACs
    supported = cls().supports(variant)
    if not supported.ok:
        raise Unsupported(supported.reason)
    events, modules = profile(variant, cell.threads or 1, arrays, runs, artifact)
    rows = fold(kernel_times(events, runs), modules)
    return {"rows": [r.to_json() for r in rows], "graph": None, "runs": runs, **meta,
            "timing": "torch's profiler over each leaf module's forward (record_function by hooks), median over "
                      "the calls; MACs from torch's FlopCounterMode"}


def quality_pass(cell: Cell, variant: Variant, artifact: dict, inputs: dict[str, np.ndarray],
                 labels: np.ndarray | None, metric: str | None, reference_path: str,
                 min_relative: float, fp32_value: float | None = None, batch_size: int = 64,
                 baselines: dict[str, dict] | None = None) -> dict:
    """The record's `quality` section for one variant on one runner. Runs in a worker; the FP32 pass of
    the same model and runner must run first: it writes `reference_path` for the others.

    `baselines`: the suite's `compare:` targets of this cell, key -> {"cell_id", "reference_path", "value"}: the
    baseline FP32's outputs (written by its own pass, which runs first) and its metric value; each becomes an
    entry of `vs_baseline` (`baseline_quality`)."""
    import numpy as np

    from effbench.measure.quality import fidelity, run_outputs, top1
    opened = open_session(cell, variant, artifact)
    session, v = opened.session, opened.variant
    arrays = {k: np.asarray(a) for k, a in inputs.items()}
    out = run_outputs(session, arrays, batch_size)
    n = len(out)
    metric = metric or ("top1" if labels is not None else "cosine")
    from effbench.variants.specs import reference_precision
    is_fp32 = v.label == reference_precision()  # the reference itself, not a pruned FP32 variant
    ref_file = Path(reference_path)
    if is_fp32:
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref_file.with_name(ref_file.stem + ".tmp.npz")
        np.savez(tmp, outputs=out)
        tmp.replace(ref_file)
    ref, fid, fid_reason = None, None, None
    if ref_file.is_file():
        with np.load(ref_file, allow_pickle=False) as z:
            ref = z["outputs"]
        if ref.shape != out.shape:
            fid_reason = f"the FP32 reference has shape {list(ref.shape)}, this variant {list(out.shape)}"
            ref = None
    else:
        fid_reason = "no FP32 reference outputs (the FP32 quality pass did not run or failed)"
    if ref is not None:
        fid = fidelity(out, ref, logits=metric == "top1")
    if metric == "top1":
        if labels is None:
            raise ValueError("metric top1 needs labels in the dataset")
        value: float | None = top1(out, labels[:n])
    else:  # embedding models: the task metric is the mean cosine to the FP32 embeddings
        value = fid["cosine"] if fid else None
    base = value if is_fp32 else fp32_value
    relative = (value / base) if (value is not None and base) else None
    section = {"metric": metric, "value": value, "fp32_value": base, "relative": relative,
               "below_floor": (relative < min_relative) if relative is not None else None,
               "min_relative": min_relative, "fidelity": fid, "samples": n}
    if fid is None:
        section["fidelity_reason"] = fid_reason
    if value is None:
        section["reason"] = fid_reason
    if baselines:
        section["vs_baseline"] = {k: baseline_quality(out, b, metric, value, min_relative)
                                  for k, b in baselines.items()}
    return section


def baseline_quality(out: np.ndarray, base: dict, metric: str, value: float | None, min_relative: float) -> dict:
    """This variant's quality against another runner's or model's FP32 (`base`: its "cell_id", the
    "reference_path" of its outputs on the same inputs, its metric "value"). top1: this value over the
    baseline's; cosine (embeddings): the mean cosine of these outputs to the baseline's, which is the baseline
    against itself is 1."""
    import numpy as np

    from effbench.measure.quality import fidelity
    entry: dict[str, Any] = {"baseline": base["cell_id"], "metric": metric}
    ref_file = Path(base["reference_path"])
    fid, why = None, None
    if not ref_file.is_file():
        why = "no reference outputs of the baseline (its FP32 quality pass did not run or failed)"
    else:
        with np.load(ref_file, allow_pickle=False) as z:
            ref = z["outputs"]
        if ref.shape != out.shape:
            why = f"the baseline's outputs have shape {list(ref.shape)}, this variant's {list(out.shape)}"
        else:
            fid = fidelity(out, ref, logits=metric == "top1")
    if metric == "top1":
        mine, theirs = value, base.get("value")
    else:
        mine, theirs = (fid["cosine"] if fid else None), (1.0 if fid else None)
    relative = mine / theirs if (mine is not None and theirs) else None
    entry.update({"value": mine, "baseline_value": theirs, "relative": relative, "fidelity": fid,
                  "below_floor": (relative < min_relative) if relative is not None else None,
                  "min_relative": min_relative})
    if relative is None:
        entry["reason"] = why or ("the baseline has no " + metric + " value (its FP32 quality pass did not run "
                                  "or failed)")
    elif why:
        entry["fidelity_reason"] = why
    return entry
