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


def gpu_peak_bytes() -> dict:
    """Device memory peak where a GPU runtime reports it (absent on CPU-only machines)."""
    cuda = _torch_cuda()
    return {"torch_cuda_max_allocated_bytes": int(cuda.max_memory_allocated())} if cuda else {}


def _torch_cuda():
    """torch.cuda when this worker already imported torch and has a GPU; never imports torch itself."""
    mod = sys.modules.get("torch")
    if mod is not None and getattr(mod, "cuda", None) is not None and mod.cuda.is_available():
        return mod.cuda
    return None


def reset_peak() -> bool:
    """Reset the kernel's high-water mark to the current RSS (Linux >= 4.0: `5` > /proc/self/clear_refs),
    so one worker can measure the peak of several batch sizes in turn. False where it cannot."""
    cuda = _torch_cuda()
    if cuda:
        cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
