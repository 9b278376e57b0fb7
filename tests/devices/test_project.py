"""Roofline arithmetic, memory fit, unsupported precisions, and no-data cases."""
from __future__ import annotations

import math

import pytest

from effbench.devices.project import project_record
from effbench.results.record import Provenance
from effbench.variants.specs import horowitz_45nm


def test_compute_bound_latency_and_energy(toy, make_record):
    # 1e9 MACs at 2e9 ops/s = 1 s compute; 1e6 bytes at 1e9 B/s = 1 ms; 10 nodes x 1 us overhead
    rec = make_record(macs=1e9, bytes_moved=1e6, nodes=10, batch=1)
    p = project_record(rec, [toy])["toy"]
    assert p.status == "ok" and p.label == "projected" and p.bound == "compute"
    assert p.latency_ms == pytest.approx(1000.0 + 0.01)
    assert p.energy_source == "projected:toy"
    # Horowitz fp32: 4.6 pJ/MAC, 160 pJ/DRAM byte, no static power
    expected_mj = (1e9 * 4.6 + 1e6 * 160.0) * 1e-12 * 1e3
    assert horowitz_45nm().pj_per_mac["fp32"] == 4.6
    # the toy profile gives no idle power: only the dynamic part is modeled, and it says so
    assert p.energy_mj is None and "no idle power" in p.reason
    assert p.dynamic_energy_mj == pytest.approx(expected_mj)


def test_memory_bound_and_precision_peak(toy, make_record):
    # int8: 1e6 MACs at 8e9 ops/s = 0.25 ms; 5e6 bytes at 1e9 B/s = 5 ms
    rec = make_record(macs=1e6, bytes_moved=5e6, precision="int8", nodes=0)
    p = project_record(rec, [toy])["toy"]
    assert p.bound == "memory"
    assert p.latency_ms == pytest.approx(5.0)
    assert p.compute_ms == pytest.approx(0.25)


def test_derates_scale_each_roof(make_profile, make_record):
    prof = make_profile(derate={"compute": {"value": 0.5, "source": "test"},
                                "memory": {"value": 0.25, "source": "test"},
                                "compute_by": {"onnxruntime/int8": {"value": 0.1, "source": "test"}}})
    fp32 = project_record(make_record(macs=1e9, bytes_moved=1e6, nodes=0), [prof])["toy"]
    assert fp32.latency_ms == pytest.approx(2000.0)            # 1 s / 0.5
    int8 = project_record(make_record(macs=1e9, bytes_moved=1e6, nodes=0, precision="int8"), [prof])["toy"]
    assert int8.latency_ms == pytest.approx(250.0 / 0.1)      # runner/precision derate wins
    torch_int8 = project_record(make_record(macs=1e9, bytes_moved=1e6, nodes=0, precision="int8",
                                            runner="torch"), [prof])["toy"]
    assert torch_int8.latency_ms == pytest.approx(500.0)      # falls back to the global derate
    mem = project_record(make_record(macs=1, bytes_moved=1e9, nodes=0), [prof])["toy"]
    assert mem.latency_ms == pytest.approx(4000.0)            # 1 s / 0.25


def test_work_counted_at_other_batch_is_rescaled(toy, make_record):
    rec = make_record(macs=1e8, bytes_moved=1e3, nodes=0, batch=32, batch_size=1)
    p = project_record(rec, [toy])["toy"]
    assert p.latency_ms == pytest.approx(32 * 100.0)
    assert p.batch_size == 32


def test_fp32_minilm_does_not_fit_cortex_m7(make_record):
    from effbench.devices import load_profiles
    m7, = load_profiles(["cortex-m7"])
    # MiniLM-L6 fp32: about 22.7M params x 4 bytes of weights
    rec = make_record(macs=1.1e9, bytes_moved=1e8, weight_bytes=90_900_000, activation_bytes=400_000)
    p = project_record(rec, [m7])["cortex-m7"]
    assert p.status == "ok" and p.fits is False
    # weights over the 2 MiB flash; activations fit the 1 MiB RAM
    assert p.shortfall_bytes == pytest.approx(90_900_000 - 2 * 2**20)
    small = project_record(make_record(weight_bytes=100_000, activation_bytes=50_000), [m7])["cortex-m7"]
    assert small.fits is True and small.shortfall_bytes == 0


def test_fit_against_capacity(toy, make_record):
    p = project_record(make_record(weight_bytes=800_000, activation_bytes=300_000), [toy])["toy"]
    assert p.fits is False and p.shortfall_bytes == pytest.approx(100_000)


def test_bf16_on_coral_is_unsupported(make_record):
    from effbench.devices import load_profiles
    coral, = load_profiles(["coral-edge-tpu"])
    p = project_record(make_record(precision="bf16"), [coral])["coral-edge-tpu"]
    assert p.status == "unsupported" and "bf16" in p.reason
    assert p.latency_ms is None and p.energy_mj is None
    ok = project_record(make_record(precision="int8"), [coral])["coral-edge-tpu"]
    assert ok.status == "ok"
    # the vendor's 2 TOPS/W gives 1 pJ/MAC instead of Horowitz's 0.23
    assert ok.dynamic_energy_mj == pytest.approx((1e9 * 1.0 + 1e6 * 160.0) * 1e-9)


