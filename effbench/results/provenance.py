"""Where a record was measured: the host (CPU, its flags, GPUs), the packages' versions and the run.
The store refuses to merge what this says is not comparable (`results.merge`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from effbench.results.record import Provenance
from effbench.version import __version__


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


def package_versions(runner_packages: Sequence[Sequence[str]]) -> dict[str, str | None]:
    """Versions of effbench, every runner's packages, onnx and numpy. `runner_packages`: each registered
    runner's distributions (`runners.runner_packages()`), its runtime first: an absent runtime is recorded
    as None; a runner's other packages only when present."""
    from importlib import metadata
    out: dict[str, str | None] = {}
    runtimes = tuple(dict.fromkeys(p for packages in runner_packages for p in packages))
    core = {"onnx", "numpy", *(packages[0] for packages in runner_packages if packages)}
    for name in ("effbench", *runtimes, "onnx", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "effbench":  # run from a source tree without installing it (bench/gpu_check.sh)
                out[name] = f"{__version__} (source tree, not installed)"
            elif name in core:
                out[name] = None
    return out


def provenance(*, suite_sha256: str, speed: dict | None, run_id: str, runner_packages: Sequence[Sequence[str]],
               suite: str | None = None) -> Provenance:
    import datetime
    import platform
    return Provenance(effbench=__version__, python=platform.python_version(),
                      packages=package_versions(runner_packages),
                      host=host_info(), suite=suite, suite_sha256=suite_sha256, speed_index=speed, run_id=run_id,
                      started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
