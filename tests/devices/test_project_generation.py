"""TTFT and TPOT of a generative record projected onto a device profile: prefill compute-bound, decode
bandwidth-bound, a per-forward overhead, the band labelled as modelled, the error against the local
measurement, and what cannot be projected (no peak for the kernel's arithmetic, missing work counts)."""
from __future__ import annotations

import pytest
from ebrecords import make

from effbench.devices.project import DECODER_OPS_PER_FORWARD, DECODER_OPS_PER_LAYER, project_generation


def _gen(**over) -> dict:
    g = {"prompt_tokens": 128, "new_tokens": 11, "ttft_ms": 400.0, "tpot_ms": 30.0, "weight_bytes": 5e6,
         "decode_bytes_per_token": 6e6, "prefill_macs": 8e8, "decode_macs_per_token": 1e6, "layers": 2,
         "kv_cache_bytes_analytic": 1000, "kernel": {"compute_precision": "int8", "compute": "int8 dot products"}}
    return {**g, **over}


def _record(runner="llamacpp", device="cpu", **gen):
    return make(f"m/int4/{runner}/p128/single-stream", cell={"precision": "int4", "device": device},
                latency_ms={"median": 700.0}, generation=_gen(**gen))


def test_ttft_compute_bound_tpot_bandwidth_bound_by_hand(make_profile):
    prof = make_profile(error_band={"low": 0.5, "high": 2.0, "source": "hand-made band"})
    p = project_generation(_record(), [prof])["toy"]
    assert p.status == "ok" and "modelled" in p.label
    overhead = (DECODER_OPS_PER_LAYER * 2 + DECODER_OPS_PER_FORWARD) * 1e-6          # per-op 1 us, no call cost
    # prefill: 8e8 MACs x 2 / 8e9 int8 ops/s = 0.2 s, against 5e6 weight bytes / 1e9 B/s = 5 ms
    ttft = 0.2 + overhead
    # decode: 6e6 bytes / 1e9 B/s = 6 ms, against 1e6 MACs x 2 / 8e9 = 0.25 ms
    tpot = 0.006 + overhead
    x = p.extra
    assert x["ttft_ms"] == pytest.approx(ttft * 1e3) and x["ttft_bound"] == "compute"
    assert x["tpot_ms"] == pytest.approx(tpot * 1e3) and x["tpot_bound"] == "memory"
    assert x["decode_tokens_per_s"] == pytest.approx(1 / tpot)
    assert p.latency_ms == pytest.approx((ttft + 10 * tpot) * 1e3)         # TTFT + (11 - 1) x TPOT
    assert x["tpot_band_ms"] == pytest.approx([tpot * 1e3 * 0.5, tpot * 1e3 * 2.0])
    assert "modelled" in p.band_source and "CNN references" in p.band_source
    assert x["compute_precision"] == "int8" and "modelled" in x["model"]


def test_the_local_profile_compares_with_the_measured_ttft_and_tpot(make_profile):
    local = make_profile(id="local")
    p = project_generation(_record(), [local])["local"]
    assert p.extra["measured_tpot_ms"] == 30.0
    assert p.extra["tpot_error_pct"] == pytest.approx((p.extra["tpot_ms"] - 30.0) / 30.0 * 100)
    assert p.measured_latency_ms == 700.0 and p.error_pct is not None
    other = project_generation(_record(), [make_profile()])["toy"]       # not this machine: no error figure
    assert "measured_tpot_ms" not in other.extra and other.error_pct is None


def test_no_peak_for_the_kernels_arithmetic_is_unsupported_with_the_reason(make_profile):
    prof = make_profile(peak_ops={"fp32": {"dense": {"value": 2e9, "source": "hand-made test figure"}}})
    p = project_generation(_record(), [prof])["toy"]
    assert p.status == "unsupported" and "int8" in p.reason and "int8 dot products" in p.reason


def test_missing_work_counts_or_a_failed_cell_give_no_figure(make_profile):
    p = project_generation(_record(prefill_macs=None), [make_profile()])["toy"]
    assert p.status == "no-data" and "work counts" in p.reason and p.latency_ms is None
    failed = make("m/int4/llamacpp/p128/single-stream", status="failed", reason="boom")
    assert "did not run" in project_generation(failed, [make_profile()])["toy"].reason
