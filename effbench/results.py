"""The result record, the JSONL results store, provenance, and the DataFrame view.

One schema, one place: the runner writes `Record.to_json()`, the reporter and the gate read
`Record.from_json()`. A store holds one line per cell *and round*; `load()` merges rounds.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from effbench.errors import UserError
from effbench.measure.latency import LatencyStats

SCHEMA = "effbench.result/1"
STATUSES = ("ok", "unsupported", "failed")


@dataclass
class Record:
    """One measured cell (or one round of it). Sections are plain JSON objects; see DESIGN.md.

    Sections and their keys (absent sections are None, never faked zeros):
    - cell: model, variant (label as in the suite, e.g. "int8-static"), precision, method, runner,
      runner_label, threads, batch_size, scenario
    - variant: tool, tool_version, options, size_bytes, weight_bits, compression_vs_fp32, emulated
    - model_stats: params, size_bytes, weight_bytes, weight_bits, macs, flops, bops, bytes_moved,
      uncounted_ops
    - latency_ms: LatencyStats.to_json(); samples_ms: raw samples in time order (maybe thinned)
    - memory: baseline_rss_bytes, peak_rss_bytes, model_bytes
    - energy: source ("measured:rapl" | "measured:nvml" | "modeled:<profile>"), j_per_inference,
      avg_power_w, inferences_per_j, mw_per_inference
    - quality: metric, value, fp32_value, relative, below_floor, fidelity{cosine, top1_agreement,
      max_abs_err, sqnr_db}
    - projections: {profile_id: {latency_ms, energy_mj, fits, bound, status, reason}}
    - paired_ratios: A/B mode only (candidate side): per round, the median over alternating blocks of
      candidate / baseline latency timed in one worker; the gate's per-round ratios when present
    - comparison: non-FP32 cells: baseline (the FP32 cell id), speedup (FP32 time / this time from
      blocks timed in one worker), ci, ci_scope ("between rounds" | "one moment (1 round)"), rounds,
      method ("paired"); or speedup null and a reason
    - drift: the sentinel workload timed before and after the cell's worker (before_us, after_us,
      change) per round, flagged when it moved by more than `threshold`
    """

    cell_id: str
    config_hash: str
    status: str
    reason: str | None = None
    cell: dict[str, Any] = field(default_factory=dict)
    round: int = 0
    rounds: int = 1
    variant: dict[str, Any] | None = None
    model_stats: dict[str, Any] | None = None
    latency_ms: dict[str, Any] | None = None
    samples_ms: list[float] = field(default_factory=list)
    round_medians_ms: list[float] = field(default_factory=list)
    paired_ratios: list[float] = field(default_factory=list)
    comparison: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    throughput_ips: float | None = None
    memory: dict[str, Any] | None = None
    energy: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    projections: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {"schema": d.pop("schema"), **d}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Record:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ValueError(f"not an {SCHEMA} record")
        known = cls.__dataclass_fields__
        rec = cls(**{k: v for k, v in d.items() if k in known})
        rec._check()
        return rec

    def _check(self) -> None:
        """A hand-edited or foreign line must not crash the reporter or the gate later: check types."""
        if not isinstance(self.cell_id, str) or not isinstance(self.config_hash, str):
            raise ValueError("cell_id and config_hash must be strings")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if self.reason is not None and not isinstance(self.reason, str):
            raise ValueError("reason must be a string or null")
        for name in ("cell", "projections", "provenance"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be an object")
        for name in ("variant", "model_stats", "latency_ms", "memory", "energy", "quality", "comparison", "drift"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be an object or null")
        for name in ("samples_ms", "round_medians_ms", "paired_ratios"):
            v = getattr(self, name)
            if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise ValueError(f"{name} must be a list of numbers")
        if self.throughput_ips is not None and (isinstance(self.throughput_ips, bool)
                                                or not isinstance(self.throughput_ips, (int, float))):
            raise ValueError("throughput_ips must be a number or null")
        if not isinstance(self.round, int) or not isinstance(self.rounds, int):
            raise ValueError("round and rounds must be integers")
        if not all(isinstance(k, str) and isinstance(v, dict) for k, v in self.projections.items()):
            raise ValueError("projections must map profile ids to objects")
        for k in ("host", "packages", "speed_index"):
            v = self.provenance.get(k)
            if v is not None and not isinstance(v, dict) and not (k == "speed_index" and isinstance(v, (int, float))):
                raise ValueError(f"provenance.{k} must be an object")
        numeric = {"memory": ("baseline_rss_bytes", "peak_rss_bytes", "model_bytes"),
                   "model_stats": ("params", "size_bytes", "weight_bytes", "macs", "flops", "bops", "bytes_moved",
                                   "weight_bits", "nodes"),
                   "energy": ("j_per_inference", "avg_power_w", "inferences_per_j", "mw_per_inference"),
                   "quality": ("value", "fp32_value", "relative")}
        for section, keys in numeric.items():
            d = getattr(self, section) or {}
            for k in keys:
                v = d.get(k)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise ValueError(f"{section}.{k} must be a number or null")
        comp = self.comparison or {}
        for k in ("speedup",):
            if comp.get(k) is not None and (isinstance(comp[k], bool) or not isinstance(comp[k], (int, float))):
                raise ValueError(f"comparison.{k} must be a number or null")
        ci = comp.get("ci")
        if ci is not None and not (isinstance(ci, list) and len(ci) == 2
                                   and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in ci)):
            raise ValueError("comparison.ci must be [lo, hi] or null")
        lat = self.latency_ms or {}
        for k in ("median", "mean", "p90", "p99", "min", "max"):
            if lat.get(k) is not None and (isinstance(lat[k], bool) or not isinstance(lat[k], (int, float))):
                raise ValueError(f"latency_ms.{k} must be a number")
        if self.status == "ok" and not isinstance(lat.get("median"), (int, float)):
            raise ValueError("an ok record needs latency_ms.median")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def stats(self) -> LatencyStats | None:
        """The latency statistics rebuilt from the stored raw samples."""
        if not self.samples_ms:
            return None
        lat = self.latency_ms or {}
        return LatencyStats.from_samples_ms(self.samples_ms, timing=lat.get("timing", "per-call"),
                                            block_size=lat.get("block_size", 1))

    @property
    def unstable(self) -> bool:
        return bool((self.latency_ms or {}).get("unstable"))

    @property
    def emulated(self) -> bool:
        return bool((self.variant or {}).get("emulated"))

    @property
    def below_floor(self) -> bool:
        return bool((self.quality or {}).get("below_floor"))


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
    for cell_id, group in by_cell.items():
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
        base = Record.from_json(ok[-1].to_json())
        base.round = -1
        base.rounds = len(group)
        base.round_medians_ms = [r.latency_ms["median"] for r in ok if r.latency_ms]
        paired = [r.paired_ratios for r in ok]
        # paired only when every ok round has its ratio: the gate pairs them with the rounds
        base.paired_ratios = [p[0] for p in paired] if paired and all(len(p) == 1 for p in paired) else []
        samples = [s for r in ok for s in r.samples_ms]
        if samples:
            lat0 = ok[0].latency_ms or {}
            st = LatencyStats.from_samples_ms(samples, timing=lat0.get("timing", "per-call"),
                                              block_size=lat0.get("block_size", 1),
                                              first_call_ns=(lat0.get("first_call") or 0) * 1e6,
                                              unstable=any(r.unstable for r in ok))
            base.latency_ms = {**st.to_json(), "calls": sum((r.latency_ms or {}).get("calls") or 0 for r in ok),
                               "elapsed_s": sum((r.latency_ms or {}).get("elapsed_s") or 0 for r in ok)}
            base.samples_ms = samples
        if base.latency_ms:
            base.latency_ms = _latency_over_rounds(base.latency_ms, base.round_medians_ms)
        base.comparison = _comparison_over_rounds([r.comparison for r in ok])
        drifts = [r.drift for r in ok if r.drift]
        base.drift = _drift_over_rounds(drifts) if drifts else None
        tps = sorted(r.throughput_ips for r in ok if r.throughput_ips)
        base.throughput_ips = tps[len(tps) // 2] if tps else None
        measured = [r.memory for r in ok if (r.memory or {}).get("peak_rss_bytes") is not None]
        if measured:
            base.memory = measured[-1]
        failed = [r for r in group if not r.ok]
        if failed:
            base.reason = f"{len(failed)} of {len(group)} rounds did not finish: {failed[0].reason}"
        merged.append(base)
    return merged


def _latency_over_rounds(lat: dict[str, Any], round_medians: list[float]) -> dict[str, Any]:
    """The headline median and CI over rounds; the pooled samples' CI is kept, labelled, beside it."""
    from effbench.measure.stats import UNSTABLE_REL_HALFWIDTH, over_rounds
    est = over_rounds(round_medians)
    if est is None:
        return lat
    out = {**lat, "within_round_ci": lat.get("ci"), "median": est.value, "ci": [est.lo, est.hi],
           "ci_scope": est.scope, "ci_method": est.method, "rel_ci_halfwidth": est.rel_halfwidth}
    out["unstable"] = est.rel_halfwidth > UNSTABLE_REL_HALFWIDTH
    out["unstable_reason"] = (f"round medians spread: the 95% CI over {est.n} rounds is +-{est.rel_halfwidth:.0%} "
                              f"of the median (flagged above +-{UNSTABLE_REL_HALFWIDTH:.0%})"
                              if out["unstable"] else None)
    return out


