"""Energy: the stated model against hand computations; RAPL on a fake sysfs tree; NVML via a fake module."""
from __future__ import annotations

from pathlib import Path

import pytest

from effbench.measure.energy import EnergyModel, detect_meter, modeled_energy
from effbench.variants.specs import horowitz_45nm

RANGE_UJ = 262_143_328_850  # a real max_energy_range_uj value


def test_modeled_energy_matches_hand_computation():
    e = modeled_energy(macs=10**9, bytes_moved=10**6, precision="fp32", seconds_per_inference=0.01,
                       model=horowitz_45nm(), profile_id="local")
    # 1e9 MACs x 4.6 pJ + 1e6 bytes x 160 pJ; no idle power in the model: only the dynamic part
    assert e["source"] == "modeled:local"
    assert e["dynamic_j_per_inference"] == pytest.approx(4.6e-3 + 1.6e-4)
    assert e["j_per_inference"] is None and "no idle power" in e["reason"]
    assert e["breakdown"]["compute_j"] == pytest.approx(4.6e-3)


def test_modeled_energy_with_idle_and_load_power():
    m = EnergyModel(pj_per_mac={"fp32": 4.6}, pj_per_dram_byte=160.0, pj_per_sram_byte=1.25, static_w=2.5,
                    source="test", load_w=7.0)
    e = modeled_energy(macs=10**9, bytes_moved=10**6, precision="fp32", seconds_per_inference=0.01,
                       model=m, profile_id="pi", utilisation=0.5)
    assert e["j_per_inference"] == pytest.approx((2.5 + 4.5 * 0.5) * 0.01)
    assert e["avg_power_w"] == pytest.approx(4.75)
    assert e["range_j"] == pytest.approx([2.5 * 0.01 + 4.76e-3, 7.0 * 0.01])
    assert e["mw_per_inference"] == pytest.approx(47.5)     # W / (inferences/s) in mW == mJ per inference
    # without a utilisation (a measured latency, no roofline): idle x time + the dynamic part
    e = modeled_energy(macs=10**9, bytes_moved=10**6, precision="fp32", seconds_per_inference=0.01,
                       model=m, profile_id="pi")
    assert e["j_per_inference"] == pytest.approx(0.025 + 4.76e-3)


def test_modeled_energy_uses_precision_and_static_power():
    device = EnergyModel(pj_per_mac={"int8": 0.5}, pj_per_dram_byte=10.0, pj_per_sram_byte=1.0, static_w=2.0,
                         source="test")
    e = modeled_energy(macs=2 * 10**6, bytes_moved=1000, precision="int8", seconds_per_inference=0.5,
                       model=device, profile_id="pi")
    assert e["j_per_inference"] == pytest.approx(1e-6 + 1e-8 + 1.0)
    assert e["breakdown"]["static_j"] == pytest.approx(1.0)
    assert horowitz_45nm().pj_per_mac["int8"] < horowitz_45nm().pj_per_mac["fp16"] < horowitz_45nm().pj_per_mac["fp32"]
    # a precision the table does not know is a reason, not a crash (it stopped whole runs with exit 2)
    e = modeled_energy(macs=1, bytes_moved=1, precision="int3", seconds_per_inference=1, model=device, profile_id="pi")
    assert e["j_per_inference"] is None and "int3" in e["reason"] and "pi" in e["reason"]


