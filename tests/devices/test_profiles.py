"""Shipped profiles load and cite a source for every number; bad profiles give one-line errors."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from effbench.devices import load_profiles, profile_show_text, profiles_dir, profiles_list_text, shipped_ids
from effbench.devices.profile import Fact, Figure, Peak
from effbench.errors import UserError

SHIPPED = [i for i in shipped_ids() if i != "local"]
REQUIRED = {"local", "generic-x86-server-core", "raspberry-pi-5", "jetson-orin-nano", "coral-edge-tpu",
            "snapdragon-8-gen-2", "apple-m2", "cortex-m7", "nvidia-h100"}


def _walk(obj, path=""):
    if isinstance(obj, (Figure, Fact, Peak)):
        yield path, obj
    if hasattr(type(obj), "model_fields"):
        for k in type(obj).model_fields:
            yield from _walk(getattr(obj, k), f"{path}.{k}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}")


def test_required_profiles_are_shipped():
    assert REQUIRED <= set(shipped_ids())


@pytest.mark.parametrize("pid", SHIPPED)
def test_every_number_cites_a_source(pid):
    prof, = load_profiles([pid])
    assert prof.id == pid
    figures = [(p, f) for p, f in _walk(prof) if isinstance(f, Figure)]
    assert len(figures) >= 4
    for path, f in figures:
        if path.startswith(".derate"):
            continue  # defaults, labelled uncalibrated
        # a public URL, the paper, or a measurement kept in this repository (docs/, reports/)
        assert re.search(r"https?://|docs/runtime-notes.md|ISSCC|docs/\S+\.md|reports/", f.source), f"{pid}{path}: no URL or citation"
        if f.derived:  # derived figures show their arithmetic or basis
            assert re.search(r"[x/=]|assum|same as|the int8", f.source), f"{pid}{path}: derivation not shown"
    for path, peak in _walk(prof):
        if isinstance(peak, Peak) and peak.dense is None:
            assert "http" in (peak.unpublished or "")
    assert prof.energy().pj_per_mac  # the energy section produces an EnergyModel


def test_horowitz_default_says_so():
    h100, = load_profiles(["nvidia-h100"])
    assert "Horowitz" in h100.energy().source and "publishes no energy" in h100.energy().source


def test_list_and_show_text():
    text = profiles_list_text()
    for pid in SHIPPED:
        assert pid in text
    assert "unpublished" in text  # snapdragon's NPU throughput
    show = profile_show_text("raspberry-pi-5")
    assert "peak_ops.int8.dense" in show and "source:" in show and "[derived]" in show
    assert "cannot run: bf16" in show


def test_unknown_id_names_suite_field_and_suggests():
    with pytest.raises(UserError) as e:
        load_profiles(["apple-m2", "raspbery-pi-5", "local"], suite_file="suite.yaml")
    msg = str(e.value)
    assert msg.startswith("suite.yaml: devices[1]:") and "did you mean 'raspberry-pi-5'" in msg
    assert "\n" not in msg


def test_duplicate_device_is_an_error():
    with pytest.raises(UserError, match=r"devices\[1\].*listed twice"):
        load_profiles(["apple-m2", "apple-m2"], suite_file="s.yaml")


def test_user_profile_by_path(tmp_path):
    src = (profiles_dir() / "cortex-m7.yaml").read_text().replace("id: cortex-m7", "id: my-m7")
    (tmp_path / "devs").mkdir()
    (tmp_path / "devs" / "m7.yaml").write_text(src)
    prof, = load_profiles(["devs/m7.yaml"], base_dir=tmp_path)
    assert prof.id == "my-m7"
    with pytest.raises(UserError, match="not found"):
        load_profiles(["devs/nope.yaml"], base_dir=tmp_path, suite_file="s.yaml")


def _bad(tmp_path: Path, mutate) -> str:
    text = mutate((profiles_dir() / "raspberry-pi-5.yaml").read_text())
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(UserError) as e:
        load_profiles([str(p)])
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    return msg


def _line_of(text: str, needle: str) -> int:
    return next(i for i, l in enumerate(text.splitlines(), 1) if needle in l)


def test_bad_profile_unknown_key_has_line_and_suggestion(tmp_path):
    src = (profiles_dir() / "raspberry-pi-5.yaml").read_text()
    msg = _bad(tmp_path, lambda t: t.replace("per_op_overhead_s:", "per_op_overhead:"))
    line = _line_of(src, "per_op_overhead_s:")
    assert f"bad.yaml:{line}: per_op_overhead:" in msg and "did you mean 'per_op_overhead_s'" in msg


def test_bad_profile_unknown_precision(tmp_path):
    msg = _bad(tmp_path, lambda t: t.replace("  int8:\n    dense", "  int3:\n    dense"))
    assert "peak_ops.int3" in msg and "unknown precision 'int3'" in msg


def test_bad_profile_missing_source(tmp_path):
    msg = _bad(tmp_path, lambda t: t.replace('capacity_bytes: {value: 8589934592, derived: true, source:',
                                             'capacity_bytes: {value: 8589934592, derived: true, cite:'))
    assert "memory.capacity_bytes" in msg and ("unknown key 'cite'" in msg or "missing" in msg)


def test_bad_profile_negative_and_wrong_type(tmp_path):
    msg = _bad(tmp_path, lambda t: t.replace("{value: 17.07e9", "{value: -1"))
    assert "memory.bandwidth_bytes_per_s.value" in msg and ">= 0" in msg
    msg = _bad(tmp_path, lambda t: t.replace("kind: cpu", "kind: fpga"))
    line = _line_of((profiles_dir() / "raspberry-pi-5.yaml").read_text(), "kind: cpu")
    assert f"bad.yaml:{line}: kind:" in msg and "fpga" in msg


def test_bad_profile_yaml_syntax_and_not_a_mapping(tmp_path):
    msg = _bad(tmp_path, lambda t: t.replace("kind: cpu", "kind: [cpu"))
    assert "invalid YAML" in msg
    msg = _bad(tmp_path, lambda t: "- just\n- a list\n")
    assert "must be a YAML mapping" in msg


def test_shipped_id_must_match_file(tmp_path, monkeypatch):
    import effbench.devices.catalog as catalog
    import effbench.devices.profile as prof_mod
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "other.yaml").write_text((profiles_dir() / "apple-m2.yaml").read_text())
    monkeypatch.setattr(prof_mod, "profiles_dir", lambda: d)
    monkeypatch.setattr(catalog, "profiles_dir", lambda: d)
    with pytest.raises(UserError, match="does not match the file name"):
        load_profiles(["other"])
