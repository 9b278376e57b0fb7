"""Energy per inference: measured from RAPL (powercap) or NVML counters, else modeled from a device profile.

Every figure carries its `source` (measured:rapl | measured:nvml | modeled:<profile>); the two kinds never mix.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class EnergyModel:
    """Per-operation energies of a device (device profiles build one from YAML)."""

    pj_per_mac: dict[str, float]
    pj_per_dram_byte: float
    pj_per_sram_byte: float
    static_w: float                  # idle/static power the device draws regardless (0: not known)
    source: str
    load_w: float | None = None      # power at full load (a board's measured load power, else its TDP)


def _per_inference(j: float, seconds_per_inference: float) -> dict:
    """The derived figures shared by modeled and measured results.

    mW per inference (the seed's metric) = average power / inferences per second, which is numerically
    millijoules per inference.
    """
    avg_power_w = j / seconds_per_inference if seconds_per_inference > 0 else None
    ips = 1.0 / seconds_per_inference if seconds_per_inference > 0 else None
    return {
        "j_per_inference": j,
        "avg_power_w": avg_power_w,
        "inferences_per_j": 1.0 / j if j > 0 else None,
        "mw_per_inference": avg_power_w * 1e3 / ips if avg_power_w is not None and ips else None,
    }


def modeled_energy(*, macs: int, bytes_moved: int, precision: str, seconds_per_inference: float,
                   model: EnergyModel, profile_id: str, utilisation: float | None = None) -> dict:
    """Energy of one inference from a stated model, the power a device really draws included.

    dynamic = MACs x pJ/MAC + bytes x pJ/byte (bytes at the DRAM rate): the arithmetic and traffic alone.
    system  = (idle W + (load W - idle W) x utilisation) x time when the profile gives idle and load power
              and the caller knows the utilisation (a projection: its roofline's busy fraction), else
              idle W x time + dynamic. `range_j` brackets it: [idle x time + dynamic, load x time].
    Without an idle power the system figure is absent with the reason (a per-inference energy from the
    dynamic part alone read 10-1000x low: an H100 "at 0.7 W"), and only `dynamic_j_per_inference` is given.
    All arguments describe the same unit (one inference).
    """
    if precision not in model.pj_per_mac:
        # a precision this energy table does not know: recorded with the reason, never a crash
        known = ", ".join(model.pj_per_mac)
        return {"source": None, "j_per_inference": None, "avg_power_w": None, "inferences_per_j": None,
                "mw_per_inference": None,
                "reason": f"not modeled: profile '{profile_id}' has no energy per MAC for '{precision}' "
                          f"(it has {known}); add pj_per_mac.{precision} to its energy_model"}
    if seconds_per_inference <= 0:
        raise ValueError(f"seconds_per_inference must be > 0, got {seconds_per_inference}")
    t = seconds_per_inference
    compute_j = macs * model.pj_per_mac[precision] * 1e-12
    memory_j = bytes_moved * model.pj_per_dram_byte * 1e-12
    dynamic_j = compute_j + memory_j
    idle, load = model.static_w, model.load_w
    out: dict[str, Any] = {"source": f"modeled:{profile_id}"}
    breakdown = {"compute_j": compute_j, "memory_j": memory_j, "pj_per_mac": model.pj_per_mac[precision],
                 "pj_per_byte": model.pj_per_dram_byte, "static_w": idle, "load_w": load,
                 "model_source": model.source}
    if not idle or idle <= 0:
        out.update({"j_per_inference": None, "avg_power_w": None, "inferences_per_j": None,
                    "mw_per_inference": None, "dynamic_j_per_inference": dynamic_j,
                    "reason": f"not modeled as a whole: profile '{profile_id}' gives no idle power "
                              "(power.idle_w), and the arithmetic and DRAM traffic alone are a small part "
                              "of what a chip draws; dynamic_j_per_inference is that part only"})
        out["breakdown"] = {**breakdown, "static_j": None}
        return out
    if load is not None and load > idle and utilisation is not None:
        u = min(1.0, max(0.0, utilisation))
        system_j = (idle + (load - idle) * u) * t
        how = f"(idle {idle:g} W + (load {load:g} W - idle) x utilisation {u:.3g}) x time"
    else:
        system_j = idle * t + dynamic_j
        how = f"idle {idle:g} W x time + dynamic"
    out.update(_per_inference(system_j, t))
    out["dynamic_j_per_inference"] = dynamic_j
    out["range_j"] = [idle * t + dynamic_j, max(load * t, idle * t + dynamic_j) if load else None]
    out["breakdown"] = {**breakdown, "static_j": idle * t, "utilisation": utilisation, "system": how}
    return out


# ----------------------------------------------------------------------------------------- counters

class Meter(Protocol):
    available: bool
    reason: str | None
    source: str

    def sample_idle_w(self, seconds: float) -> float: ...
    def window(self) -> "EnergyWindow": ...


@dataclass
class EnergyWindow:
    """Counter readings around a timed loop; `result()` turns them into the measured energy dict."""

    meter: "_CounterMeter"
    start: dict[str, float] = field(default_factory=dict)
    end: dict[str, float] = field(default_factory=dict)
    t0: float = 0.0
    t1: float = 0.0
    reason: str | None = None

    def __enter__(self) -> "EnergyWindow":
        self.t0 = self.meter.clock()
        self.start = self.meter.read_j()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = self.meter.read_j()
        self.t1 = self.meter.clock()

    @property
    def window_s(self) -> float:
        return self.t1 - self.t0

    def joules(self) -> dict[str, float]:
        return {d: self.meter.delta_j(d, self.start[d], self.end[d]) for d in self.start if d in self.end}

    def long_enough(self) -> bool:
        """True once the window spans the counter's update period (the worker loops until it does)."""
        return self.meter.clock() - self.t0 >= self.meter.min_window_s

    def result(self, inferences: int, elapsed_s: float, idle_w: float | None,
               idle_after_w: float | None = None) -> dict | None:
        """Measured energy per inference (gross and net of idle), or None with `self.reason` set.

        `idle_w` is the idle power sampled before the window; `idle_after_w`, sampled after it, makes the
        idle the mean of the two and their half-difference the idle's drift. A net power (gross - idle)
        within twice that drift is not resolved: the net figures are then None with the reason, and the
        gross ones (idle included) stay. Measured on an H100 (docs/gpu.md): a launch-bound batch 1 added
        1-4 W over an idle of ~127 W that moved by up to 8 W between samples, and the net energy of the
        same cell differed by up to 6x between runs; the batch-32 cells, 8-100 W over idle, agreed
        within 11-35%."""
        if inferences <= 0 or elapsed_s <= 0:
            self.reason = "no inferences in the window"
            return None
        if self.window_s < self.meter.min_window_s:
            self.reason = (f"window {self.window_s:.3f} s is shorter than the counter's update period "
                           f"({self.meter.min_window_s} s)")
            return None
        domains = self.joules()
        gross = sum(domains.values())
        if gross <= 0:
            self.reason = "energy counter did not advance during the window"
            return None
        drift_w = None
        if idle_w is not None and idle_after_w is not None:
            drift_w = abs(idle_after_w - idle_w) / 2
            idle_w = (idle_w + idle_after_w) / 2
        # The counters span the whole window; the runner's elapsed time is the inference time within it.
        gross_j = gross / inferences
        idle_j = (idle_w or 0.0) * self.window_s / inferences
        net_j = gross_j - idle_j
        net_w = gross / self.window_s - (idle_w or 0.0)
        out: dict[str, Any] = {"source": self.meter.source}
        seconds = elapsed_s / inferences
        unresolved = None
        if net_j <= 0:
            unresolved = "net energy not positive: idle power noise exceeds the load"
        elif drift_w is not None and net_w <= 2 * drift_w:
            unresolved = (f"the load adds {net_w:.1f} W over an idle of {idle_w:.1f} W, within twice the "
                          f"idle's drift (±{drift_w:.1f} W between before and after): too small for this "
                          "counter to resolve; the gross figures include idle power")
        if unresolved is None:
            out.update(_per_inference(net_j, seconds))
            if drift_w is not None:
                out["net_rel_uncertainty"] = drift_w / net_w
        else:
            out.update({"j_per_inference": None, "avg_power_w": None, "inferences_per_j": None,
                        "mw_per_inference": None})
            out["reason"] = unresolved
        out.update({"gross_j_per_inference": gross_j, "gross_avg_power_w": gross / self.window_s,
                    "idle_w": idle_w, "window_s": self.window_s, "domains": domains})
        if drift_w is not None:
            out["idle_drift_w"] = drift_w
        return out


@dataclass
class _CounterMeter:
    """A meter over cumulative energy counters (joules by domain) with wraparound ranges."""

    source: str
    read_j: Callable[[], dict[str, float]]
    ranges_j: dict[str, float]
    min_window_s: float
    clock: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep
    available: bool = True
    reason: str | None = None

    def delta_j(self, domain: str, start: float, end: float) -> float:
        if end >= start:
            return end - start
        # The counter wrapped once (it restarts at 0 after max_energy_range_uj).
        return end + self.ranges_j.get(domain, 0.0) - start

    def sample_idle_w(self, seconds: float) -> float:
        with self.window() as w:
            self.sleep(seconds)
        return sum(w.joules().values()) / w.window_s if w.window_s > 0 else 0.0

    def window(self) -> EnergyWindow:
        return EnergyWindow(self)


@dataclass
class Unavailable:
    """No counter can be read here; `reason` says why (the caller falls back to the model)."""

    reason: str
    available: bool = False
    source: str = "none"
    min_window_s: float = 0.0

    def sample_idle_w(self, seconds: float) -> float:
        raise RuntimeError(f"no energy counter: {self.reason}")

    def window(self) -> EnergyWindow:
        raise RuntimeError(f"no energy counter: {self.reason}")


# RAPL counters update about every 1 ms; codecarbon and zeus read over windows of 10s of ms or more.
RAPL_MIN_WINDOW_S = 0.05
# NVML's total-energy counter refreshes far less often (tens of ms), and a GPU's idle power moves by
# several watts within a second (measured on an H100, docs/gpu.md): windows of a second at least.
NVML_MIN_WINDOW_S = 1.0


def _rapl_zones(root: Path) -> list[Path]:
    """Package zones and DRAM zones (top level or sub-zone); core/uncore/psys would double count."""
    zones = []
    for z in sorted(root.glob("intel-rapl:*")):
        try:
            name = (z / "name").read_text().strip()
        except OSError:
            continue
        if name.startswith("package") or name == "dram":
            zones.append(z)
        for sub in sorted(z.glob("intel-rapl:*:*")):
            try:
                if (sub / "name").read_text().strip() == "dram":
                    zones.append(sub)
            except OSError:
                continue
    return zones


def _rapl_meter(root: Path, clock: Callable[[], float], sleep: Callable[[float], None]) -> _CounterMeter | Unavailable:
    if not root.is_dir():
        return Unavailable(f"no powercap interface at {root} (a VM or a kernel without RAPL)")
    zones = _rapl_zones(root)
    if not zones:
        return Unavailable(f"no package or dram RAPL zone under {root}")
    names: dict[Path, str] = {}
    ranges: dict[str, float] = {}
    for z in zones:
        label = (z / "name").read_text().strip()
        if label in ranges:
            label = f"{label}@{z.name}"
        names[z] = label
        try:
            (z / "energy_uj").read_text()
            ranges[label] = int((z / "max_energy_range_uj").read_text()) / 1e6
        except PermissionError:
            return Unavailable(f"permission denied reading {z / 'energy_uj'} (root-only on patched kernels; "
                               "grant read access or run as root)")
        except (OSError, ValueError) as exc:
            return Unavailable(f"cannot read {z}: {exc}")

    def read_j() -> dict[str, float]:
        return {names[z]: int((z / "energy_uj").read_text()) / 1e6 for z in zones}

    return _CounterMeter("measured:rapl", read_j, ranges, RAPL_MIN_WINDOW_S, clock, sleep)


def _nvml_meter(nvml: Any, clock: Callable[[], float], sleep: Callable[[float], None]) -> _CounterMeter | Unavailable:
    if nvml is None:
        try:
            import pynvml as nvml  # nvidia-ml-py
        except ImportError:
            return Unavailable("nvidia-ml-py (pynvml) is not installed")
    try:
        nvml.nvmlInit()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        if not handles:
            return Unavailable("NVML found no GPU")
        for h in handles:
            nvml.nvmlDeviceGetTotalEnergyConsumption(h)  # mJ since driver load (Volta and newer)
    except Exception as exc:  # noqa: BLE001 - NVMLError and friends: no counter, fall back
        return Unavailable(f"NVML total energy not readable: {exc}")

    def read_j() -> dict[str, float]:
        return {f"gpu{i}": nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3 for i, h in enumerate(handles)}

    return _CounterMeter("measured:nvml", read_j, {}, NVML_MIN_WINDOW_S, clock, sleep)


def detect_meter(powercap_root: str | Path = "/sys/class/powercap", nvml: Any = None, *, gpu: bool | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> _CounterMeter | Unavailable:
    """The readable counter for the runtime: NVML for a GPU runtime (`gpu=True`), RAPL for a CPU one.

    Returns Unavailable(reason) when it cannot be read (the caller then models energy). A GPU runtime
    never falls back to RAPL: the CPU package alone would be a partial figure presented as whole.
    `nvml` replaces the `pynvml` module (tests pass a fake; passing one implies `gpu`); `clock`/`sleep`
    likewise.
    """
    if gpu is None:
        gpu = nvml is not None
    if gpu:
        return _nvml_meter(nvml, clock, sleep)
    return _rapl_meter(Path(powercap_root), clock, sleep)
