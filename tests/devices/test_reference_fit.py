"""The shipped derates and error bands are what the published references give; leave-one-out scores
the least-squares fit that ships; published power on a device is compared with the power a projection
implies, and a far one is flagged."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ebtest import ROOT

from effbench.devices import load_profiles, shipped_ids
from effbench.devices.profile import validate_profile
from effbench.devices.references import POWER_TOLERANCE, check_references, differences, shipped_figures, work_key
from effbench.errors import UserError

STORED = ROOT / "bench" / "reference_check.json"


def _shipped():
    return load_profiles([i for i in shipped_ids() if i != "local"])


def _stored_work() -> dict:
    return json.loads(STORED.read_text())["work"]


# -- item 1: the shipped figures are the bench's output, recomputed here from the stored data ------------

def test_shipped_derates_and_bands_are_what_the_references_give():
    """Every profile's derate and error_band is what bench/reference_check.py computes from the published
    references and the stored counts of their models' work; a constant pasted from a past run, or a
    reference added without regenerating, fails here."""
    profiles, work = _shipped(), _stored_work()
    missing = [work_key(r) for p in profiles for r in p.references if work_key(r) not in work]
    assert not missing, f"no stored work for {missing}: run python bench/reference_check.py --write-profiles"
    report = check_references(profiles, None, work=work)
    wrong = differences(profiles, shipped_figures(report))
    assert not wrong, "; ".join(wrong) + " (regenerate: python bench/reference_check.py --write-profiles)"
    fits = report.fits
    # the profiles with projectable references carry a fitted derate; the others say why they have none
    assert {pid for pid, f in fits.items() if f.basis == "own"} == {
        "apple-m2", "coral-edge-tpu", "cortex-m7", "generic-x86-server-core", "jetson-orin-nano", "nvidia-h100"}
    assert fits["raspberry-pi-5"].derate is None and fits["raspberry-pi-5"].band is not None
    assert fits["snapdragon-8-gen-2"].derate is None and fits["snapdragon-8-gen-2"].band is None


def test_a_changed_constant_is_caught(make_profile):
    """The comparison itself can fail: a derate or band moved by 5% is reported with both values."""
    profiles, work = _shipped(), _stored_work()
    figs = shipped_figures(check_references(profiles, None, work=work))
    h100 = next(p for p in profiles if p.id == "nvidia-h100")
    d = h100.derate
    planted = h100.model_copy(update={"derate": d.model_copy(update={
        "compute": d.compute.model_copy(update={"value": d.compute.value * 1.05})})})
    wrong = differences([planted], figs)
    assert len(wrong) == 1 and wrong[0].startswith("nvidia-h100: derate.compute: ships")
    band = h100.error_band
    moved = h100.model_copy(update={"error_band": band.model_copy(update={"high": band.high * 1.05})})
    assert differences([moved], figs)[0].startswith("nvidia-h100: error_band: ships")
    pi = next(p for p in profiles if p.id == "raspberry-pi-5")
    derated = pi.model_copy(update={"derate": d})
    assert "the references give none" in differences([derated], figs)[0]


def test_the_stored_bench_output_matches_the_profiles():
    """bench/reference_check.json (what the bench printed and wrote) describes the files as shipped."""
    out = json.loads(STORED.read_text())
    for pid, f in out["fits"].items():
        assert f["matches"], (pid, f)
    assert out["summary"]["derates_differing"] == 0


@pytest.mark.slow
def test_stored_work_is_what_the_zoo_counts(cache_dir):
    """The counts the fast tests read are the zoo models' (exports ResNet-50 and the MobileNets once)."""
    from effbench.devices.references import reference_work
    stored = _stored_work()
    for key, w in stored.items():
        model, b, prec = key.split("/")
        fresh = reference_work(model, int(b[1:]), prec, cache_dir)
        for k in ("batch", "macs", "bytes_moved", "weight_bytes", "activation_bytes", "nodes"):
            assert fresh[k] == pytest.approx(w[k], rel=1e-9), (key, k)
        assert (fresh["node_work"] is None) == (w["node_work"] is None), key
        if w["node_work"]:
            assert [r[0] for r in fresh["node_work"]] == [r[0] for r in w["node_work"]], key
            assert np.allclose([r[1:] for r in fresh["node_work"]], [r[1:] for r in w["node_work"]], rtol=1e-9), key


# -- item 2: leave-one-out of the least-squares fit that ships ------------------------------------------

