"""The local profile: detection, a quick micro-benchmark, the cache, calibrated derates."""
from __future__ import annotations

import json

import pytest

from effbench.devices import load_profiles, local_profile
from effbench.devices.detect import CACHE_VERSION, CALIBRATION_FILE, PROFILE_FILE, detect, fingerprint


def test_detect_reads_this_machine():
    d = detect()
    assert d["logical_cores"] >= 1 and d["memory_bytes"] > 0 and d["cpu_model"]
    assert isinstance(d["isa_flags"], list)


def test_local_profile_quick_is_measured_cached_and_calibrated(tmp_path):
    prof = local_profile(cache_dir=tmp_path, quick=True)
    assert prof.id == "local" and prof.kind == "cpu"
    assert prof.peak_ops_per_s("fp32") > 1e8          # a real CPU does more than 0.1 GFLOP/s
    assert prof.memory.bandwidth_bytes_per_s.value > 1e8
    assert "measured on this machine" in prof.peak_ops["fp32"].dense.source
    cached = json.loads((tmp_path / PROFILE_FILE).read_text())
    assert cached["bench"]["quick"] is True
    # a second call reuses the cache: the same figures, no new measurement
    again = local_profile(cache_dir=tmp_path, quick=True)
    assert again.peak_ops_per_s("fp32") == prof.peak_ops_per_s("fp32")
    # calibrated derates for this machine are applied
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(
        {"version": CACHE_VERSION, "fingerprint": fingerprint(detect()), "compute": 0.5, "memory": 0.25,
         "compute_by": {"onnxruntime/int8": 0.2}, "per_op_overhead_s": 3e-6, "cells": 4}))
    cal = local_profile(cache_dir=tmp_path, quick=True)
    assert cal.compute_derate("int8", "onnxruntime") == 0.2 and cal.derate.memory.value == 0.25
    assert cal.per_op_overhead_s.value == 3e-6
    # ... but not those of another machine
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(
        {"version": CACHE_VERSION, "fingerprint": "another machine", "compute": 0.5, "memory": 0.25}))
    assert local_profile(cache_dir=tmp_path, quick=True).derate.memory.value == 1.0
    assert load_profiles(["local"], cache_dir=tmp_path, quick=True)[0].id == "local"


def test_local_profile_has_each_runners_own_peaks_and_projection_uses_them(tmp_path):
    """ONNX Runtime's int8 kernels are not torch._int_mm: the local profile measures each runner's own,
    and a cell is projected with the peak of the runtime that ran it."""
    from ebrecords import make

    from effbench.devices.project import project_record
    prof = local_profile(cache_dir=tmp_path, quick=True)
    ort = prof.peak_ops_by_runner["onnxruntime"]
    assert ort["fp32"].dense.value > 1e8 and "MatMul (float)" in ort["fp32"].dense.source
    assert "MatMulInteger" in ort["int8"].dense.source
    assert prof.peak_ops_per_s("int8", "onnxruntime") == ort["int8"].dense.value
    assert prof.peak_ops_per_s("int8", "torch") == prof.peak_ops["int8"].dense.value

    def rec(runner):
        return make(f"m/int8/{runner}/b1", config_hash="x", latency_ms={"median": 1.0},
                    variant={}, model_stats={"macs": 1e10, "bytes_moved": 1, "nodes": 0})
    ort_ms = project_record(rec("onnxruntime"), [prof])["local"].compute_ms
    torch_ms = project_record(rec("torch"), [prof])["local"].compute_ms
    assert ort_ms == pytest.approx(2e10 / ort["int8"].dense.value * 1e3)
    assert torch_ms == pytest.approx(2e10 / prof.peak_ops["int8"].dense.value * 1e3)
