"""The JSONL results store, merging rounds, provenance, and the DataFrame view.

One schema, one place (`effbench.record`): the runner writes `Record.to_json()`, the reporter and the
gate read `Record.from_json()`. A store holds one line per cell *and round*; `load()` merges rounds.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effbench.errors import UserError
from effbench.measure.latency import LatencyStats
from effbench.record import SCHEMA, STATUSES, Comparison, Drift, Latency, Provenance, Record

__all__ = ["SCHEMA", "STATUSES", "Record", "Results", "Store", "load", "merge_rounds", "provenance"]


def _dumps(record: Record) -> str:
    def clean(x: Any) -> Any:  # JSON has no NaN/inf: absent is None
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    return json.dumps(clean(record.to_json()), separators=(",", ":"), allow_nan=False)


class Store:
    """An append-only `results.jsonl`: whole lines, flushed and fsynced as each cell ends."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, record: Record) -> None:
        line = (_dumps(record) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            # A whole line per record in O_APPEND mode (the run's OutputLock makes us the only writer):
            # a crash leaves the line whole, absent, or cut (healed below and reported on load).
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot write results: {e.strerror or e}", file=self.path,
                            fix="free disk space or choose a writable output folder with -o") from e
        try:
            self._heal_torn_tail(fd)
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:  # a disk that fills mid-line writes part of it; the next write says why
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                # Take the partial line back: the store keeps only whole records (issue 8).
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
            if created:
                _fsync_dir(self.path.parent)  # the new file's name survives a power cut too
        except OSError as e:
            raise UserError(f"cannot write results: {e.strerror or e}", file=self.path,
                            fix="free disk space or choose a writable output folder with -o") from e
        finally:
            os.close(fd)

    def _heal_torn_tail(self, fd: int) -> None:
        """If a killed writer left a line without its newline, end it so the next line stays whole."""
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
            os.write(fd, b"\n")

    def iter_lines(self) -> Iterator[tuple[int, Record | None, str | None, bool]]:
        """(line number, record or None, problem or None, torn) for every non-blank line; torn means the
        line is not JSON at all (cut short by a killed writer), as opposed to a foreign JSON object."""
        if not self.path.exists():
            return
        if not self.path.is_file():  # /dev/zero or a FIFO would be read forever
            raise UserError("the results store is not a regular file", file=self.path,
                            fix="point at a results.jsonl written by effbench")
        with open(self.path, "rb") as f:
            raw = f.read().split(b"\n")
        for i, line in enumerate(raw, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                yield i, None, str(e), True
                continue
            try:
                yield i, Record.from_json(obj), None, False
            except (ValueError, TypeError) as e:
                yield i, None, str(e), False

    def records(self, *, strict: bool = True) -> tuple[list[Record], list[str]]:
        """Every stored line as a record, plus warnings for torn lines a killed run left behind."""
        records, warnings = [], []
        for lineno, rec, problem, torn in self.iter_lines():
            if rec is not None:
                records.append(rec)
                continue
            msg = f"{self.path}:{lineno}: skipped an unreadable line ({problem}); a run was probably killed mid-write"
            if strict and not torn:
                raise UserError(f"line {lineno} is not an effbench result record ({problem})",
                                file=self.path, fix="point at a results.jsonl written by effbench")
            warnings.append(msg)
        return records, warnings


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def merge_rounds(records: Iterable[Record]) -> list[Record]:
    """One record per cell: its rounds combined with the uncertainty over rounds (DESIGN.md).

    Latency: the median of round medians with a CI over rounds (each round a fresh worker at another
    moment); the pooled samples keep the percentiles, and their one-worker CI stays as
    `within_round_ci`. Speedup: its per-round paired values combined the same way. Memory: the round that
    measured it (each run measures it once, in the variant's own worker)."""
    by_cell: dict[str, list[Record]] = {}
    for r in records:
        by_cell.setdefault(r.cell_id, []).append(r)
    merged = []
    for group in by_cell.values():
        group.sort(key=lambda r: r.round)
        # a cell re-run with another config (edited suite) keeps only its newest config
        newest = group[-1].config_hash
        group = [r for r in group if r.config_hash == newest]
        ok = [r for r in group if r.ok]
        if len(group) == 1:
            merged.append(group[0])
            continue
        if not ok:
            merged.append(group[-1])
            continue
        merged.append(_merged(group, ok))
    return merged


def _merged(group: list[Record], ok: list[Record]) -> Record:
    from effbench.scenarios import merged_sections  # offline samples/s and server max_qps over rounds
    last = ok[-1]
    round_medians = tuple(r.latency_ms.median for r in ok if r.latency_ms)
    paired = [r.paired_ratios for r in ok]
    samples = tuple(s for r in ok for s in r.samples_ms)
    latency = last.latency_ms
    if samples:
        lat0 = ok[0].latency_ms
        st = LatencyStats.from_samples_ms(list(samples), timing=lat0.timing if lat0 else "per-call",
                                          block_size=lat0.block_size if lat0 else 1,
                                          first_call_ns=((lat0.first_call if lat0 else None) or 0) * 1e6,
                                          unstable=any(r.unstable for r in ok))
        latency = Latency.from_json({**st.to_json(),
                                     "calls": sum((r.latency_ms.calls or 0) if r.latency_ms else 0 for r in ok),
                                     "elapsed_s": sum((r.latency_ms.elapsed_s or 0) if r.latency_ms else 0 for r in ok)})
    else:
        samples = last.samples_ms
    if latency:
        latency = _latency_over_rounds(latency, list(round_medians))
    drifts = [r.drift for r in ok if r.drift]
    tps = sorted(r.throughput_ips for r in ok if r.throughput_ips)
    measured = [r.memory for r in ok if r.memory and r.memory.peak_rss_bytes is not None]
    failed = [r for r in group if not r.ok]
    return last.replace(
        round=-1, rounds=len(group), round_medians_ms=round_medians,
        # paired only when every ok round has its ratio: the gate pairs them with the rounds
        paired_ratios=tuple(p[0] for p in paired) if paired and all(len(p) == 1 for p in paired) else (),
        samples_ms=samples, latency_ms=latency,
        comparison=_comparison_over_rounds([r.comparison for r in ok]),
        drift=_drift_over_rounds(drifts) if drifts else None,
        throughput_ips=tps[len(tps) // 2] if tps else None,
        memory=measured[-1] if measured else last.memory, **merged_sections(ok),
        reason=f"{len(failed)} of {len(group)} rounds did not finish: {failed[0].reason}" if failed else last.reason)


def _latency_over_rounds(lat: Latency, round_medians: list[float]) -> Latency:
    """The headline median and CI over rounds; the pooled samples' CI is kept, labelled, beside it."""
    from effbench.measure.stats import UNSTABLE_REL_HALFWIDTH, over_rounds
    est = over_rounds(round_medians)
    if est is None:
        return lat
    unstable = est.rel_halfwidth > UNSTABLE_REL_HALFWIDTH
    return lat.replace(
        within_round_ci=lat.ci, median=est.value, ci=(est.lo, est.hi), ci_scope=est.scope, ci_method=est.method,
        rel_ci_halfwidth=est.rel_halfwidth, unstable=unstable,
        unstable_reason=(f"round medians spread: the 95% CI over {est.n} rounds is +-{est.rel_halfwidth:.0%} "
                         f"of the median (flagged above +-{UNSTABLE_REL_HALFWIDTH:.0%})" if unstable else None))


def _comparison_over_rounds(per_round: list[Comparison | None]) -> Comparison | None:
    """Per-round paired speedups combined: median with a CI over rounds; one round keeps its own
    within-worker CI and says it covers one moment; none with a number keeps the last round's reason."""
    from effbench.measure.stats import over_rounds, with_floor
    comps = [c for c in per_round if c]
    if not comps:
        return None
    values = [c.speedup for c in comps if c.speedup is not None]
    if len(values) < 2:
        return next((c for c in comps if c.speedup is not None), comps[-1])
    est = with_floor(over_rounds(values))
    return Comparison(
        baseline=comps[-1].baseline, speedup=est.value, ci=(est.lo, est.hi), ci_level=est.level,
        ci_scope=est.scope, ci_method=est.method, rounds=len(values), method=comps[-1].method or "paired",
        round_speedups=tuple(values), cycles=sum(c.cycles or 0 for c in comps),
        note=(f"{len(comps) - len(values)} round(s) without a paired value: {comps[-1].reason}"
              if len(values) < len(comps) else None))


def _drift_over_rounds(drifts: list[Drift]) -> Drift:
    rounds = [r for d in drifts for r in d.rounds]
    changes = [abs(r["change"]) for r in rounds if isinstance(r.get("change"), (int, float))]
    threshold = drifts[-1].threshold
    worst = max(changes) if changes else None
    return Drift(threshold=threshold, rounds=rounds, max_abs_change=worst,
                 flagged=bool(worst is not None and threshold is not None and worst > threshold))


@dataclass
class Results:
    """A loaded store: merged records (one per cell) and what loading noticed."""

    records: list[Record]
    raw: list[Record] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def by_id(self) -> dict[str, Record]:
        return {r.cell_id: r for r in self.records}

    def to_frame(self):
        """A flat pandas DataFrame, one row per merged record (the CSV report is this)."""
        import pandas as pd
        rows = []
        for r in self.records:
            row: dict[str, Any] = {"cell_id": r.cell_id, "status": r.status, "reason": r.reason,
                                   "rounds": r.rounds, "throughput_ips": r.throughput_ips}
            for section in ("cell", "variant", "model_stats", "latency_ms", "comparison", "memory", "energy",
                            "quality", "drift", "offline", "server"):
                value = getattr(r, section)
                for k, v in _flatten(value.to_json() if value else {}).items():
                    row[f"{section}.{k}"] = v
            for pid, proj in r.projections.items():
                for k, v in _flatten(proj.to_json()).items():
                    row[f"projections.{pid}.{k}"] = v
            row["round_medians_ms"] = json.dumps(r.round_medians_ms) if r.round_medians_ms else None
            rows.append(row)
        return pd.DataFrame(rows)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def resolve_store_path(path: str | Path) -> Path:
    """A results.jsonl, or a report folder holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.jsonl"
    if not p.exists():
        raise UserError("no such results store", file=p,
                        fix="pass a results.jsonl or a report folder that holds one")
    return p


def load(*paths: str | Path) -> Results:
    """Load and merge one or more stores (e.g. from several machines) into one Results."""
    merged, raw, warnings, sources = [], [], [], []
    for path in paths:
        p = resolve_store_path(path)
        recs, warns = Store(p).records()
        merged.extend(merge_rounds(recs))  # rounds merge within a store, never across machines
        raw.extend(recs)
        warnings.extend(warns)
        sources.append(str(p))
    return Results(records=merged, raw=raw, warnings=warnings, sources=sources)


def host_info() -> dict[str, Any]:
    import platform

    import psutil
    cpu = platform.processor() or ""
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not cpu.strip(" x86_64"):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    flags = sorted(f for f in have if f.startswith(("avx", "amx", "fma", "sse4", "f16c")))
                    break
    except OSError:
        pass
    out = {"hostname": platform.node(), "cpu": cpu, "machine": platform.machine(),
           "cores_logical": psutil.cpu_count(), "cores_physical": psutil.cpu_count(logical=False),
           "memory_bytes": psutil.virtual_memory().total, "os": platform.platform(), "isa_flags": flags}
    gpus = gpu_info()
    if gpus:
        out["gpus"] = gpus
    return out


def gpu_info(nvml: Any = None) -> list[dict[str, Any]]:
    """The NVIDIA GPUs NVML sees: name, driver, the CUDA version the driver supports, memory, power
    limit, clocks. Empty where nvidia-ml-py or the driver is missing (a CPU machine)."""
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no pynvml, no driver: no GPUs to describe
        return []

    def text(v: Any) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    def maybe(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:  # noqa: BLE001 - a query this GPU or driver does not answer
            return None

    out = []
    driver = maybe(lambda: text(nvml.nvmlSystemGetDriverVersion()))
    cuda = maybe(nvml.nvmlSystemGetCudaDriverVersion)
    for i in range(maybe(nvml.nvmlDeviceGetCount) or 0):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        limit = maybe(lambda: nvml.nvmlDeviceGetPowerManagementLimit(h))
        out.append({"index": i, "name": maybe(lambda: text(nvml.nvmlDeviceGetName(h))), "driver": driver,
                    "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else None,
                    "memory_bytes": maybe(lambda: int(nvml.nvmlDeviceGetMemoryInfo(h).total)),
                    "power_limit_w": limit / 1000 if limit else None,
                    "sm_clock_max_mhz": maybe(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM)),
                    "uuid": maybe(lambda: text(nvml.nvmlDeviceGetUUID(h)))})
    return out


def package_versions() -> dict[str, str | None]:
    from importlib import metadata
    out: dict[str, str | None] = {}
    from effbench.runners import RUNNERS, provenance_packages
    runtimes = provenance_packages()
    # a runner's first package is its runtime: absent, it is recorded as None; the others only when present
    core = {"onnx", "numpy", *(cls.packages[0] for cls in RUNNERS.values() if getattr(cls, "packages", ()))}
    for name in ("effbench", *runtimes, "onnx", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "effbench":  # run from a source tree without installing it (bench/gpu_check.sh)
                from effbench import __version__
                out[name] = f"{__version__} (source tree, not installed)"
            elif name in core:
                out[name] = None
    return out


def provenance(*, suite_sha256: str, speed: dict | None, run_id: str, suite: str | None = None) -> Provenance:
    import datetime
    import platform

    from effbench import __version__
    return Provenance(effbench=__version__, python=platform.python_version(), packages=package_versions(),
                      host=host_info(), suite=suite, suite_sha256=suite_sha256, speed_index=speed, run_id=run_id,
                      started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
