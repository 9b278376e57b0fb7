"""The typed record: stores written before it load, every line round-trips without loss, and a bad
field is refused with its name."""
from __future__ import annotations

import json

import pytest
from ebrecords import make
from ebtest import DATA

from effbench.results.record import Cell, Comparison, Latency, Projection, Record
from effbench.results.store import Store, load

OLD_STORE = DATA / "stores" / "v1-before-typed-records.jsonl"


def test_a_store_written_before_typed_records_loads_and_round_trips():
    lines = [json.loads(x) for x in OLD_STORE.read_text().splitlines()]
    records, warnings = Store(OLD_STORE).records()
    assert len(records) == len(lines) == 5 and not warnings
    for line, rec in zip(lines, records):
        assert _holds(rec.to_json(), line)  # nothing lost: new keys are only nulls of fields it lacked
        assert Record.from_json(rec.to_json()) == rec
    fp16, fp32, bf16, gpu, gpu_unsupported = records
    assert isinstance(fp16.cell, Cell) and fp16.cell.precision == "fp16" and fp16.cell.device == "cpu"
    assert isinstance(fp16.latency_ms, Latency) and fp16.latency_ms.median > 0
    assert isinstance(fp16.comparison, Comparison) and fp16.comparison.method == "paired"
    assert all(isinstance(p, Projection) for p in fp16.projections.values())
    assert fp16.quality.metric and fp16.quality.fidelity
    assert not bf16.ok and bf16.reason and bf16.latency_ms is None
    assert gpu.cell.device == "cuda" and gpu.memory.gpu_used_bytes > 0
    assert gpu.provenance.gpus and gpu.provenance.gpus[0]["name"].startswith("NVIDIA")
    assert not gpu_unsupported.ok
    merged = load(OLD_STORE)
    assert len(merged) == 5


def _holds(new, old) -> bool:
    if isinstance(old, dict):
        return isinstance(new, dict) and all(_holds(new.get(k), v) for k, v in old.items()) \
            and all(v is None or k in old or v in ({}, [], False, 1, "per-call") for k, v in new.items())
    if isinstance(old, list):
        return isinstance(new, list) and len(new) == len(old) and all(_holds(a, b) for a, b in zip(new, old))
    return new == old


def test_keys_this_version_does_not_know_are_kept():
    r = make(latency_ms={"median": 1.0, "from_the_future": [1, 2]}, energy={"source": "measured:x", "new": 3})
    assert r.latency_ms.extra == {"from_the_future": [1, 2]}
    back = r.to_json()
    assert back["latency_ms"]["from_the_future"] == [1, 2] and back["energy"]["new"] == 3
    assert Record.from_json(back) == r


def test_the_cell_hash_shape_is_unchanged():
    """The config hash and stored cells of earlier runs: method always written, device only off the CPU."""
    c = Cell(model="m", variant="int8-static", precision="int8", method="static", runner="onnxruntime",
             runner_label="onnxruntime", threads=2, batch_size=4, scenario="single-stream")
    assert list(c.to_json()) == ["model", "variant", "precision", "method", "runner", "runner_label", "threads",
                                 "compile", "batch_size", "scenario"]
    assert c.replace(device="cuda").to_json()["device"] == "cuda"
    assert c.cell_id == "m/int8-static/onnxruntime/b4/single-stream"
    assert Cell.from_json(c.to_json()) == c


@pytest.mark.parametrize("section,value,message", [
    ("latency_ms", {"median": "fast"}, "latency_ms.median must be a number"),
    ("latency_ms", {"mean": 1.0}, "latency_ms.median is missing"),
    ("comparison", {"ci": [1.0]}, "comparison.ci must be a list of 2"),
    ("memory", {"peak_rss_bytes": True}, "memory.peak_rss_bytes must be an integer"),
    ("energy", [], "energy must be an object"),
    ("projections", {"local": {"latency_ms": "soon"}}, "projections.local.latency_ms must be a number"),
    ("cell", {"model": "m"}, "cell.variant is missing"),
])
def test_a_bad_field_is_refused_with_its_name(section, value, message):
    line = make().to_json()
    line[section] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        Record.from_json(line)


def test_records_and_sections_are_immutable():
    r = make(latency_ms={"median": 1.0})
    with pytest.raises(AttributeError):
        r.status = "failed"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        r.latency_ms.median = 2.0  # type: ignore[misc]
    assert r.replace(status="failed", latency_ms=None).status == "failed" and r.status == "ok"


def test_an_ok_record_needs_its_median():
    with pytest.raises(ValueError, match="latency_ms.median"):
        make(status="ok", latency_ms=None)
