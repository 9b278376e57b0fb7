"""Execution: plan -> prepare models -> build variants -> measure cells, each in a fresh `spawn`
worker with a timeout; crash capture, rounds, resume, the output lock and the progress display.

The parent never busy-waits: it blocks on the worker's pipe with a timeout (FIELD-NOTES: a spinning
parent takes one of two cores and doubled the latency a known harness reported here).
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import signal
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from effbench.errors import UserError
from effbench.measure.stats import SCOPE_ONE_MOMENT
from effbench.results import Record, Results, Store, load, provenance
from effbench.suite import Cell, Suite, load_suite
from effbench.variants import bits, model_bytes, own_graph, reference_precision, side_stats

BUILD_TIMEOUT_S = 1800.0
# Wilcoxon's smallest two-sided p with n rounds is 2 / 2**n: 12 rounds reach 0.01 / 16 cells (Holm).
AB_MIN_ROUNDS = 12


# ----------------------------------------------------------------------------------------- workers
@dataclass
class Outcome:
    kind: str            # ok | user_error | unsupported | failed
    value: Any = None
    reason: str | None = None


def _worker_main(result_fd: int, memory_limit_mb: int | None) -> None:
    """Runs in the fresh interpreter: read (target, payload) from stdin, send one Outcome back."""
    import importlib
    import pickle

    from effbench.measure.memory import limit_address_space
    from effbench.runners import Unsupported
    from effbench import plugins
    _die_with_parent()
    target, payload = pickle.load(sys.stdin.buffer)
    try:
        plugins.load_from_env()  # the parent's precisions and runners, registered here too
        limit_address_space(memory_limit_mb)
        mod_name, fn_name = target.split(":")
        fn = getattr(importlib.import_module(mod_name), fn_name)
        out = Outcome("ok", fn(**payload))
    except UserError as e:
        out = Outcome("user_error", e)
    except Unsupported as e:
        out = Outcome("unsupported", reason=str(e))
    except BaseException as e:  # a bug or a runtime error: the traceback goes to the log, the gist to the record
        traceback.print_exc()
        out = Outcome("failed", reason=_gist(e))
    try:
        data = pickle.dumps(out)
    except Exception as e:  # unpicklable result: say so rather than die silently
        data = pickle.dumps(Outcome("failed", reason=f"worker result could not be sent back: {e}"))
    with os.fdopen(result_fd, "wb") as f:
        f.write(data)


def _out_of_memory(e: BaseException) -> bool:
    """MemoryError, ENOMEM, or a library that could not map/allocate under RLIMIT_AS (an import of a
    shared object fails with "failed to map segment", ORT's arena with "Failed to allocate memory")."""
    import errno
    text = str(e)
    return (isinstance(e, MemoryError) or getattr(e, "errno", None) == errno.ENOMEM
            or any(s in text for s in ("failed to map segment", "Cannot allocate memory", "bad_alloc",
                                       "Failed to allocate memory")))


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the effbench process that started it dies (kill -9 of a run must
    not leave a hung worker burning a core; start_new_session keeps it out of the run's process group)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl ran
            os._exit(1)


def run_in_worker(target: str, payload: dict, *, timeout_s: float, log_path: Path | None = None,
                  memory_limit_mb: int | None = None) -> Outcome:
    """Run `module:function(**payload)` in a fresh interpreter; a crash or timeout is an Outcome.

    A fresh `python -m effbench.execute` rather than multiprocessing's spawn: spawn re-runs the
    caller's __main__ module, which breaks any user script without a main guard.
    """
    import pickle
    import selectors
    import subprocess
    read_fd, write_fd = os.pipe()
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    from effbench import plugins
    env = plugins.worker_env(dict(os.environ))
    pkg_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "effbench.execute", "--worker", str(write_fd), str(memory_limit_mb or 0)]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                pass_fds=(write_fd,), env=env, start_new_session=True)
    finally:
        os.close(write_fd)  # the parent's copy: the pipe reports EOF when the child dies
        if log_path:
            log.close()
    chunks: list[bytes] = []
    try:
        try:
            proc.stdin.write(pickle.dumps((target, payload)))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(read_fd, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):  # blocks in the kernel: no spinning
                    _kill(proc)
                    return Outcome("failed", reason=f"timed out after {timeout_s:g} s" + _log_tail(log_path))
                chunk = os.read(read_fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            _kill(proc)
        if not chunks:
            return Outcome("failed", reason=_death_reason(proc.returncode, memory_limit_mb) + _log_tail(log_path))
        try:
            return pickle.loads(b"".join(chunks))
        except Exception as e:
            return Outcome("failed", reason=f"worker sent an unreadable result ({type(e).__name__})")
    finally:
        os.close(read_fd)
        if proc.poll() is None:
            _kill(proc)


def _kill(proc) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and anything it started
    with contextlib.suppress(Exception):
        proc.wait(10)


def _death_reason(code: int | None, memory_limit_mb: int | None) -> str:
    if code is None:
        return "worker did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGSEGV": " (segmentation fault in the runtime)", "SIGABRT": " (the runtime aborted)",
                "SIGKILL": " (killed: out of memory?)", "SIGBUS": " (bus error)"}.get(name, "")
        return f"worker crashed: {name}{hint}"
    return f"worker exited with code {code} without a result"


def _log_tail(log_path: Path | None, lines: int = 2) -> str:
    if not log_path or not Path(log_path).is_file():
        return ""
    try:
        tail = [ln.strip() for ln in Path(log_path).read_text(errors="replace").splitlines() if ln.strip()][-lines:]
    except OSError:
        return ""
    return f" [log: {' | '.join(t[:160] for t in tail)}]" if tail else ""


# ------------------------------------------------------------------------------ worker functions
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


def _supported(runner, variant: dict):
    from effbench.runners import Unsupported
    from effbench.variants import Variant
    v = Variant.from_json(variant)
    support = runner.supports(v)
    if not support.ok:
        raise Unsupported(support.reason)
    return v


def _load_options(cell: dict, artifact: dict) -> dict:
    """What a runner's load needs besides the variant: the model artifact, compile, the device."""
    return {"artifact": artifact, "compile": cell.get("compile", False), "device": cell.get("device", "cpu")}


def _on_gpu(session) -> bool:
    return any("CUDA" in p for p in session.info.get("providers", [])) or session.info.get("device") == "cuda"