class FakeRapl:
    """A powercap tree whose counters advance when the fake clock sleeps."""

    def __init__(self, root: Path, *, dram: bool = True, package_w: float = 5.0, dram_w: float = 1.0,
                 start_uj: int = 1000):
        self.root, self.t = root, 100.0
        self.zones = {"intel-rapl:0": ("package-0", package_w), "intel-rapl:0:0": ("core", 3.0)}
        if dram:
            self.zones["intel-rapl:0:1"] = ("dram", dram_w)
        for rel, (name, _) in self.zones.items():
            d = root / (rel if rel.count(":") == 1 else f"intel-rapl:0/{rel}")
            d.mkdir(parents=True, exist_ok=True)
            (d / "name").write_text(name + "\n")
            (d / "energy_uj").write_text(f"{start_uj}\n")
            (d / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")

    def path(self, rel):
        return self.root / (rel if rel.count(":") == 1 else f"intel-rapl:0/{rel}")

    def clock(self):
        return self.t

    def sleep(self, seconds, watts_scale=1.0):
        self.t += seconds
        for rel, (_, w) in self.zones.items():
            f = self.path(rel) / "energy_uj"
            f.write_text(f"{(int(f.read_text()) + int(w * watts_scale * seconds * 1e6)) % (RANGE_UJ + 1)}\n")


def test_rapl_idle_and_window_net_of_idle(tmp_path):
    fake = FakeRapl(tmp_path)
    meter = detect_meter(tmp_path, clock=fake.clock, sleep=fake.sleep)
    assert meter.available and meter.source == "measured:rapl"
    idle_w = meter.sample_idle_w(1.0)
    assert idle_w == pytest.approx(6.0)          # package 5 W + dram 1 W; core is inside package
    with meter.window() as w:
        fake.sleep(2.0, watts_scale=3.0)         # under load: 15 W + 3 W for 2 s, 100 inferences
    r = w.result(inferences=100, elapsed_s=2.0, idle_w=idle_w)
    assert r["source"] == "measured:rapl"
    assert set(r["domains"]) == {"package-0", "dram"}
    assert r["gross_j_per_inference"] == pytest.approx(36 / 100)
    assert r["j_per_inference"] == pytest.approx((36 - 12) / 100)
    assert r["avg_power_w"] == pytest.approx(12.0)
    assert r["mw_per_inference"] == pytest.approx(240.0)
    assert r["idle_w"] == pytest.approx(6.0)


def test_rapl_counter_wraparound(tmp_path):
    fake = FakeRapl(tmp_path, dram=False, start_uj=RANGE_UJ - 1_000_000)  # 1 J before the wrap
    meter = detect_meter(tmp_path, clock=fake.clock, sleep=fake.sleep)
    with meter.window() as w:
        fake.sleep(1.0)                          # 5 J: wraps past max_energy_range_uj
    assert int((tmp_path / "intel-rapl:0" / "energy_uj").read_text()) < 5_000_000
    r = w.result(inferences=10, elapsed_s=1.0, idle_w=0.0)
    assert r["domains"] == {"package-0": pytest.approx(5.0, abs=2e-6)}
    assert r["j_per_inference"] == pytest.approx(0.5, abs=1e-6)


def test_rapl_missing_dram_domain_measures_package_only(tmp_path):
    fake = FakeRapl(tmp_path, dram=False)
    meter = detect_meter(tmp_path, clock=fake.clock, sleep=fake.sleep)
    assert meter.sample_idle_w(0.5) == pytest.approx(5.0)


def test_rapl_counter_that_does_not_advance(tmp_path):
    fake = FakeRapl(tmp_path)
    meter = detect_meter(tmp_path, clock=fake.clock, sleep=fake.sleep)
    with meter.window() as w:
        fake.t += 1.0                            # time passes, counters frozen
    assert w.result(inferences=10, elapsed_s=1.0, idle_w=0.0) is None
    assert "did not advance" in w.reason


def test_rapl_window_too_short(tmp_path):
    fake = FakeRapl(tmp_path)
    meter = detect_meter(tmp_path, clock=fake.clock, sleep=fake.sleep)
    with meter.window() as w:
        fake.sleep(0.001)
    assert w.result(inferences=1, elapsed_s=0.001, idle_w=0.0) is None
    assert "shorter than" in w.reason


def test_rapl_permission_denied_falls_through(tmp_path, monkeypatch):
    FakeRapl(tmp_path)
    real = Path.read_text

    def guarded(self, *a, **k):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", guarded)
    meter = detect_meter(tmp_path)
    assert not meter.available
    assert "permission denied" in meter.reason and "energy_uj" in meter.reason


def test_no_powercap_here(tmp_path):
    meter = detect_meter(tmp_path / "absent")
    assert not meter.available and "no powercap" in meter.reason
    with pytest.raises(RuntimeError):
        meter.window()


class FakeNvml:
    def __init__(self, mw=(200_000.0,), fail=False):
        self.t, self.mj, self.mw, self.fail = 0.0, [1e6 for _ in mw], mw, fail

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.mw)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if self.fail:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self.mj[h]

    def clock(self):
        return self.t

    def sleep(self, s):
        self.t += s
        self.mj = [e + w * s for e, w in zip(self.mj, self.mw)]   # mW x s = mJ