def _comparison_over_rounds(per_round: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Per-round paired speedups combined: median with a CI over rounds; one round keeps its own
    within-worker CI and says it covers one moment; none with a number keeps the last round's reason."""
    from effbench.measure.stats import over_rounds, with_floor
    comps = [c for c in per_round if c]
    if not comps:
        return None
    values = [c["speedup"] for c in comps if isinstance(c.get("speedup"), (int, float))]
    if len(values) < 2:
        return next((c for c in comps if c.get("speedup") is not None), comps[-1])
    est = with_floor(over_rounds(values))
    out = {"baseline": comps[-1].get("baseline"), "speedup": est.value, "ci": [est.lo, est.hi],
           "ci_level": est.level, "ci_scope": est.scope, "ci_method": est.method, "rounds": len(values),
           "method": comps[-1].get("method", "paired"), "round_speedups": values,
           "cycles": sum(c.get("cycles") or 0 for c in comps)}
    if len(values) < len(comps):
        out["note"] = f"{len(comps) - len(values)} round(s) without a paired value: {comps[-1].get('reason')}"
    return out


def _drift_over_rounds(drifts: list[dict[str, Any]]) -> dict[str, Any]:
    rounds = [r for d in drifts for r in (d.get("rounds") or [d])]
    changes = [abs(r["change"]) for r in rounds if isinstance(r.get("change"), (int, float))]
    threshold = drifts[-1].get("threshold")
    worst = max(changes) if changes else None
    return {"threshold": threshold, "rounds": rounds, "max_abs_change": worst,
            "flagged": bool(worst is not None and threshold is not None and worst > threshold)}


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
                            "quality", "drift"):
                for k, v in _flatten(getattr(r, section) or {}).items():
                    row[f"{section}.{k}"] = v
            for pid, proj in (r.projections or {}).items():
                for k, v in _flatten(proj).items():
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


def provenance(*, suite_sha256: str, speed: dict | None, run_id: str, suite: str | None = None) -> dict[str, Any]:
    import datetime
    import platform

    from effbench import __version__
    return {"effbench": __version__, "python": platform.python_version(), "packages": package_versions(),
            "host": host_info(), "suite": suite, "suite_sha256": suite_sha256, "speed_index": speed, "run_id": run_id,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
