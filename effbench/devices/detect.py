"""The `local` profile: this machine's CPU, ISA flags, memory and caches, detected, plus peak ops and
bandwidth from a short micro-benchmark, cached in the user's cache folder with any calibrated derates.
"""
from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from effbench.devices.profile import LOCAL_ID, Profile, validate_profile

CACHE_VERSION = 3  # 2: each runner's own achieved peaks (peak_ops_by_runner); 3: its convolution peaks
PROFILE_FILE = "local_profile.json"
CALIBRATION_FILE = "local_calibration.json"
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx_vnni", "avx512_bf16", "avx512_fp16", "avx512_vpopcntdq", "amx_tile", "amx_int8",
             "amx_bf16", "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2", "sme")


def default_cache_dir() -> Path:
    """The one cache folder of `run` and `profiles` (XDG_CACHE_HOME honoured): a calibration written to
    another folder than the one `run` reads would silently never be used."""
    from effbench.models.sources import default_cache_dir as cache_dir
    return cache_dir()


# -- detection ------------------------------------------------------------------------------------

def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                info.setdefault(k.strip().lower(), v.strip())
    except OSError:
        pass
    return info


def _cache_bytes() -> tuple[int | None, str]:
    """On-chip cache bytes for the whole machine: per-core caches x cores + shared ones (sysfs)."""
    root = Path("/sys/devices/system/cpu")
    seen: set[tuple[str, str]] = set()
    total = 0
    try:
        for idx in sorted(root.glob("cpu[0-9]*/cache/index[0-9]*")):
            level = (idx / "level").read_text().strip()
            ctype = (idx / "type").read_text().strip()
            if ctype == "Instruction" or level == "1":
                continue
            shared = (idx / "shared_cpu_list").read_text().strip()
            if (level, shared) in seen:
                continue
            seen.add((level, shared))
            size = (idx / "size").read_text().strip().upper()
            mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
            total += int(size.rstrip("KMG")) * mult
    except (OSError, ValueError):
        return None, ""
    return (total or None), "sum of L2 and L3 caches in /sys/devices/system/cpu/cpu*/cache (shared ones once)"


def _meters() -> list[str]:
    meters = []
    rapl = Path("/sys/class/powercap/intel-rapl:0/energy_uj")
    if rapl.exists() and os.access(rapl, os.R_OK):
        meters.append("rapl")
    if any(Path(p).exists() for p in ("/dev/nvidiactl", "/proc/driver/nvidia/version")):
        meters.append("nvml")
    return meters