def test_binary_projects_only_where_declared(toy, make_profile, make_record):
    rec = make_record(precision="binary", emulated=True, macs=1e9, nodes=0)
    assert project_record(rec, [toy])["toy"].status == "unsupported"
    binary = make_profile(peak_ops={"binary": {"dense": {"value": 1e12, "source": "test"}}})
    p = project_record(rec, [binary])["toy"]
    assert p.status == "ok" and p.latency_ms == pytest.approx(max(2e9 / 1e12, 1e6 / 1e9) * 1e3)


def test_unpublished_peak_is_no_data(make_record):
    from effbench.devices import load_profiles
    sd, = load_profiles(["snapdragon-8-gen-2"])
    p = project_record(make_record(precision="int8"), [sd])["snapdragon-8-gen-2"]
    assert p.status == "no-data" and "publishes no throughput" in p.reason


@pytest.mark.parametrize("stats,why", [({"macs": None}, "macs"), ({"bytes_moved": None}, "bytes_moved")])
def test_missing_work_is_no_data(toy, make_record, stats, why):
    p = project_record(make_record(**stats), [toy])["toy"]
    assert p.status == "no-data" and why in p.reason


@pytest.mark.parametrize("macs", [float("nan"), "lots", 1.5])
def test_work_that_is_not_a_count_is_refused_when_the_record_is_read(make_record, macs):
    """A foreign or hand-edited store line with a non-count MACs never reaches a projection."""
    with pytest.raises(ValueError, match="model_stats.macs must be an integer"):
        make_record(macs=macs)


def test_failed_record_and_empty_stats_never_raise(toy, make_record):
    from ebrecords import cell_from_id

    from effbench.results.record import SCHEMA, Record
    failed = make_record(status="failed").replace(reason="timeout")
    assert project_record(failed, [toy])["toy"].status == "no-data"
    bare = Record.from_json({"schema": SCHEMA, "cell_id": "c", "config_hash": "h", "status": "ok",
                             "cell": cell_from_id("c"), "latency_ms": {"median": 1.0}})
    p = project_record(bare, [toy])["toy"]
    assert p.status == "no-data"


def test_local_profile_reports_error_against_measured(make_profile, make_record):
    local = make_profile(id="local")
    p = project_record(make_record(macs=1e9, bytes_moved=1e6, nodes=0, median_ms=500.0), [local])["local"]
    assert p.measured_latency_ms == 500.0
    assert p.error_pct == pytest.approx(100.0)


def test_onchip_bandwidth_when_working_set_fits(make_profile, make_record):
    prof = make_profile(memory={"bandwidth_bytes_per_s": {"value": 1e9, "source": "test"},
                                "sram_bytes": {"value": 1e6, "source": "test"},
                                "sram_bandwidth_bytes_per_s": {"value": 1e11, "source": "test"}})
    p = project_record(make_record(macs=1, bytes_moved=1e8, nodes=0, weight_bytes=1000, activation_bytes=1000),
                       [prof])["toy"]
    assert p.latency_ms == pytest.approx(1.0)   # 1e8 B at 1e11 B/s
    big = project_record(make_record(macs=1, bytes_moved=1e8, nodes=0, weight_bytes=2e6), [prof])["toy"]
    assert big.latency_ms == pytest.approx(100.0)
    assert math.isfinite(big.dynamic_energy_mj)


def test_projection_is_compared_only_with_a_measurement_of_its_own_device(make_profile, make_record):
    """The local profile describes this machine's CPU: a CUDA cell is no measurement of it. A GPU profile
    is compared with a CUDA cell run on a GPU it names (NVML's name, from the record's provenance)."""
    local = make_profile(id="local")
    h100 = make_profile(id="h100", kind="gpu", gpu_names=["NVIDIA H100 80GB HBM3"])

    def rec(device, gpu_name):
        r = make_record(macs=1e9, bytes_moved=1e6, nodes=0, median_ms=500.0)
        return r.replace(cell=r.cell.replace(device=device),
                         provenance=Provenance(host={"gpus": [{"index": 0, "name": gpu_name}] if gpu_name else []}))

    on_cpu = project_record(rec("cpu", "NVIDIA H100 80GB HBM3"), [local, h100])
    assert on_cpu["local"].error_pct == pytest.approx(100.0) and on_cpu["h100"].error_pct is None
    on_h100 = project_record(rec("cuda", "NVIDIA H100 80GB HBM3"), [local, h100])
    assert on_h100["local"].error_pct is None
    assert on_h100["h100"].measured_latency_ms == 500.0 and on_h100["h100"].error_pct == pytest.approx(100.0)
    on_other_gpu = project_record(rec("cuda", "NVIDIA A100-SXM4-80GB"), [local, h100])
    assert on_other_gpu["h100"].error_pct is None