PEAK, BW, PER_OP = 1e11, 1e10, 2e-4   # ops/s, B/s, s per node: overhead is a large part of each latency
WORK = {  # hand-made work per call, keyed as check_references looks it up
    "resnet8/b1/int8": {"batch": 1.0, "macs": 5e7, "bytes_moved": 1e6, "weight_bytes": 1e5, "activation_bytes": 1e5,
                        "nodes": 10.0, "node_work": None},
    "resnet8/b1/fp32": {"batch": 1.0, "macs": 4e8, "bytes_moved": 4e6, "weight_bytes": 4e5, "activation_bytes": 4e5,
                        "nodes": 30.0, "node_work": None},
    "resnet8/b4/int8": {"batch": 4.0, "macs": 2e8, "bytes_moved": 2e6, "weight_bytes": 1e5, "activation_bytes": 4e5,
                        "nodes": 10.0, "node_work": None},
}


def _ref(batch, prec, ms=None, ips=None, **kw):
    r = {"model": "resnet8", "batch": batch, "precision": prec, "runtime": "toy", "source": "https://example.org/r",
         "quote": f"the toy runs it in {ms or ips}"}
    r.update({"latency_ms": ms} if ms else {"throughput_ips": ips})
    r.update(kw)
    return r


def _toy(refs, **over):
    data = {"id": "toy-npu", "name": "toy NPU", "kind": "npu",
            "peak_ops": {"int8": {"dense": {"value": PEAK, "source": "test figure"}},
                         "fp32": {"dense": {"value": PEAK, "source": "test figure"}}},
            "memory": {"bandwidth_bytes_per_s": {"value": BW, "source": "test figure"}},
            "per_op_overhead_s": {"value": PER_OP, "source": "test figure"}, "references": refs}
    data.update(over)
    return validate_profile(data, file="toy.yaml")


def _per_inference_s(key, d):
    """The roofline by hand: busy time over the derate, plus the per-node overhead (not derated)."""
    w = WORK[key]
    busy = max(w["macs"] * 2 / PEAK, w["bytes_moved"] / BW)
    return (busy / d + w["nodes"] * PER_OP) / w["batch"]


def _least_squares(keys_pub, lo=-12.0, hi=12.0):
    """argmin over d of sum log(projected / published)^2, by golden-section search on log d."""
    f = lambda x: sum(math.log(_per_inference_s(k, math.exp(x)) / pub) ** 2 for k, pub in keys_pub)  # noqa: E731
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    for _ in range(200):
        c, e = b - g * (b - a), a + g * (b - a)
        a, b = (a, e) if f(c) < f(e) else (c, b)
    return math.exp((a + b) / 2)


def test_leave_one_out_scores_the_least_squares_fit_that_ships():
    """Each reference is projected by the derate fitted (least squares on log projected / published,
    through the projection, overheads not derated) on the profile's other references; the derate that
    ships is the same fit on all of them. The old scoring (projected x the median published / projected
    ratio of the others) lands elsewhere when overheads are a large part of the time."""
    toy = _toy([_ref(1, "int8", ms=3.0), _ref(1, "fp32", ms=20.0), _ref(4, "int8", ips=1500.0)])
    report = check_references([toy], None, work=WORK)
    keys = ["resnet8/b1/int8", "resnet8/b1/fp32", "resnet8/b4/int8"]
    pubs = [3e-3, 20e-3, 1 / 1500]
    ratios = [c.published_s / c.projected_s for c in report.checks]
    old_style = []
    for i, c in enumerate(report.checks):
        assert c.projected_s == pytest.approx(_per_inference_s(keys[i], 1.0), rel=1e-9)
        others = [(k, p) for j, (k, p) in enumerate(zip(keys, pubs, strict=True)) if j != i]
        d = _least_squares(others)
        assert c.loo_from == "own"
        assert c.loo_s == pytest.approx(_per_inference_s(keys[i], d), rel=1e-4), i
        others_log = [math.log(r) for j, r in enumerate(ratios) if j != i]
        old_style.append(c.projected_s * math.exp(float(np.median(others_log))))
    # the planted data make the two scorings disagree, so the assertions above can tell them apart
    assert max(abs(math.log(o / c.loo_s)) for o, c in zip(old_style, report.checks, strict=True)) > 0.1
    fit = report.fits["toy-npu"]
    assert fit.basis == "own" and fit.references == 3
    assert fit.derate == pytest.approx(_least_squares(list(zip(keys, pubs, strict=True))), rel=1e-4)
    # and the shipped figures carry that fit and the leave-one-out band
    figs = shipped_figures(report)["toy-npu"]
    assert figs["derate"].compute.value == pytest.approx(fit.derate, rel=1e-3)
    loo_ratios = [c.published_s / c.loo_s for c in report.checks]
    assert figs["error_band"].low == pytest.approx(np.quantile(loo_ratios, 0.1), rel=1e-3)
    assert figs["error_band"].high == pytest.approx(np.quantile(loo_ratios, 0.9), rel=1e-3)