def detect() -> dict[str, Any]:
    """What this machine is, without timing anything."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("features") or "").split())
    try:
        import psutil
        physical = psutil.cpu_count(logical=False)
        memory = psutil.virtual_memory().total
    except ImportError:
        physical, memory = None, None
    cache, cache_src = _cache_bytes()
    return {
        "cpu_model": info.get("model name") or info.get("hardware") or platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "isa_flags": sorted(f for f in ISA_FLAGS if f in flags),
        "memory_bytes": memory,
        "cache_bytes": cache,
        "cache_source": cache_src,
        "meters": _meters(),
    }


def fingerprint(d: dict[str, Any]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    from effbench.runners import provenance_packages
    runtimes = []
    for pkg in provenance_packages():  # the versions without importing the runtimes (seconds)
        try:
            runtimes.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            continue
    return f"{d['cpu_model']}|{d['logical_cores']}|{d['memory_bytes']}|{','.join(d['isa_flags'])}|{'|'.join(runtimes)}"


# -- micro-benchmark ------------------------------------------------------------------------------

def _best_rate(fn, work: float, reps: int) -> float:
    fn()  # warm caches, page in, let the library pick its kernel
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return work / best


def microbench(quick: bool = False) -> dict[str, Any]:
    """Achieved peak ops/s per precision (matrix products), copy bandwidth and per-op dispatch cost."""
    import numpy as np
    n = 512 if quick else 1536
    reps = 3 if quick else 8
    out: dict[str, Any] = {"quick": quick, "matmul_n": n, "reps": reps}
    mm_ops = 2.0 * n ** 3
    try:
        import torch
        out["threads"] = torch.get_num_threads()
        g = torch.Generator().manual_seed(0)
        from effbench.variants.specs import PRECISIONS
        for spec in PRECISIONS.values():  # each precision's own matrix product (the registry's dtype)
            dtype = getattr(torch, spec.matmul_dtype or "", None)
            if dtype is None:
                continue
            if dtype.is_floating_point:
                a = torch.randn(n, n, generator=g).to(dtype)
                b = torch.randn(n, n, generator=g).to(dtype)
                with torch.inference_mode():
                    out[f"peak_{spec.name}"] = _best_rate(lambda: torch.mm(a, b), mm_ops, reps)
                continue
            info = torch.iinfo(dtype)
            a8 = torch.randint(info.min, info.max, (n, n), dtype=dtype, generator=g)
            b8 = torch.randint(info.min, info.max, (n, n), dtype=dtype, generator=g)
            try:
                with torch.inference_mode():
                    out[f"peak_{spec.name}"] = _best_rate(lambda: torch._int_mm(a8, b8), mm_ops, reps)
                out[f"{spec.name}_kernel"] = f"torch._int_mm ({spec.matmul_dtype} x {spec.matmul_dtype} -> int32)"
            except RuntimeError as e:  # no CPU kernel in this torch build
                out[f"{spec.name}_error"] = str(e).splitlines()[0]
        x = torch.ones(1)
        calls = 200 if quick else 2000
        with torch.inference_mode():
            torch.add(x, x)
            t0 = time.perf_counter()
            for _ in range(calls):
                torch.add(x, x)
            out["per_op_s"] = (time.perf_counter() - t0) / calls
    except ImportError:
        out["threads"] = None
        from effbench.variants.specs import reference_precision
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        out[f"peak_{reference_precision()}"] = _best_rate(lambda: a @ a, mm_ops, reps)
    out["by_runner"] = _runner_peaks(n, reps)
    big = np.ones((64 if quick else 256) * 2**20 // 8, dtype=np.float64)
    dst = np.empty_like(big)
    out["dram_copy_bytes"] = big.nbytes
    out["dram_bw"] = _best_rate(lambda: np.copyto(dst, big), 2.0 * big.nbytes, reps)
    small = np.ones(256 * 2**10 // 8, dtype=np.float64)
    sdst = np.empty_like(small)
    inner = 50 if quick else 400

    def _small() -> None:
        for _ in range(inner):
            np.copyto(sdst, small)
    out["sram_bw"] = _best_rate(_small, 2.0 * small.nbytes * inner, reps)
    return out


# -- the profile ----------------------------------------------------------------------------------

def _runner_peaks(n: int, reps: int) -> dict[str, dict[str, Any]]:
    """Each runner's own achieved peaks where it can measure them (`achieved_peaks`): a projection of
    a cell then uses the peak of the runtime that runs it."""
    from effbench.runners import runner_class, runner_names
    out = {}
    for name in runner_names():
        measure = getattr(runner_class(name), "achieved_peaks", None)
        if measure is None:
            continue
        try:
            out[name] = measure(n, reps)
        except ImportError as e:  # the runtime is not installed here
            out[name] = {"error": {"error": str(e)}}
    return out


def _fig(value: float, source: str, derived: bool = False) -> dict[str, Any]:
    return {"value": float(value), "source": source, "derived": derived}


def build_local(det: dict[str, Any], bench: dict[str, Any], measured_at: str) -> dict[str, Any]:
    where = f"measured on this machine {measured_at}"
    thr = bench.get("threads")
    mm = f"best of {bench['reps']} torch {bench['matmul_n']}^3 matrix products, {thr} threads, 2 ops per MAC"
    peak: dict[str, Any] = {}
    from effbench.variants.specs import PRECISIONS
    for prec in PRECISIONS:
        if bench.get(f"peak_{prec}"):
            kernel = bench.get(f"{prec}_kernel") or f"torch.mm {prec}"
            peak[prec] = {"dense": _fig(bench[f"peak_{prec}"], f"{where}: {kernel}; {mm}")}
    _add_derived_peaks(peak)
    copy = f"{where}: best of {bench['reps']} numpy copies of"
    memory: dict[str, Any] = {
        "bandwidth_bytes_per_s": _fig(bench["dram_bw"], f"{copy} {bench['dram_copy_bytes'] / 2**20:.0f} MiB "
                                      "(read + write bytes counted, as STREAM copy)"),
        "sram_bandwidth_bytes_per_s": _fig(bench["sram_bw"], f"{copy} a 256 KiB buffer (cache-resident)"),
    }
    if det.get("memory_bytes"):
        memory["capacity_bytes"] = _fig(det["memory_bytes"], "detected: psutil.virtual_memory().total")
    if det.get("cache_bytes"):
        memory["sram_bytes"] = _fig(det["cache_bytes"], "detected: " + det["cache_source"])
    overhead = bench.get("per_op_s")
    per_op = (_fig(overhead, f"{where}: torch eager dispatch of a 1-element add (a starting value; "
                   "`effbench profiles calibrate` fits it to measured cells)") if overhead
              else _fig(0.0, "not measured (torch unavailable); `effbench profiles calibrate` fits it"))
    flags = ", ".join(det["isa_flags"]) or "none detected"
    return {
        "id": LOCAL_ID,
        "name": f"this machine: {det['cpu_model']}",
        "kind": "cpu",
        "notes": (f"{det['logical_cores']} logical / {det['physical_cores']} physical cores; ISA: {flags}. "
                  "Peaks are achieved (not theoretical) figures of the installed libraries."),
        "peak_ops": peak,
        "peak_ops_by_runner": _by_runner(bench, where),
        "memory": memory,
        "energy_model": {"base": "horowitz-45nm"},
        "per_op_overhead_s": per_op,
        "meters": det["meters"],
    }


def _add_derived_peaks(peak: dict[str, Any]) -> None:
    """Precisions this machine computes in another's kernels (the registry's `local_peak_from`) get that
    precision's measured figure, labelled derived."""
    from effbench.variants.specs import PRECISIONS
    for spec in PRECISIONS.values():
        if spec.local_peak_from and spec.name not in peak and spec.local_peak_from[0] in peak:
            source, why = spec.local_peak_from
            peak[spec.name] = {"dense": _fig(peak[source]["dense"]["value"], f"the {source} figure: {why}",
                                             derived=True)}


