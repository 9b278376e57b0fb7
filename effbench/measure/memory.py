"""Memory of the worker process: baseline RSS before loading, and the kernel's peak RSS.

Peak comes from the kernel's own high-water mark of this process image (VmHWM in /proc/self/status),
so it needs no sampling thread that would perturb the timing loop. Not getrusage's ru_maxrss: Linux
carries that across exec, so a spawned worker would inherit its parent's peak.
"""
from __future__ import annotations

import resource
import sys

import psutil


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def limit_address_space(limit_mb: int | None) -> None:
    """Run this worker under an address-space limit, so a runaway cell fails alone."""
    if limit_mb:
        limit = int(limit_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


_NVML: list = []


def gpu_used_bytes(index: int = 0) -> int | None:
    """Device memory in use on GPU `index`, all processes together (NVML), or None without NVML or a GPU.

    Per-process figures (nvmlDeviceGetComputeRunningProcesses) are empty inside many containers and VMs,
    so a worker reads the device-wide figure before loading and after its calls: on a GPU nobody else
    uses, the difference is this worker's CUDA context plus what its runtime holds (ONNX Runtime's arena
    and torch's caching allocator keep their high-water mark, so "after the calls" is their peak)."""
    try:
        if not _NVML:
            import pynvml
            pynvml.nvmlInit()
            _NVML.append(pynvml)
        nvml = _NVML[0]
        return int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index)).used)
    except Exception:  # noqa: BLE001 - no pynvml, no driver, no GPU: the figure is absent
        return None


def gpu_figures(start_used: int | None, session=None) -> dict:
    """The memory section's GPU part for a worker that ran on a GPU: the runtime's own figures where its
    session reports them (`session.memory_figures()`, e.g. torch's allocator peak), and NVML's
    device-wide memory in use now, with its growth since `start_used`."""
    own = getattr(session, "memory_figures", None)
    out = dict(own()) if own else {}
    used = gpu_used_bytes()
    if used is not None:
        out["gpu_used_bytes"] = used
        if start_used is not None:
            out["gpu_used_over_start_bytes"] = used - start_used
            out["gpu_used_note"] = ("NVML, device-wide: memory in use after the calls minus before loading "
                                    "(this worker's CUDA context and the runtime's pool at its high-water mark)")
    return out


def reset_peak(session=None) -> bool:
    """Reset the kernel's high-water mark to the current RSS (Linux >= 4.0: `5` > /proc/self/clear_refs),
    and the runtime's own peaks where its session keeps any (`session.reset_peak_memory()`), so one worker
    can measure the peak of several batch sizes in turn. False where the RSS peak cannot be reset."""
    own = getattr(session, "reset_peak_memory", None)
    if own:
        own()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