def measure_cell(cell: dict, variant: dict, artifact: dict, feeds: dict, budget: dict, runner_options: dict,
                 overhead_ns: float | None = None) -> dict:
    """The measuring worker: load the variant, time it by DESIGN.md's rules, report memory."""
    import numpy as np

    from effbench.measure import energy, memory
    from effbench.measure.latency import Budget, aligned, loop_overhead_ns, measure_latency
    runner = _enter_runtime(cell["runner"])
    v = _supported(runner, variant)
    baseline = memory.rss_bytes()
    gpu_start = memory.gpu_used_bytes() if cell.get("device", "cpu") != "cpu" else None
    session = runner.load(v, cell["threads"], {**runner_options, **_load_options(cell, artifact)})
    arrays = {k: aligned(np.asarray(a)) for k, a in feeds.items()}
    call = session.timed_call(arrays)
    overhead = overhead_ns if overhead_ns is not None else loop_overhead_ns()
    stats = measure_latency(call, Budget(**budget), overhead_ns=overhead)
    peak = memory.peak_rss_bytes()
    lat = stats.to_json()
    inferences = cell["batch_size"] * lat["calls"]
    b = str(cell["batch_size"])
    measured_b = energy_per_batch(energy.detect_meter(gpu=_on_gpu(session)), {b: call}, budget)[b]
    measured, why = measured_b["measured"], measured_b["reason"]
    throughput = inferences / stats.elapsed_s if stats.elapsed_s else None
    return {"latency_ms": lat, "samples_ms": stats.stored_samples_ms(), "throughput_ips": throughput,
            "memory": {"baseline_rss_bytes": baseline, "peak_rss_bytes": peak,
                       **(memory.gpu_figures(gpu_start, session) if _on_gpu(session) else {})},
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


def measure_pair(cell: dict, sides: list[dict], budget: dict, load_reversed: bool = False) -> dict:
    """A/B mode's paired pass: the baseline's and the candidate's variants of one cell loaded in one worker
    and timed in alternating blocks (`measure.latency.paired_ratio`). Timing only: memory and energy come
    from each side's own worker. `load_reversed` loads the candidate first (odd rounds): two sessions of
    the same model in one process differed by a few percent here, so neither side always loads first."""
    import numpy as np

    from effbench.measure.latency import aligned, paired_ratio
    from effbench.runners import get_runner
    runner = get_runner(cell["runner"])
    calls: dict[int, object] = {}
    for i in ((1, 0) if load_reversed else (0, 1)):
        side = sides[i]
        v = _supported(runner, side["variant"])
        session = runner.load(v, cell["threads"], _load_options(cell, side["artifact"]))
        calls[i] = session.timed_call({k: aligned(np.asarray(a)) for k, a in side["feeds"].items()})
    return paired_ratio(calls[0], calls[1], duration_s=max(1.0, budget["min_time_s"]),
                        warmup_s=budget["warmup_s"])


def measure_group(group: dict, members: list[dict], variants: dict[str, dict], artifact: dict, feeds: dict,
                  budget: dict, overhead_ns: float, seed: int, load_reversed: bool = False) -> dict:
    """The measuring worker of one round of a group: the variants of one model on one runner, every
    batch size, loaded in this process and timed in randomly interleaved blocks
    (`measure.latency.measure_interleaved`), with the drift sentinel timed before and after.

    `members`: [{"key", "label", "batch_size", "reference"}]; `variants`: label -> built variant; `feeds`: str(batch)
    -> arrays. A variant this runtime cannot load or run is reported for its members alone; the others
    are still timed. Memory and energy are not measured here: a variant's memory needs its own process.
    """
    import gc

    import numpy as np

    from effbench.measure.latency import Budget, aligned, measure_interleaved, sentinel_us
    from effbench.runners import Unsupported
    runner = _enter_runtime(group["runner"])
    before_us = sentinel_us()
    status: dict[str, tuple[str, str]] = {}   # member key -> (status, reason) when it cannot be timed
    sessions: dict[str, Any] = {}
    labels = list(dict.fromkeys(m["label"] for m in members))
    for label in (labels[::-1] if load_reversed else labels):  # neither side always loads first
        try:
            v = _supported(runner, variants[label])
            sessions[label] = runner.load(v, group["threads"], {**_load_options(group, artifact),
                                                                 "shared_thread_pool": True})
        except Unsupported as e:
            status[label] = ("unsupported", str(e))
        except Exception as e:  # one variant's failure must not cost the others their measurement
            traceback.print_exc()
            status[label] = ("failed", _gist(e))
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
            status[m["key"]] = ("failed", _gist(e))
    references = {m["key"]: m["reference"] for m in members if m.get("reference")}
    timed = (measure_interleaved(calls, Budget(**budget), overhead_ns=overhead_ns, references=references, seed=seed)
             if calls else None)
    infos = {label: sess.info for label, sess in sessions.items()}
    # The sentinel runs in the same conditions as before: no session loaded (a loaded session's thread
    # pool slowed it by a steady 10-15% here, which is not drift).
    calls.clear()
    sessions.clear()
    gc.collect()
    after_us = sentinel_us()
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


def _with_placement(info: dict, prof: dict | None) -> dict:
    """The session's info with the variant's node placement (from its own worker) where it was read."""
    placement = (prof or {}).get("placement")
    return {**info, "placement": placement} if placement else info


def _gist(e: BaseException) -> str:
    """One line for a record's reason: the exception's type and first line, and for an out-of-memory
    the worker's address-space limit (`limit_address_space`), for a whole worker or one variant in it."""
    import resource
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    gist = f"{type(e).__name__}: {first}".rstrip(": ")
    if not _out_of_memory(e):
        return gist
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    oom = f"out of memory (worker limit {limit // 2**20} MB)" if limit != resource.RLIM_INFINITY else "out of memory"
    return oom if isinstance(e, MemoryError) and not first else f"{oom}: {gist}"


def profile_variant(cell: dict, variant: dict, artifact: dict, feeds: dict, budget: dict,
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
    runner = _enter_runtime(cell["runner"])
    v = _supported(runner, variant)
    baseline = memory.rss_bytes()
    gpu_start = memory.gpu_used_bytes() if cell.get("device", "cpu") != "cpu" else None
    session = runner.load(v, cell["threads"], _load_options(cell, artifact))
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
            out["memory"][b] = {"reason": f"memory not measured: {_gist(e)}"}
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
    del calls, session
    if quality is not None:
        from effbench.measure.quality import quality_pass
        try:
            out["quality"] = quality_pass(cell=cell, variant=variant, artifact=artifact, **quality)
        except (Unsupported, UserError):
            raise
        except Exception as e:
            traceback.print_exc()
            out["quality"] = {"metric": quality.get("metric"), "value": None, "status": "failed", "reason": _gist(e)}
    return out


# ----------------------------------------------------------------------------------- output lock
class OutputLock:
    """An flock on DIR/.effbench.lock: the kernel drops it when its holder dies, so a stale lock of a
    dead process is taken over automatically; a live holder makes the second run refuse."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / ".effbench.lock"
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot create the output folder or its lock: {e.strerror}", file=self.path.parent,
                            field="-o", fix="choose a writable output folder with -o") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (pid {int(os.pread(self.fd, 32, 0).decode().split()[0])})"
            os.close(self.fd)
            self.fd = None
            raise UserError(f"another effbench run{holder} is writing to this folder", file=self.path.parent,
                            field="-o", fix="wait for it to finish, or choose another folder with -o") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


# --------------------------------------------------------------------------------------- progress
class Progress:
    """A live bar on a terminal (rich), plain log lines otherwise."""

    def __init__(self, total: int, enabled: bool, stream=None) -> None:
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.live = enabled and self.stream.isatty()
        self.enabled = enabled
        self._bar = None
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeElapsedColumn, TimeRemainingColumn
            self._bar = RichProgress(TextColumn("[bold]effbench"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                     TextColumn("{task.description}"), console=Console(file=self.stream),
                                     transient=False)
            self._task = self._bar.add_task("", total=total)
            self._bar.start()

    def log(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def start(self, what: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=what)

    def advance(self, line: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1)
            self._bar.console.print(line, markup=False, highlight=False)
        elif self.enabled:
            print(f"[{self.done}/{self.total}] {line}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# -------------------------------------------------------------------------------------------- run
@dataclass
class RunOptions:
    out_dir: Path
    cache_dir: Path
    only: list[str] | None = None
    resume: bool = False
    rounds: int | None = None
    quick: bool = False
    progress: bool = True
    timeout_s: float | None = None


def _budget(suite: Suite, quick: bool) -> dict:
    from effbench.measure.latency import Budget
    m = suite.spec.measure
    b = Budget(warmup_s=m.warmup_s, min_time_s=m.min_time_s, max_time_s=m.max_time_s, target_rel_ci=m.target_rel_ci)
    if quick:
        b = b.quick()
    return b.__dict__.copy()


def run(suite: Suite | str | Path, *, out_dir: str | Path | None = None, only: str | list[str] | None = None,
        resume: bool = False, rounds: int | None = None, quick: bool = False, cache_dir: str | Path | None = None,
        progress: bool = True, timeout_s: float | None = None, hooks: list[Callable] | None = None) -> Results:
    """Run a suite and return the merged results of this output folder's store."""
    from effbench.models.sources import default_cache_dir
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    out = Path(out_dir) if out_dir else Path("reports") / suite.name
    opts = RunOptions(out_dir=out, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                      only=[only] if isinstance(only, str) else only, resume=resume, rounds=rounds, quick=quick,
                      progress=progress, timeout_s=timeout_s)
    with OutputLock(out):
        return Runner(suite, opts, hooks or []).run()


class Runner:
    """One `effbench run`: owns the plan, the store and the display."""

    def __init__(self, suite: Suite, opts: RunOptions, hooks: list[Callable]) -> None:
        self.suite, self.opts, self.hooks = suite, opts, hooks
        self.store = Store(opts.out_dir / "results.jsonl")
        self.logs = opts.out_dir / "logs"
        self.run_id = uuid.uuid4().hex[:12]
        self.budget = _budget(suite, opts.quick)
        # --quick is a smoke run: one round (its records say their CIs cover one moment) unless --rounds
        self.rounds = opts.rounds or (1 if opts.quick else suite.spec.measure.rounds)
        m = suite.spec.measure
        self.timeout_s = opts.timeout_s or m.timeout_s or (self.budget["max_time_s"] + self.budget["warmup_s"] + 600)
        self.memory_limit_mb = m.memory_limit_mb
        self._work_cache: dict = {}
        self.quality_cache: dict = {}
        self.profiles_done: dict[tuple, dict] = {}      # (model, variant, runner label) -> its own worker's figures
        self.fp32_quality: dict[tuple, float | None] = {}
        self.memory_given: set[str] = set()
        self.broken: dict[str, str] = {}                # cell id -> why its worker crashed or hung
        self.todo: list[tuple[int, Cell]] = []
        self.profiles: list = []
        self.skipped = 0

    # -- plan
    def run(self) -> Results:
        todo = self.plan()
        progress = Progress(len(todo), self.opts.progress)
        if self.skipped:
            progress.log(f"resume: {self.skipped} finished cell-rounds already in {self.store.path}, {len(todo)} to go")
        try:
            self.setup(todo, progress)
            for rnd, cells in self.schedule(todo):
                self.do_group(rnd, cells, progress)
        finally:
            progress.close()
        return load(self.store.path)

    def schedule(self, todo: list[tuple[int, Cell]]) -> list[tuple[int, list[Cell]]]:
        """Round by round, one worker per group: the cells of one model, runner and scenario (every
        variant and batch size), so each variant is timed beside its FP32 twin (DESIGN.md "Comparisons
        are paired") and a worker starts once per group and round, not once per cell."""
        groups: dict[tuple[int, tuple], list[Cell]] = {}
        for rnd, cell in todo:
            groups.setdefault((rnd, _group_key(cell)), []).append(cell)
        return [(rnd, cells) for (rnd, _), cells in groups.items()]

    def plan(self) -> list[tuple[int, Cell]]:
        """(round, cell) pairs still to measure, round-robin: A B C, A B C, ..."""
        cells = self.suite.cells(self.opts.only)
        if not cells:
            raise UserError(f"--only {' '.join(self.opts.only or [])} matches no cell of this suite",
                            file=self.suite.path, field="--only",
                            fix="use a glob over cell ids such as 'digits-cnn/*/onnxruntime/*'")
        done = self._done_set()
        self.opts.out_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        from effbench.devices import load_profiles
        if "local" in self.suite.spec.devices and self.opts.progress:
            print("effbench: measuring the local device profile (cached after the first time)", file=sys.stderr)
        self.profiles = load_profiles(list(self.suite.spec.devices), base_dir=self.suite.base_dir,
                                      suite_file=str(self.suite.path), cache_dir=self.opts.cache_dir,
                                      quick=self.opts.quick)
        from effbench.measure.speed import speed_index
        self.provenance = provenance(suite_sha256=self.suite.sha256, speed=speed_index(), run_id=self.run_id,
                                     suite=self.suite.name)
        self.hashes = {c.cell_id: self.suite.config_hash(c) for c in cells}
        todo = [(r, c) for r in range(self.rounds) for c in cells if (self.hashes[c.cell_id], r) not in done]
        self.todo = todo
        self.skipped = len(cells) * self.rounds - len(todo)
        return todo

    def _done_set(self) -> set[tuple[str, int]]:
        if not self.store.path.exists():
            return set()
        if not self.opts.resume:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            keep = self.store.path.with_name(f"results.{stamp}.jsonl")
            self.store.path.rename(keep)  # never overwrite what was measured
            return set()
        records, warnings = self.store.records()
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        return {(r.config_hash, r.round) for r in records if r.status in ("ok", "unsupported")}

    # -- preparation
    def _prepare(self, model_ids: list[str], progress: Progress) -> dict[str, Any]:
        from effbench.models.sources import ModelArtifact
        arts: dict[str, Any] = {}
        for mid in model_ids:
            idx = next(i for i, m in enumerate(self.suite.spec.models) if m.id == mid)
            progress.start(f"preparing {mid}")
            out = run_in_worker("effbench.execute:prepare_model",
                                {"model": self.suite.spec.models[idx].model_dump(mode="json"), "index": idx,
                                 "base_dir": str(self.suite.base_dir), "suite_file": str(self.suite.path),
                                 "cache_dir": str(self.opts.cache_dir)},
                                timeout_s=BUILD_TIMEOUT_S, log_path=self.logs / f"prepare-{mid}.log")
            if out.kind == "user_error":
                raise out.value
            arts[mid] = ModelArtifact.from_json(out.value) if out.kind == "ok" else out
        return arts

    def _datasets(self, artifacts: dict[str, Any]) -> dict[str, Any]:
        from effbench.models.datasets import load_dataset
        out = {}
        for i, m in enumerate(self.suite.spec.models):
            art = artifacts.get(m.id)
            if m.dataset is None or not hasattr(art, "inputs"):
                continue
            shapes = {inp.name: (list(inp.concrete(1, art.dims)[1:]), inp.dtype) for inp in art.inputs}
            out[m.id] = load_dataset(m.dataset, shapes, base_dir=self.suite.base_dir, suite_file=str(self.suite.path),
                                     field=f"models[{i}].dataset")
        return out

    def _build_choice(self, art, model: str, choice, progress: Progress, calibration) -> Outcome:
        progress.start(f"building {model}/{choice.label}")
        from effbench.variants import validate_options
        calib = None
        samples = validate_options(choice.precision, choice.options).get("calibration_samples")
        if calibration is not None and samples:  # only precisions that calibrate get (their share of) the data
            calib = {k: v[:samples] for k, v in calibration.inputs.items()}
        return run_in_worker("effbench.execute:build_variant",
                             {"artifact": art.to_json(), "label": choice.label, "precision": choice.precision,
                              "method": choice.method, "options": choice.options,
                              "cache_dir": str(self.opts.cache_dir), "calibration": calib},
                             timeout_s=BUILD_TIMEOUT_S, log_path=self.logs / f"build-{model}-{choice.label}.log")

    # -- measurement
    def setup(self, todo: list[tuple[int, Cell]], progress: Progress) -> None:
        """Prepare every model the plan needs (in workers) and load their datasets."""
        from effbench.measure.latency import loop_overhead_ns
        models = sorted({c.model for _, c in todo}, key=[m.id for m in self.suite.spec.models].index)
        self.artifacts = self._prepare(models, progress)
        self.datasets = self._datasets(self.artifacts)
        self.variants: dict[tuple[str, str], Outcome] = {}
        self.overhead = loop_overhead_ns()

    def do_cell(self, rnd: int, cell: Cell, progress: Progress, paired: dict | None = None,
                comparison: dict | None = None) -> Record:
        """Build the cell's variant if needed, measure it alone in a fresh worker, append its record (A/B
        mode, and the fallback when a group's worker crashed).

        `paired`: A/B mode's paired pass for this cell and round (`pair_pass`), kept as `paired_ratios`.
        `comparison`: why this cell has no paired speedup vs FP32, when it is not FP32."""
        artifacts, datasets, overhead = self.artifacts, self.datasets, self.overhead
        art = artifacts[cell.model]
        base = self._record(rnd, cell)
        if isinstance(art, Outcome):
            base.reason = f"model could not be prepared: {art.reason}"
            return self._finish(base, progress)
        vout = self._variant(art, cell.model, cell.variant, progress)
        if vout.kind == "user_error":
            raise vout.value
        if vout.kind != "ok":
            base.status = "unsupported" if vout.kind == "unsupported" else "failed"
            base.reason = f"variant build: {vout.reason}"
            return self._finish(base, progress)
        variant = vout.value
        base.cell["method"] = variant.get("method")
        base.variant = _variant_section(variant, cell.runner)
        feeds = art.feeds(cell.batch_size, datasets.get(cell.model))
        progress.start(f"{cell.cell_id} (round {rnd + 1}/{self.rounds})" if self.rounds > 1 else cell.cell_id)
        log = self.logs / (cell.cell_id.replace("/", "_") + ".log")
        out = run_in_worker("effbench.execute:measure_cell",
                            {"cell": cell.to_json(), "variant": variant, "artifact": art.to_json(), "feeds": feeds,
                             "budget": self.budget, "runner_options": {}, "overhead_ns": overhead},
                            timeout_s=self.timeout_s, log_path=log, memory_limit_mb=self.memory_limit_mb)
        base.model_stats = self._work(variant, art, cell)
        if out.kind == "ok":
            res = out.value
            base.status, base.reason = "ok", None
            base.latency_ms, base.samples_ms = {**res["latency_ms"], "ci_scope": SCOPE_ONE_MOMENT}, res["samples_ms"]
            base.throughput_ips = res["throughput_ips"]
            base.memory = {**res["memory"], "model_bytes": model_bytes(variant, cell.runner)}
            base.variant["runtime"] = res["session"]
            base.energy = res["energy"] or self._modeled_energy(base, res.get("energy_reason"))
            if paired and paired.get("ratio"):
                base.paired_ratios = [paired["ratio"]]
            base.comparison = comparison
            if self.profiles:
                from effbench.devices import project_record
                base.projections = project_record(base, self.profiles)
        elif out.kind == "user_error":
            raise out.value
        else:
            base.status = "unsupported" if out.kind == "unsupported" else "failed"
            base.reason = out.reason
        if base.ok:
            base.quality = self._quality(cell, art, variant, progress)
        for hook in self.hooks:
            hook(base, variant=variant, artifact=art, suite=self.suite, cache_dir=self.opts.cache_dir)
        return self._finish(base, progress)

    def do_group(self, rnd: int, cells: list[Cell], progress: Progress) -> list[Record]:
        """One round of one group: build what is missing, the variants' own workers once per run
        (memory, energy counters, quality), then one worker timing every variant and batch size of the
        group interleaved; one record per cell, each non-FP32 one with its paired speedup vs FP32."""
        first = cells[0]
        art = self.artifacts[first.model]
        records = []
        if isinstance(art, Outcome):
            for cell in cells:
                base = self._record(rnd, cell)
                base.reason = f"model could not be prepared: {art.reason}"
                records.append(self._finish(base, progress))
            return records
        ready: list[tuple[Cell, dict]] = []
        for cell in cells:
            if cell.cell_id in self.broken:  # it crashed or hung a worker in an earlier round
                base = self._record(rnd, cell)
                base.reason = f"{self.broken[cell.cell_id]} (in an earlier round of this run; not run again)"
                records.append(self._finish(base, progress))
                continue
            vout = self._variant(art, cell.model, cell.variant, progress)
            if vout.kind == "user_error":
                raise vout.value
            if vout.kind != "ok":
                base = self._record(rnd, cell)
                base.status = "unsupported" if vout.kind == "unsupported" else "failed"
                base.reason = f"variant build: {vout.reason}"
                records.append(self._finish(base, progress))
                continue
            ready.append((cell, vout.value))
        if not ready:
            return records
        batches = sorted({c.batch_size for c, _ in ready})
        variants = {c.variant: v for c, v in ready}
        # The FP32 twin is timed beside the others even when it is not to be recorded (--only, --resume,
        # or a suite without fp32): a speedup needs both sides in the same worker.
        ref = self._variant(art, first.model, FP32, progress)
        if ref.kind == "ok":
            variants.setdefault(FP32, ref.value)
        members = [{"key": _member_key(c.variant, c.batch_size), "label": c.variant, "batch_size": c.batch_size,
                    "reference": _member_key(FP32, c.batch_size) if c.variant != FP32 else None} for c, _ in ready]
        have = {m["key"] for m in members}
        if ref.kind == "ok":
            twin = lambda b: _fp32_id(Cell(**{**first.__dict__, "batch_size": b}))  # noqa: E731
            members += [{"key": _member_key(FP32, b), "label": FP32, "batch_size": b} for b in batches
                        if _member_key(FP32, b) not in have and twin(b) not in self.broken]
        for label in sorted(variants, key=lambda x: x != FP32):  # FP32's quality pass writes the reference
            self._profile(first, label, variants[label], art, progress)
        feeds = {str(b): art.feeds(b, self.datasets.get(first.model)) for b in batches}
        what = f"{first.model}/*/{first.runner_label}/{first.scenario}"
        progress.start(f"{what}: {len(members)} cells interleaved" +
                       (f" (round {rnd + 1}/{self.rounds})" if self.rounds > 1 else ""))
        out = run_in_worker("effbench.execute:measure_group",
                            {"group": {"runner": first.runner, "threads": first.threads, "compile": first.compile,
                                       "device": first.device},
                             "members": members, "variants": variants, "artifact": art.to_json(), "feeds": feeds,
                             "budget": self.budget, "overhead_ns": self.overhead,
                             "seed": _seed(self.run_id, rnd, what), "load_reversed": rnd % 2 == 1},
                            timeout_s=self.timeout_s * len(members),
                            log_path=self.logs / f"{first.model}_{first.runner_label}_{first.scenario}.log",
                            memory_limit_mb=self.memory_limit_mb)
        if out.kind == "user_error":
            raise out.value
        if out.kind != "ok":  # a crash of one variant must not cost the others: measure each alone
            why = f"the group's interleaved worker {out.kind}: {out.reason}; measured alone, so not paired"
            _warn(progress, f"warning: {what} round {rnd + 1}: {why}")
            for cell, _ in ready:
                rec = self.do_cell(rnd, cell, progress, comparison=None if cell.variant == FP32 else _unpaired(cell, why))
                if rec.status == "failed":  # later rounds leave it out, so the others are paired again
                    self.broken[cell.cell_id] = rec.reason or "failed"
                records.append(rec)
            return records
        res = out.value
        drift = _drift(res["sentinel"])
        for cell, variant in ready:
            m = res["members"][_member_key(cell.variant, cell.batch_size)]
            base = self._record(rnd, cell)
            base.cell["method"] = variant.get("method")
            base.variant = _variant_section(variant, cell.runner)
            base.model_stats = self._work(variant, art, cell)
            prof = self.profiles_done.get((cell.model, cell.variant, cell.runner_label))
            if m["status"] != "ok":
                base.status, base.reason = m["status"], m["reason"]
            else:
                base.status, base.reason = "ok", None
                base.latency_ms = {**m["latency_ms"], "ci_scope": SCOPE_ONE_MOMENT}  # merging rounds widens it
                base.samples_ms = m["samples_ms"]
                base.throughput_ips = m["throughput_ips"]
                base.variant["runtime"] = _with_placement(m["session"], prof)
                base.drift = drift
                if cell.variant != FP32:
                    base.comparison = _paired(cell, variant, m, res["members"].get(_member_key(FP32, cell.batch_size)))
                base.memory, measured, why = self._profile_figures(prof, cell, variant)
                base.energy = measured or self._modeled_energy(base, why)
                if self.profiles:
                    from effbench.devices import project_record
                    base.projections = project_record(base, self.profiles)
                base.quality = (prof or {}).get("quality")
            for hook in self.hooks:
                hook(base, variant=variant, artifact=art, suite=self.suite, cache_dir=self.opts.cache_dir)
            records.append(self._finish(base, progress))
        return records

    def _record(self, rnd: int, cell: Cell) -> Record:
        return Record(cell_id=cell.cell_id, config_hash=self.hashes.get(cell.cell_id) or self.suite.config_hash(cell),
                      status="failed", cell=cell.to_json(), round=rnd, rounds=self.rounds, provenance=self.provenance)

    def _profile(self, cell: Cell, label: str, variant: dict, art, progress: Progress) -> None:
        """The variant's own worker (memory at each batch size, energy counters, quality), once per run."""
        key = (cell.model, label, cell.runner_label)
        if key in self.profiles_done:
            return
        batches = sorted({c.batch_size for _, c in self.todo if _group_key(c) == _group_key(cell)})
        feeds = {str(b): art.feeds(b, self.datasets.get(cell.model)) for b in batches}
        this = Cell(**{**cell.__dict__, "variant": label, "precision": variant.get("precision", label),
                       "method": variant.get("method")})
        progress.start(f"memory and quality {cell.model}/{label}/{cell.runner_label}")
        out = self._profile_worker(this, variant, art, feeds, self._quality_payload(this, art))
        if out.kind == "user_error":
            raise out.value
        if out.kind == "failed" and len(batches) > 1:  # a hard crash at one batch size: one worker each
            out = self._profile_per_batch(this, variant, art, feeds, progress)
        if out.kind == "ok":
            prof = out.value
            q = prof.get("quality")
            if q is not None and self.datasets.get(cell.model) is None and q.get("value") is not None:
                prof["quality"] = {**q, "inputs": "generated (the model has no dataset)"}
        else:
            prof = {"reason": f"the variant's own worker {out.kind}: {out.reason}",
                    "quality": {"metric": None, "value": None, "status": out.kind, "reason": out.reason}}
        self.profiles_done[key] = prof
        if label == FP32:
            self.fp32_quality[(cell.model, cell.runner_label)] = (prof.get("quality") or {}).get("value")

    def _profile_per_batch(self, cell: Cell, variant: dict, art, feeds: dict, progress: Progress) -> Outcome:
        """Memory batch size by batch size, each in its own worker, after the shared one crashed; quality
        once, in a worker of its own."""
        merged: dict[str, Any] = {"memory": {}, "energy": {}}
        for b, f in feeds.items():
            out = self._profile_worker(cell, variant, art, {b: f}, None, log_suffix=f"-b{b}")
            if out.kind == "ok":
                merged["memory"].update(out.value["memory"])
                merged["energy"].update(out.value["energy"])
            else:
                merged["memory"][b] = {"reason": f"memory not measured: the variant's own worker {out.kind}: {out.reason}"}
        out = self._profile_worker(cell, variant, art, {}, self._quality_payload(cell, art))
        merged["quality"] = (out.value.get("quality") if out.kind == "ok" else
                             {"metric": None, "value": None, "status": out.kind, "reason": out.reason})
        return Outcome("ok", merged)

    def _profile_worker(self, cell: Cell, variant: dict, art, feeds: dict, quality: dict | None,
                        log_suffix: str = "") -> Outcome:
        """`profile_variant` in a worker: a cell's time per batch size, and one more for quality."""
        return run_in_worker("effbench.execute:profile_variant",
                             {"cell": cell.to_json(), "variant": variant, "artifact": art.to_json(), "feeds": feeds,
                              "budget": self.budget, "quality": quality},
                             timeout_s=self.timeout_s * (len(feeds) + (quality is not None)),
                             log_path=self.logs / f"profile-{cell.model}-{cell.variant}-{cell.runner_label}{log_suffix}.log",
                             memory_limit_mb=self.memory_limit_mb)

    def _quality_payload(self, cell: Cell, art) -> dict:
        q = self.suite.spec.quality
        ds = self.datasets.get(cell.model)
        if ds is not None:
            n = min(len(ds), q.samples) if q.samples else len(ds)
            inputs = {k: v[:n] for k, v in ds.inputs.items()}
            labels = ds.labels[:n] if ds.labels is not None else None
        else:  # no dataset: fidelity to FP32 on seeded generated inputs, and the record says so
            inputs, labels = art.feeds(q.samples or 256, None, seed=1), None
        metric = q.metric or ("top1" if labels is not None else "cosine")
        if metric == "top1" and labels is None:
            raise self.suite.error(f"quality metric top1 needs labels, and model '{cell.model}' has no labelled dataset",
                                   "quality", "metric", fix="add a dataset with labels, or use metric: cosine")
        ref = self.opts.out_dir / "quality" / f"{cell.model}-{cell.runner_label}-{self.run_id}-fp32.npz"
        ref.parent.mkdir(parents=True, exist_ok=True)
        return {"inputs": inputs, "labels": labels, "metric": metric, "reference_path": str(ref),
                "min_relative": q.min_relative,
                "fp32_value": None if cell.variant == FP32 else self.fp32_quality.get((cell.model, cell.runner_label))}

    def _profile_figures(self, prof: dict | None, cell: Cell, variant: dict) -> tuple[dict | None, dict | None, str | None]:
        """(memory, measured energy, why energy was not measured) of this cell from its variant's own
        worker. Memory goes into the first record of this run for the cell only: it was measured once."""
        b = str(cell.batch_size)
        if prof is None or "memory" not in prof:
            reason = (prof or {}).get("reason", "the variant's own worker did not run")
            return {"reason": f"memory not measured: {reason}"}, None, reason
        energy_b = (prof.get("energy") or {}).get(b) or {}
        memory = None
        if cell.cell_id not in self.memory_given:
            self.memory_given.add(cell.cell_id)
            memory = {**prof["memory"].get(b, {"reason": "memory not measured at this batch size"}),
                      "model_bytes": model_bytes(variant, cell.runner)}
        return memory, energy_b.get("measured"), energy_b.get("reason")

    def pair_pass(self, rnd: int, cell: Cell, other: Runner, other_cell: Cell, progress: Progress) -> dict | None:
        """A/B mode: `other`'s variant of the cell (the baseline) and this runner's, timed in alternating
        blocks in one worker. None (the gate then uses the two workers' round medians) when either side
        cannot be built or the pass fails; its log says why."""
        sides = []
        for r, c in ((other, other_cell), (self, cell)):
            art = r.artifacts[c.model]
            if isinstance(art, Outcome):
                return None
            vout = r._variant(art, c.model, c.variant, progress)
            if vout.kind != "ok":
                return None
            sides.append({"variant": vout.value, "artifact": art.to_json(),
                          "feeds": art.feeds(c.batch_size, r.datasets.get(c.model))})
        progress.start(f"{cell.cell_id} paired A/B blocks (round {rnd + 1}/{self.rounds})")
        out = run_in_worker("effbench.execute:measure_pair",
                            {"cell": cell.to_json(), "sides": sides, "budget": self.budget,
                             "load_reversed": rnd % 2 == 1},
                            timeout_s=self.timeout_s, log_path=self.logs / (cell.cell_id.replace("/", "_") + "-ab.log"),
                            memory_limit_mb=self.memory_limit_mb)
        if out.kind != "ok":
            msg = (f"warning: {cell.cell_id} round {rnd + 1}: paired A/B pass {out.kind}: {out.reason}; the gate "
                   "uses the two workers' round medians for this cell")
            if progress.enabled:
                progress.log(msg)
            else:
                print(msg, file=sys.stderr, flush=True)
            return None
        return out.value

    def _variant(self, art, model: str, label: str, progress: Progress) -> Outcome:
        """The built variant (cached per run); fp32 is built even when the suite does not list it,
        because every other variant's quality is scored against it."""
        from effbench.suite import PrecisionChoice
        key = (model, label)
        if key not in self.variants:
            try:
                choice = self.suite.choice(label)
            except StopIteration:
                choice = PrecisionChoice(label=FP32, precision=FP32, method=None)
            self.variants[key] = self._build_choice(art, model, choice, progress, self.datasets.get(model))
        return self.variants[key]

    def _quality(self, cell: Cell, art, variant: dict, progress: Progress) -> dict | None:
        """The untimed quality pass of this variant on this runner in a worker of its own, once per run
        (A/B mode and cells measured alone; a normal run does it in the variant's own worker)."""
        key = (cell.model, cell.variant, cell.runner_label)
        if key in self.quality_cache:
            return self.quality_cache[key]
        if cell.variant != FP32 and (cell.model, cell.runner_label) not in self.fp32_quality:
            fp32_out = self._variant(art, cell.model, FP32, progress)
            if fp32_out.kind == "ok":  # its pass writes the reference outputs the others are scored on
                self.fp32_quality[(cell.model, cell.runner_label)] = \
                    (self._quality(_fp32_twin(cell), art, fp32_out.value, progress) or {}).get("value")
        progress.start(f"quality {cell.model}/{cell.variant}/{cell.runner_label}")
        payload = {"cell": cell.to_json(), "variant": variant, "artifact": art.to_json(),
                   **self._quality_payload(cell, art)}
        out = run_in_worker("effbench.measure.quality:quality_pass", payload, timeout_s=BUILD_TIMEOUT_S,
                            log_path=self.logs / f"quality-{cell.model}-{cell.variant}-{cell.runner_label}.log",
                            memory_limit_mb=self.memory_limit_mb)
        if out.kind == "ok":
            result = out.value
            if self.datasets.get(cell.model) is None:
                result = {**result, "inputs": "generated (the model has no dataset)"}
        elif out.kind == "user_error":
            raise out.value
        else:
            result = {"metric": payload["metric"], "value": None, "status": out.kind, "reason": out.reason}
        self.quality_cache[key] = result
        if cell.variant == FP32:
            self.fp32_quality[(cell.model, cell.runner_label)] = result.get("value")
        return result

    def _work(self, variant: dict, art, cell: Cell) -> dict | None:
        """Work figures for this variant at this batch size, counted from its ONNX graph.

        The torch side of a variant runs the same operators as the FP32 graph at its own bit widths,
        so its MACs come from the FP32 graph and its BOPs from the variant's weight and activation bits.
        """
        from effbench.measure.flops import count_work
        graph = own_graph(variant, cell.runner)
        path = graph or art.onnx_path
        key = (path, cell.batch_size, tuple(variant.get("binary_nodes") or ()))
        if key not in self._work_cache:
            try:
                wc = count_work(path, batch_size=cell.batch_size, dims=art.dims,
                                binary_nodes=set(variant.get("binary_nodes") or ()) or None)
                self._work_cache[key] = wc.to_json()
            except UserError as e:
                self._work_cache[key] = {"error": e.one_line()}
            except Exception as e:  # a counting bug must not cost the measurement
                self._work_cache[key] = {"error": f"work count failed: {type(e).__name__}: {e}"}
        stats = dict(self._work_cache[key])
        stats["counted_on"] = "variant graph" if graph else f"{FP32} graph"
        side = side_stats(variant, cell.runner)
        if not graph and "macs" in stats:
            # the module runs the FP32 graph's operators at the variant's bit widths (the registry's,
            # unless the saved weights say otherwise); a precision nobody registered counts as 32-bit
            wbits, abits = bits(cell.precision) or (32, 32)
            wbits = side.get("weight_bits") or wbits
            stats["weight_bits"] = wbits
            stats["activation_bits"] = abits
            stats["bops"] = int(stats["macs"] * wbits * abits)
        if side.get("size_bytes"):
            stats["size_bytes"] = side["size_bytes"]
        stats.pop("by_node", None)  # per-node detail stays in `effbench flops --by node`
        return stats

    def _modeled_energy(self, record: Record, why_not_measured: str | None) -> dict | None:
        from effbench.measure.energy import modeled_energy
        ms = record.model_stats or {}
        local = next((p for p in self.profiles if p.id == "local"), None)
        device = record.cell.get("device", "cpu")
        if local is None or device != "cpu" or "macs" not in ms or not record.latency_ms:
            reason = ("no local profile in devices:" if local is None else
                      f"the local profile describes this machine's CPU, the cell ran on {device}; its device "
                      "profile's projection models it" if device != "cpu" else "no work count for this variant")
            return {"source": None, "reason": f"energy not measured ({why_not_measured}) and not modeled ({reason})"}
        b = record.cell["batch_size"]
        out = modeled_energy(macs=ms["macs"] // b, bytes_moved=ms.get("bytes_moved", 0) // b,
                             precision=record.cell["precision"],
                             seconds_per_inference=record.latency_ms["median"] / 1e3 / b,
                             model=local.energy(), profile_id="local")
        if out.get("j_per_inference") is not None:
            out["reason"] = f"no energy counter here: {why_not_measured}" if why_not_measured else None
        elif why_not_measured:
            out["reason"] = f"energy not measured ({why_not_measured}) and {out['reason']}"
        return out

    def _finish(self, record: Record, progress: Progress) -> Record:
        self.store.append(record)
        progress.advance(_one_line(record))
        return record


FP32 = reference_precision()  # the precision every variant is compared against
# The sentinel moving by more than this while a group was measured flags its cells' absolute latency.
DRIFT_THRESHOLD = 0.10


def _warn(progress: Progress, msg: str) -> None:
    if progress.enabled:
        progress.log(msg)
    else:
        print(msg, file=sys.stderr, flush=True)


def _group_key(cell: Cell) -> tuple:
    return (cell.model, cell.runner_label, cell.scenario)


def _member_key(label: str, batch_size: int) -> str:
    return f"{label}/b{batch_size}"


def _seed(run_id: str, rnd: int, what: str) -> int:
    import hashlib
    return int.from_bytes(hashlib.sha256(f"{run_id}/{rnd}/{what}".encode()).digest()[:4], "little")


def _fp32_twin(cell: Cell) -> Cell:
    """The FP32 cell of the same model, runner, batch size and scenario."""
    return Cell(**{**cell.__dict__, "variant": FP32, "precision": FP32, "method": None})


def _fp32_id(cell: Cell) -> str:
    return _fp32_twin(cell).cell_id


def _unpaired(cell: Cell, reason: str) -> dict:
    return {"baseline": _fp32_id(cell), "speedup": None, "ci": None, "method": None, "reason": reason}


def _paired(cell: Cell, variant: dict, member: dict, fp32: dict | None) -> dict:
    """This round's speedup vs FP32: the median over cycles of FP32's block median / this block median,
    both timed in one worker within one cycle. Emulated variants get no speedup: their speed is that
    of the float kernels that emulate them."""
    from effbench.measure.latency import block_ratios
    from effbench.measure.stats import with_floor, within_one_round
    if variant.get("emulated"):
        return _unpaired(cell, "emulated: this precision runs as float kernels that emulate it, so its speed "
                               "is not the speed of native kernels")
    if fp32 is None or fp32.get("status") != "ok":
        why = f"the FP32 twin is {fp32['status']}: {fp32.get('reason')}" if fp32 else "no FP32 variant to compare with"
        return _unpaired(cell, why)
    est = within_one_round(block_ratios(fp32["block_ms"], member["block_ms"]))
    if est is None:
        return _unpaired(cell, "no cycle timed both sides")
    est = with_floor(est)
    return {"baseline": _fp32_id(cell), "speedup": est.value, "ci": [est.lo, est.hi], "ci_level": est.level,
            "ci_scope": est.scope, "ci_method": est.method, "rounds": 1, "method": "paired", "cycles": est.n}


def _drift(sentinel: dict) -> dict:
    change = sentinel.get("change")
    return {"threshold": DRIFT_THRESHOLD, "rounds": [sentinel],
            "max_abs_change": abs(change) if change is not None else None,
            "flagged": bool(change is not None and abs(change) > DRIFT_THRESHOLD)}




def run_ab(suite: Suite | str | Path, base_suite: Suite | str | Path, *, out_dir: str | Path | None = None,
           only: str | list[str] | None = None, rounds: int | None = None, quick: bool = False,
           cache_dir: str | Path | None = None, progress: bool = True,
           timeout_s: float | None = None) -> tuple[Results, Results, list[str]]:
    """A/B mode: the baseline's and the candidate's cells measured interleaved in one job.

    Round r runs base(c1), new(c1), base(c2), new(c2) ... each in its own fresh worker (every figure of
    a normal run), and between them a paired pass: both variants of the cell in one worker, timed in
    alternating blocks, whose median block ratio is the candidate record's `paired_ratios` entry for
    the round. FIELD-NOTES: this machine flips between two speeds within seconds, so even back-to-back
    workers' round medians disagreed by +-25% here; alternating blocks see the same state. Stores:
    DIR/base/ and DIR/. Returns (base results, new results, notes).
    """
    from effbench.models.sources import default_cache_dir
    new_s = suite if isinstance(suite, Suite) else load_suite(suite)
    base_s = base_suite if isinstance(base_suite, Suite) else load_suite(base_suite)
    out = Path(out_dir) if out_dir else Path("reports") / f"{new_s.name}-ab"
    notes = []
    n_rounds = rounds or max(new_s.spec.measure.rounds, base_s.spec.measure.rounds, AB_MIN_ROUNDS)
    if n_rounds < AB_MIN_ROUNDS:
        notes.append(f"{n_rounds} rounds: the signed-rank test needs about {AB_MIN_ROUNDS} to reach alpha 0.01 "
                     f"after Holm over a few cells; cells it cannot decide are reported unstable")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    mk = lambda d: RunOptions(out_dir=d, cache_dir=cache, only=[only] if isinstance(only, str) else only,  # noqa: E731
                                 rounds=n_rounds, quick=quick, progress=progress, timeout_s=timeout_s)
    with OutputLock(out):
        new_r = Runner(new_s, mk(out), [])
        base_r = Runner(base_s, mk(out / "base"), [])
        new_todo, base_todo = new_r.plan(), base_r.plan()
        base_ids = {c.cell_id for _, c in base_todo}
        shared = [(r, c) for r, c in new_todo if c.cell_id in base_ids]
        missing = sorted({c.cell_id for _, c in new_todo} ^ {c.cell_id for _, c in base_todo})
        if not shared:
            raise UserError("the two suites share no cell id", file=base_s.path, field="--ab",
                            fix="give both suites the same model ids, precisions, runners and batch sizes")
        if missing:
            notes.append(f"{len(missing)} cell(s) exist in one suite only and are not measured: {', '.join(missing[:5])}")
        base_by = {(r, c.cell_id): c for r, c in base_todo}
        bar = Progress(2 * len(shared), progress)
        try:
            new_r.setup(shared, bar)
            base_r.setup([(r, base_by[(r, c.cell_id)]) for r, c in shared], bar)
            for r, c in shared:
                bc = base_by[(r, c.cell_id)]
                b_rec = base_r.do_cell(r, bc, bar)
                paired = new_r.pair_pass(r, c, base_r, bc, bar) if b_rec.ok else None
                new_r.do_cell(r, c, bar, paired=paired)
        finally:
            bar.close()
        return load(base_r.store.path), load(new_r.store.path), notes


def _variant_section(variant: dict, runner: str) -> dict:
    from effbench.variants import Variant
    return Variant.from_json(variant).record_section(runner)


def _one_line(r: Record) -> str:
    where = f" (round {r.round + 1}/{r.rounds})" if r.rounds > 1 else ""
    if r.ok and r.latency_ms:
        lat = r.latency_ms
        flag = " UNSTABLE" if lat.get("unstable") else ""
        sp = (r.comparison or {}).get("speedup")
        vs = f", {sp:.3g}x vs FP32 (paired)" if sp else ""
        return f"{r.cell_id}{where}: ok {lat['median']:.4g} ms [{lat['ci'][0]:.4g}, {lat['ci'][1]:.4g}] n={lat['n']}{vs}{flag}"
    return f"{r.cell_id}{where}: {r.status}: {r.reason}"


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    # Re-import under the package name so pickled Outcomes name `effbench.execute`, not `__main__`.
    from effbench.execute import _worker_main as _main
    _main(int(sys.argv[2]), int(sys.argv[3]) or None)