def _by_runner(bench: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """peak_ops_by_runner: each runner's matrix-product peaks under its name, its convolution peaks
    under "RUNNER/conv" (what a projection uses for Conv nodes)."""
    from effbench.variants.microgemm import CONV_KERNEL, CONV_SHAPE
    from effbench.variants.specs import PRECISIONS
    out: dict[str, dict[str, Any]] = {}
    n, reps = bench["matmul_n"], bench["reps"]
    conv_shape = f"a 3x3 convolution {CONV_KERNEL[1]}->{CONV_KERNEL[0]} channels on {CONV_SHAPE[2]}x{CONV_SHAPE[3]}"
    for runner, peaks in (bench.get("by_runner") or {}).items():
        mine: dict[str, Any] = {}
        conv: dict[str, Any] = {}
        for key, p in peaks.items():
            prec = key.split("/", 1)[-1]
            if prec not in PRECISIONS or not p.get("ops_per_s"):
                continue
            if key.startswith("conv/"):
                conv[prec] = {"dense": _fig(p["ops_per_s"], f"{where}: {p['kernel']}; best of {reps} runs of "
                                                            f"{conv_shape}, 2 ops per MAC")}
            else:
                mine[prec] = {"dense": _fig(p["ops_per_s"], f"{where}: {p['kernel']}; best of {reps} "
                                                            f"{n}^3 matrix products, 2 ops per MAC")}
        _add_derived_peaks(mine)
        if mine:
            out[runner] = mine
        if conv:
            out[f"{runner}/conv"] = conv
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: the profile is still returned, just re-measured next time


def local_profile(cache_dir: Path | None = None, quick: bool = False, *, refresh: bool = False,
                  calibrated: bool = True) -> Profile:
    """The detected local profile. A cached micro-benchmark of this machine is reused (a quick one
    only when `quick`); calibrated derates from `effbench profiles calibrate` are applied if present."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    det = detect()
    fp = fingerprint(det)
    cached = None if refresh else _read_json(cache / PROFILE_FILE)
    if cached and cached.get("fingerprint") == fp and (quick or not cached["bench"].get("quick")):
        bench, measured_at = cached["bench"], cached["measured_at"]
    else:
        bench = microbench(quick=quick)
        measured_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        _write_json(cache / PROFILE_FILE, {"version": CACHE_VERSION, "fingerprint": fp, "detected": det,
                                           "bench": bench, "measured_at": measured_at})
    profile = validate_profile(build_local(det, bench, measured_at), file=str(cache / PROFILE_FILE))
    if calibrated:
        cal = _read_json(cache / CALIBRATION_FILE)
        if cal and cal.get("fingerprint") == fp:
            profile = apply_calibration(profile, cal)
    return profile


def apply_calibration(profile: Profile, cal: dict[str, Any]) -> Profile:
    from effbench.devices.profile import apply_figures
    src = f"calibrated {cal.get('calibrated_at', '')} on {cal.get('cells', '?')} measured cells (least squares on relative error)"
    return apply_figures(profile, cal, src)