def test_a_profile_with_one_reference_is_scored_uncalibrated_when_it_is_left_out():
    """Without its only reference a profile has nothing to fit: what it would ship is no derate."""
    one = _toy([_ref(1, "int8", ms=3.0)])
    other = _toy([_ref(1, "fp32", ms=20.0), _ref(4, "int8", ips=1500.0)], id="toy-two")
    report = check_references([one, other], None, work=WORK)
    c = report.checks[0]
    assert c.loo_from == "uncalibrated" and c.loo_s == c.projected_s
    assert report.fits["toy-npu"].derate == pytest.approx(_least_squares([("resnet8/b1/int8", 3e-3)]), rel=1e-4)


# -- item 3: published power against the power the projection implies -----------------------------------

POWER = {"idle_w": {"value": 1.0, "source": "test idle, https://example.org/idle"},
         "load_w": {"value": 3.0, "source": "test load, https://example.org/load"}}


def _powered(power_w, power_source="https://example.org/power"):
    return _toy([_ref(1, "int8", ms=3.0, power_w=power_w, power_source=power_source,
                      power_quote=f"it drew {power_w} W")], power=POWER)


def test_a_published_power_far_from_the_implied_one_is_flagged():
    """The implied power (idle + (load - idle) x busy fraction) is compared with what was measured on the
    device; a planted figure 10x the load power is flagged and its error printed, a near one is not."""
    far = check_references([_powered(30.0)], None, work=WORK)
    c = far.checks[0]
    assert 1.0 < c.power_w < 3.0                     # between idle and load, as the model says
    assert c.power_factor == pytest.approx(c.power_w / 30.0) and c.power_off and c.power_same_as is None
    assert far.summary()["power_off"] == 1 and far.summary()["power_compared"] == 1
    assert "OFF" in far.text() and "published 30 W" in far.text()
    near = check_references([_powered(round(c.power_w * 1.2, 3))], None, work=WORK)
    assert not near.checks[0].power_off and near.summary()["power_off"] == 0
    assert abs(near.checks[0].power_factor - 1 / 1.2) < 1e-3
    assert 1 / POWER_TOLERANCE < near.checks[0].power_factor < POWER_TOLERANCE


def test_a_published_power_that_is_the_profiles_own_input_is_not_counted_independent():
    same = check_references([_powered(3.0, power_source="https://example.org/load")], None, work=WORK)
    assert same.checks[0].power_same_as == "power.load_w"
    assert same.summary()["power_independent"] == 0
    assert "not an independent check" in same.text()


@pytest.mark.parametrize("change,message", [
    ({"power_w": 2.0}, "power_w needs power_source"),
    ({"power_source": "https://example.org/p", "power_quote": "it drew 2 W"}, "give power_w too"),
])
def test_a_power_without_its_source_is_a_one_line_error(change, message):
    with pytest.raises(UserError, match=message) as e:
        _toy([_ref(1, "int8", ms=3.0, **change)])
    assert "\n" not in str(e.value) and "toy.yaml" in str(e.value) and "references[0]" in str(e.value)
    assert "power_source and power_quote (see device_profiles/cortex-m7.yaml)" in str(e.value)


def test_shipped_published_powers_agree_with_the_model():
    """Every published power in a shipped profile is within the tolerance of the power its projection
    implies, and at least one of them is independent of the profile's own power figures."""
    report = check_references(_shipped(), None, work=_stored_work())
    compared = [c for c in report.power_checks() if c.power_factor is not None]
    assert len(compared) == len(report.power_checks()) >= 2
    assert any(c.power_same_as is None for c in compared)
    for c in compared:
        assert not c.power_off, (c.profile, c.ref.runtime, c.power_w, c.ref.power_w)


def test_profiles_check_exits_1_when_a_shipped_figure_differs(tmp_path, monkeypatch, capsys):
    """`effbench profiles check` is a check: 0 when every figure is what the references give, 1 (with the
    profile, the field and both values on stderr) when one is not."""
    import yaml

    import effbench.devices as devices
    from effbench.cli import main
    work = _stored_work()
    real = devices.check_references
    monkeypatch.setattr(devices, "check_references", lambda profiles, cache_dir=None: real(profiles, None, work=work))
    assert main(["profiles", "check", "nvidia-h100"]) == 0
    src = yaml.safe_load((ROOT / "effbench" / "devices" / "device_profiles" / "nvidia-h100.yaml").read_text())
    src["id"] = "h100-edited"
    src["derate"]["compute"]["value"] = src["derate"]["compute"]["value"] * 1.2
    path = tmp_path / "h100-edited.yaml"
    path.write_text(yaml.safe_dump(src))
    capsys.readouterr()
    assert main(["profiles", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "h100-edited: derate.compute: ships" in err and "the references give" in err