def test_nvml_fake_module():
    nv = FakeNvml(mw=(200_000.0, 100_000.0))     # two GPUs at 200 W and 100 W
    meter = detect_meter("/nonexistent", nvml=nv, clock=nv.clock, sleep=nv.sleep)
    assert meter.available and meter.source == "measured:nvml"
    assert meter.sample_idle_w(1.0) == pytest.approx(300.0)
    with meter.window() as w:
        nv.sleep(1.0)
    r = w.result(inferences=50, elapsed_s=1.0, idle_w=100.0)
    assert r["domains"] == {"gpu0": pytest.approx(200.0), "gpu1": pytest.approx(100.0)}
    assert r["j_per_inference"] == pytest.approx((300 - 100) / 50)


def test_nvml_window_shorter_than_its_update_period_is_not_a_measurement():
    nv = FakeNvml(mw=(200_000.0,))
    meter = detect_meter("/nonexistent", nvml=nv, clock=nv.clock, sleep=nv.sleep)
    with meter.window() as w:
        nv.sleep(0.5)
    assert w.result(inferences=50, elapsed_s=0.5, idle_w=100.0) is None
    assert "shorter than the counter's update period" in w.reason


def _window(gross_w: float, seconds: float = 2.0):
    nv = FakeNvml(mw=(gross_w * 1e3,))
    meter = detect_meter("/nonexistent", nvml=nv, clock=nv.clock, sleep=nv.sleep)
    with meter.window() as w:
        nv.sleep(seconds)
    return w


def test_net_power_within_the_idle_drift_is_not_resolved_and_gross_stays():
    # an H100 at batch 1 (docs/gpu.md): 131 W under load, idle 127 W before and 133 W after
    w = _window(131.0)
    r = w.result(inferences=1000, elapsed_s=2.0, idle_w=127.0, idle_after_w=133.0)
    assert r["j_per_inference"] is None and r["avg_power_w"] is None
    assert "within twice the idle's drift" in r["reason"] and "±3.0 W" in r["reason"]
    assert r["gross_j_per_inference"] == pytest.approx(131.0 * 2 / 1000)
    assert r["idle_w"] == pytest.approx(130.0) and r["idle_drift_w"] == pytest.approx(3.0)


def test_net_power_well_above_the_idle_drift_is_measured_with_its_uncertainty():
    w = _window(227.0)
    r = w.result(inferences=1000, elapsed_s=2.0, idle_w=126.0, idle_after_w=128.0)
    assert r["j_per_inference"] == pytest.approx((227.0 - 127.0) * 2 / 1000)
    assert r["net_rel_uncertainty"] == pytest.approx(1.0 / 100.0)
    assert r.get("reason") is None


def test_energy_per_batch_brackets_each_window_with_idle_and_warms_up_outside_it():
    from effbench.execution.tasks import energy_per_batch
    nv = FakeNvml(mw=(100_000.0,))     # idle 100 W; each call adds 1 ms at +150 W
    meter = detect_meter("/nonexistent", nvml=nv, clock=nv.clock, sleep=nv.sleep)
    calls_made = []

    def call():
        calls_made.append(nv.t)
        nv.mw = (250_000.0,)
        nv.sleep(0.001)
        nv.mw = (100_000.0,)

    budget = {"warmup_s": 0.5, "min_time_s": 0.1, "max_time_s": 0.2, "target_rel_ci": 0.5}
    import effbench.measure.latency as lat
    real = lat.time.perf_counter_ns
    lat.time.perf_counter_ns = lambda: int(nv.t * 1e9)
    try:
        out = energy_per_batch(meter, {"1": call, "32": call}, budget)
    finally:
        lat.time.perf_counter_ns = real
    for b in ("1", "32"):
        m = out[b]["measured"]
        assert m["window_s"] >= meter.min_window_s            # the window was stretched to the counter's period
        assert m["idle_w"] == pytest.approx(100.0) and m["idle_drift_w"] == pytest.approx(0.0)
        assert m["avg_power_w"] == pytest.approx(150.0, rel=0.05)   # net of idle, per call time
    assert out["1"]["measured"]["j_per_inference"] == pytest.approx(0.15, rel=0.05)      # 150 W x 1 ms
    assert out["32"]["measured"]["j_per_inference"] == pytest.approx(0.15 / 32, rel=0.05)


def test_nvml_without_energy_counter_is_unavailable():
    meter = detect_meter("/nonexistent", nvml=FakeNvml(fail=True))
    assert not meter.available and "NVML_ERROR_NOT_SUPPORTED" in meter.reason
