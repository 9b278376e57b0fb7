"""Calibration recovers planted derates from synthetic measurements and writes them to the cache."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from effbench.devices.calibrate import calibrate, mdape
from effbench.devices.detect import CALIBRATION_FILE, apply_calibration
from effbench.devices.project import project_record
from effbench.errors import UserError


def _synthetic(make_profile, make_record, *, dc, dm, overhead, noise=0.0, seed=0):
    """Records whose 'measured' latency is the roofline with known derates (and optional noise)."""
    local = make_profile(id="local", per_op_overhead_s={"value": 1e-6, "source": "test start value"})
    rng = np.random.default_rng(seed)
    recs = []
    i = 0
    for runner, prec in dc:
        peak = local.peak_ops_per_s(prec)
        for macs, moved, nodes in ((2e8, 1e5, 20), (1e9, 1e6, 50), (5e7, 5e4, 10),
                                    (1e5, 2e8, 5), (1e6, 5e8, 30), (3e8, 3e5, 100), (1e3, 1e3, 200)):
            t = max(macs * 2 / (peak * dc[(runner, prec)]), moved / (1e9 * dm)) + nodes * overhead
            t *= math.exp(rng.normal(0, noise)) if noise else 1.0
            i += 1
            recs.append(make_record(macs=macs, bytes_moved=moved, nodes=nodes, precision=prec, runner=runner,
                                    median_ms=t * 1e3, cell_id=f"c{i}/{runner}/{prec}"))
    return local, recs


def test_recovers_planted_derates(make_profile, make_record, tmp_path):
    planted = {("onnxruntime", "fp32"): 0.4, ("onnxruntime", "int8"): 0.15, ("torch", "fp32"): 0.7}
    local, recs = _synthetic(make_profile, make_record, dc=planted, dm=0.6, overhead=3e-6)
    rep = calibrate(recs, profile=local, cache_dir=tmp_path, leave_one_out=False)
    # efficiencies are shrunk toward the micro-benchmarked peak (1): each lands at least most of the way
    # from 1 to the planted value (in log terms), never beyond it
    for (runner, prec), v in planted.items():
        got = rep.compute_by[f"{runner}/{prec}/matmul"]
        assert v * 0.999 <= got and abs(math.log(got / v)) < 0.35 * abs(math.log(v)), (runner, prec, got)
    # memory efficiency, per runner, is held more firmly at the measured bandwidth (SHRINK_MEMORY): it
    # moves from 1 toward the planted 0.6, never beyond
    for runner in ("onnxruntime", "torch"):
        assert 0.6 * 0.999 <= rep.memory_by[runner] < 0.95, (runner, rep.memory_by)
    for runner in ("onnxruntime", "torch"):  # the planted per-node cost, no per-call cost
        assert rep.node_overhead_by_runner[runner]["other"] == pytest.approx(3e-6, rel=0.1)
        assert rep.call_overhead_by_runner[runner] < 2e-6  # under one planted node
    assert rep.mdape_after < rep.mdape_before / 1.8  # memory held firmly: planted 0.6 is only partly recovered
    assert "median absolute % error" in rep.text()
    saved = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    assert saved["compute_by"]["onnxruntime/int8/matmul"] == rep.compute_by["onnxruntime/int8/matmul"]
    # the calibrated profile now projects the measured latency
    calibrated = apply_calibration(local, saved)
    p = project_record(recs[0], [calibrated])["local"]
    assert abs(p.error_pct) < 25.0


def test_noisy_measurements_still_improve(make_profile, make_record, tmp_path):
    planted = {("onnxruntime", "fp32"): 0.3, ("onnxruntime", "int8"): 0.1}
    local, recs = _synthetic(make_profile, make_record, dc=planted, dm=0.5, overhead=2e-6, noise=0.1, seed=3)
    rep = calibrate(recs, profile=local, write=False)
    assert rep.written_to is None
    assert rep.mdape_after < rep.mdape_before / 1.8  # memory held firmly (SHRINK_MEMORY): planted 0.5 partly recovered
    assert 0.5 * 0.999 <= rep.memory_by["onnxruntime"] < 0.9
    assert rep.mdape_loo is not None and rep.mdape_loo < rep.mdape_before / 1.5
    assert 0.1 <= rep.compute_by["onnxruntime/int8/matmul"] < 0.3
    # the leave-one-out errors become the calibrated profile's prediction interval
    band = rep.error_band
    assert band is not None and 0 < band["low"] <= band["high"] and "left out" in band["source"]
    calibrated = apply_calibration(local, {**rep.to_json(), "calibrated_at": "now", "cells": len(rep.cells)})
    p = project_record(recs[0], [calibrated])["local"]
    assert p.latency_band_ms == pytest.approx((p.latency_ms * band["low"], p.latency_ms * band["high"]))


def test_skips_unusable_records(make_profile, make_record):
    local = make_profile(id="local")
    recs = [make_record(precision="binary", emulated=True, median_ms=1.0, cell_id="bin"),
            make_record(status="failed", cell_id="f"),
            make_record(macs=None, median_ms=1.0, cell_id="nomacs"),
            make_record(median_ms=1000.0, cell_id="ok")]
    rep = calibrate(recs, profile=local, write=False)
    assert [c.cell_id for c in rep.cells] == ["ok"]
    assert {c for c, _ in rep.skipped} == {"bin", "f", "nomacs"}
    with pytest.raises(UserError, match="no measured cell"):
        calibrate(recs[:3], profile=local, write=False)


def test_mdape():
    assert mdape([10.0, -30.0, 20.0]) == 20.0
    assert mdape([]) is None


def test_profiles_and_run_share_one_cache_folder(monkeypatch, tmp_path):
    """With XDG_CACHE_HOME set, `profiles calibrate` used to write under ~/.cache while `run` read under
    $XDG_CACHE_HOME: the calibration was never used."""
    from effbench.devices import detect
    from effbench.models import sources
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert detect.default_cache_dir() == sources.default_cache_dir() == tmp_path / "xdg" / "effbench"