def test_the_shipped_h100_profile_names_the_card_it_was_checked_on():
    from effbench.devices.catalog import load_shipped
    h100 = load_shipped("nvidia-h100")
    assert "NVIDIA H100 80GB HBM3" in h100.gpu_names


def test_projected_energy_draws_the_power_a_device_really_draws(make_profile, make_record):
    """system energy = (idle + (load - idle) x the roofline's busy fraction) x time; never below idle."""
    prof = make_profile(power={"idle_w": {"value": 100.0, "source": "test"}, "tdp_w": {"value": 700.0, "source": "test"}})
    # compute 1 s + 10 nodes x 1 s overhead = 11 s: busy 1/11 of the time
    p = project_record(make_record(macs=1e9, bytes_moved=1e6, nodes=10, batch=1), [prof])["toy"]
    prof_fast = make_profile(per_op_overhead_s={"value": 1.0, "source": "test"},
                             power={"idle_w": {"value": 100.0, "source": "test"}, "tdp_w": {"value": 700.0, "source": "test"}})
    q = project_record(make_record(macs=1e9, bytes_moved=1e6, nodes=10, batch=1), [prof_fast])["toy"]
    assert p.energy_mj == pytest.approx((100 + 600 * (1000 / 1000.01)) * 1.00001 * 1e3, rel=1e-3)
    assert q.latency_ms == pytest.approx(11000.0)
    assert q.energy_mj == pytest.approx((100 + 600 / 11) * 11 * 1e3, rel=1e-6)
    assert q.avg_power_w >= 100 and q.energy_range_mj[0] <= q.energy_mj <= q.energy_range_mj[1]


def test_the_h100_projection_draws_at_least_its_measured_idle(make_record):
    """The issue's bug: the H100 projected at 0.7 W. Its idle power (127 W, measured) now bounds it."""
    from effbench.devices import load_profiles
    h100, = load_profiles(["nvidia-h100"])
    p = project_record(make_record(macs=7e8, bytes_moved=1e8, nodes=270, batch=32), [h100])["nvidia-h100"]
    assert p.status == "ok" and 127 <= p.avg_power_w <= 700


def test_node_by_node_roofline_where_the_profile_knows_its_on_chip_bandwidth(make_profile, make_record):
    """Each node is compute- or memory-bound on its own (its class's peak; its bytes on chip when they
    fit), then the nodes add up with their per-node cost and one call's cost."""
    from effbench.devices.profile import Figure
    prof = make_profile(memory={"bandwidth_bytes_per_s": {"value": 1e9, "source": "test"},
                                "sram_bytes": {"value": 1e4, "source": "test"},
                                "sram_bandwidth_bytes_per_s": {"value": 1e10, "source": "test"}},
                        peak_ops_by_runner={"onnxruntime/conv": {"fp32": {"dense": {"value": 1e9, "source": "test"}}}})
    prof = prof.model_copy(update={"call_overhead_by_runner": {"onnxruntime": Figure(value=5e-6, source="test")},
                                   "node_overhead_by_runner": {"onnxruntime": {
                                       "conv": Figure(value=2e-6, source="test"),
                                       "other": Figure(value=1e-6, source="test")}}})
    node_work = [["conv", 1e6, 1000, 1000, 2],      # 2 ms compute at the conv peak vs 0.2 us on chip
                 ["other", 0, 0, 40000, 3]]         # 40 kB does not fit the 10 kB on chip: 40 us at DRAM rate
    rec = make_record(macs=2e6, bytes_moved=1e5, nodes=5, node_work=node_work)
    p = project_record(rec, [prof])["toy"]
    expected = 5e-6 + 2 * (2e-6 + 2e6 / 1e9) + 3 * (1e-6 + 40000 / 1e9)
    assert p.latency_ms == pytest.approx(expected * 1e3)
    assert p.compute_ms == pytest.approx(2 * 2e6 / 1e9 * 1e3)
    without = project_record(make_record(macs=2e6, bytes_moved=1e5, nodes=5), [prof])["toy"]
    assert without.latency_ms != pytest.approx(p.latency_ms)  # records without node_work: whole-graph roofline


def test_a_projection_carries_its_profiles_prediction_interval(make_profile, make_record):
    prof = make_profile(error_band={"low": 0.5, "high": 2.0, "source": "test: leave-one-out percentiles"})
    p = project_record(make_record(macs=1e9, bytes_moved=1e6, nodes=0), [prof])["toy"]
    assert p.latency_band_ms == pytest.approx((p.latency_ms * 0.5, p.latency_ms * 2.0))
    assert "leave-one-out" in p.band_source
    plain = project_record(make_record(macs=1e9, bytes_moved=1e6, nodes=0), [make_profile()])["toy"]
    assert plain.latency_band_ms is None
