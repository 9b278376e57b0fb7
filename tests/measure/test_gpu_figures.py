"""GPU memory and provenance read through NVML, checked with a fake pynvml (the H100 run is docs/gpu.md)."""
import sys
import types

from effbench.measure import memory
from effbench.results.provenance import gpu_info


class FakeNvml:
    NVML_CLOCK_SM = 1

    def __init__(self, used=(500 << 20,), broken=False):
        self.used = list(used)
        self.broken = broken

    def nvmlInit(self):
        if self.broken:
            raise RuntimeError("NVML_ERROR_DRIVER_NOT_LOADED")

    def nvmlDeviceGetCount(self):
        return len(self.used)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(used=self.used[h], total=81559 << 20)

    def nvmlSystemGetDriverVersion(self):
        return b"580.159.04"

    def nvmlSystemGetCudaDriverVersion(self):
        return 13000

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetPowerManagementLimit(self, h):
        return 700_000

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        return 1980

    def nvmlDeviceGetUUID(self, h):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")


def test_gpu_info_describes_each_gpu_and_survives_unanswered_queries():
    (g,) = gpu_info(FakeNvml())
    assert g["name"] == "NVIDIA H100 80GB HBM3" and g["driver"] == "580.159.04" and g["cuda_driver"] == "13.0"
    assert g["power_limit_w"] == 700 and g["memory_bytes"] == 81559 << 20 and g["sm_clock_max_mhz"] == 1980
    assert g["uuid"] is None                       # a query the driver does not answer is absent, not fatal


def test_gpu_info_is_empty_without_a_driver():
    assert gpu_info(FakeNvml(broken=True)) == []


def test_gpu_memory_is_the_growth_over_the_workers_start(monkeypatch):
    nv = FakeNvml(used=(500 << 20,))
    monkeypatch.setattr(memory, "_NVML", [nv])
    start = memory.gpu_used_bytes()
    nv.used[0] = 1300 << 20
    figs = memory.gpu_figures(start)
    assert figs["gpu_used_bytes"] == 1300 << 20 and figs["gpu_used_over_start_bytes"] == 800 << 20
    assert "device-wide" in figs["gpu_used_note"]


def test_no_nvml_means_no_gpu_memory_figure(monkeypatch):
    monkeypatch.setattr(memory, "_NVML", [])
    monkeypatch.setitem(sys.modules, "pynvml", None)      # import fails
    assert memory.gpu_used_bytes() is None
    assert "gpu_used_bytes" not in memory.gpu_figures(None)


def test_the_runtimes_own_figures_join_nvmls(monkeypatch):
    """torch's allocator peak comes from its session, only on the GPU, and only when it allocated."""
    import torch

    from effbench.runners.torch import TorchSession
    monkeypatch.setattr(memory, "_NVML", [FakeNvml()])
    peak = {"v": 0}
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: peak["v"])
    on_gpu = TorchSession(torch.nn.Identity(), {}, device="cuda")
    assert "torch_cuda_max_allocated_bytes" not in memory.gpu_figures(None, on_gpu)   # 0 bytes is no figure
    peak["v"] = 295_064_576
    assert memory.gpu_figures(None, on_gpu)["torch_cuda_max_allocated_bytes"] == 295_064_576
    assert TorchSession(torch.nn.Identity(), {}, device="cpu").memory_figures() == {}


def test_effbench_version_is_known_from_a_source_tree(monkeypatch):
    from importlib import metadata

    from effbench.results.provenance import package_versions
    from effbench.runners import runner_packages
    real = metadata.version

    def version(name):
        if name == "effbench":
            raise metadata.PackageNotFoundError(name)
        return real(name)
    monkeypatch.setattr(metadata, "version", version)
    assert package_versions(runner_packages())["effbench"].endswith("(source tree, not installed)")
