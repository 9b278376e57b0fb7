"""Paired comparisons between runtimes and between models (issue 31 item 5), without starting a process: what a
group worker is given (the baselines' members, feeds and the FP32 member that keeps them in the cycles), what a
record says for each target (a paired speedup, or why none, never a ratio of separate workers), the merge over
rounds, quality against a baseline's FP32 outputs, the thread pools of a worker holding several runtimes, and
stores written before `comparisons` existed."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ebtest import DATA

from effbench.config.suite import load_suite
from effbench.execution.crosspairs import SCENARIO_REASON, TWIN_NOTE, CrossPairs
from effbench.execution.tasks import _thread_pools, baseline_quality
from effbench.execution.workers import Outcome
from effbench.results.merge import merge_rounds
from effbench.results.record import Comparison, Latency, Quality, Record

SUITE = """name: x
models:
  - id: cnn
    source: {builtin: digits-cnn}
    dataset: {builtin: digits}
  - id: big
    source: {builtin: digits-resnet}
    dataset: {builtin: digits}
precisions: [fp32, int8]
runners: [{name: onnxruntime, threads: 1}, {name: torch, threads: 1}]
batch_sizes: [1, 4]
devices: []
"""
NATIVE = SimpleNamespace(emulated=False)
BASE_BLOCKS = [2.0, 2.0, 2.2, 2.0, 2.0, 2.4, 2.0]
FAST_BLOCKS = [1.0, 1.0, 1.0, 1.0, 0.8, 1.0, 1.0]


def _suite(tmp_path: Path, compare: str):
    p = tmp_path / "s.yaml"
    p.write_text(SUITE + f"compare: {compare}\n")
    return load_suite(p)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The suite with `compare: runtimes`, loaded once for the tests that only read it."""
    return _suite(tmp_path_factory.mktemp("runtimes"), "runtimes")


def _cell(suite, cell_id):
    return next(c for c in suite.cells() if c.cell_id == cell_id)


class _Art:
    """A prepared model as the run holds it: its JSON and its feeds."""

    def __init__(self, name: str) -> None:
        self.name = name

    def to_json(self) -> dict:
        return {"model_id": self.name}

    def feeds(self, batch: int, dataset=None) -> dict:
        return {"x": np.full((batch, 1, 8, 8), 1.0 if self.name == "big" else 0.0, dtype=np.float32)}


def _run(suite, **kw):
    built = SimpleNamespace(label="fp32", emulated=False)
    run = SimpleNamespace(suite=suite, broken={}, artifacts={"cnn": _Art("cnn"), "big": _Art("big")},
                          figures=SimpleNamespace(fp32_quality={}, measured=[]),
                          built_variant=lambda art, model, label, progress: Outcome("ok", built),
                          evaluation=lambda model: None)
    run.__dict__.update(kw)
    return run


def _record(cell, **fields) -> Record:
    return Record(cell_id=cell.cell_id, config_hash="h", status="ok", cell=cell, latency_ms=Latency(median=1.0),
                  **fields)


def test_the_group_worker_also_times_the_baseline_runners_fp32_at_every_batch_size(suite):
    cp = CrossPairs(_run(suite))
    first = _cell(suite, "cnn/int8/torch/b1/single-stream")
    members = [{"key": "int8/b1", "label": "int8", "batch_size": 1, "reference": "fp32/b1"},
               {"key": "fp32/b1", "label": "fp32", "batch_size": 1},
               {"key": "fp32/b4", "label": "fp32", "batch_size": 4}]
    out_members, variants, feeds, payload = cp.extend(0, first, members, {"int8": "v8", "fp32": "v32"},
                                                      {"1": "f1", "4": "f4"}, _Art("cnn"), None)
    extra = [m for m in out_members if m["label"] == "runtime:onnxruntime"]
    assert [(m["key"], m["batch_size"], m.get("feeds")) for m in extra] == [
        ("runtime:onnxruntime/b1", 1, None), ("runtime:onnxruntime/b4", 4, None)]   # the same model: its feeds
    # the FP32 member keeps the baseline in the cycles while the group's variants are timed against both
    assert {m["key"]: m.get("reference") for m in out_members if m["label"] == "fp32"} == {
        "fp32/b1": "runtime:onnxruntime/b1", "fp32/b4": "runtime:onnxruntime/b4"}
    assert payload["baselines"]["runtime:onnxruntime"]["cell"].cell_id == "cnn/fp32/onnxruntime/b1/single-stream"
    assert variants["runtime:onnxruntime"].label == "fp32" and feeds == {"1": "f1", "4": "f4"}
    assert members[1].get("reference") is None   # the caller's list is not changed
    # the baseline runner's own group holds no extra session: its cells' baseline is their FP32 twin
    ort = _cell(suite, "cnn/int8/onnxruntime/b1/single-stream")
    assert cp.extend(0, ort, members, {}, {}, _Art("cnn"), None)[3] == {}


def test_a_baseline_model_brings_its_own_inputs_and_a_missing_one_its_reason(tmp_path):
    suite = _suite(tmp_path, "{baseline_model: big}")
    cp = CrossPairs(_run(suite))
    first = _cell(suite, "cnn/fp32/torch/b4/single-stream")
    members = [{"key": "fp32/b4", "label": "fp32", "batch_size": 4}]
    out, _, feeds, payload = cp.extend(1, first, members, {}, {"4": "f4"}, _Art("cnn"), None)
    base = next(m for m in out if m["label"] == "model:big")
    assert base["feeds"] == "model:big/b4" and float(feeds["model:big/b4"]["x"][0, 0, 0, 0]) == 1.0
    assert payload["baselines"]["model:big"]["artifact"] == {"model_id": "big"}
    cp = CrossPairs(_run(suite, artifacts={"cnn": _Art("cnn"), "big": Outcome("failed", None, "export crashed")}))
    out, _, _, payload = cp.extend(0, first, members, {}, {"4": "f4"}, _Art("cnn"), None)
    assert payload == {} and len(out) == 1
    rec = cp.complete(_record(first), NATIVE, {"members": {}}, {"status": "ok", "block_ms": FAST_BLOCKS}, 0, True)
    assert rec.comparisons["model:big"] == Comparison(
        baseline="big/fp32/torch/b4/single-stream", reason="the baseline model could not be prepared: export crashed")


def test_a_record_gets_the_paired_speedup_against_each_baseline_or_why_none(tmp_path):
    suite = _suite(tmp_path, "{runtimes: {baseline: onnxruntime}, baseline_model: big}")
    cp = CrossPairs(_run(suite))
    cell = _cell(suite, "cnn/int8/torch/b1/single-stream")
    member = {"status": "ok", "block_ms": FAST_BLOCKS}
    res = {"members": {"runtime:onnxruntime/b1": {"status": "ok", "block_ms": BASE_BLOCKS,
                                                  "session": {"runtime": "onnxruntime", "spinning": "off"}},
                       "model:big/b1": {"status": "unsupported", "reason": "no kernel"}},
           "thread_pools": {"runtimes": ["onnxruntime", "torch"]}}
    q = Quality(metric="top1", value=0.9, vs_baseline={"runtime:onnxruntime": {"baseline": "cnn/fp32/onnxruntime/b4/x",
                                                                               "relative": 0.98}})
    rec = cp.complete(_record(cell, quality=q), NATIVE, res, member, 0, loop=True)
    c = rec.comparisons["runtime:onnxruntime"]
    # baseline / member per cycle: 2, 2, 2.2, 2, 2.5, 2.4, 2: median 2, paired, one round
    assert (c.baseline, c.speedup, c.method, c.rounds, c.cycles, c.ci_scope) == (
        "cnn/fp32/onnxruntime/b1/single-stream", 2.0, "paired", 1, 7, "one moment (1 round)")
    assert c.ci[0] < 2.0 < c.ci[1]
    assert c.extra == {"thread_pools": {"runtimes": ["onnxruntime", "torch"]},
                       "baseline_runtime": {"runtime": "onnxruntime", "spinning": "off"}}
    assert rec.comparisons["model:big"] == Comparison(
        baseline="big/fp32/torch/b1/single-stream", reason="the baseline big/fp32/torch/b1/single-stream is "
                                                           "unsupported: no kernel")
    # the quality pass names the batch it ran; the record names its own
    assert rec.quality.vs_baseline["runtime:onnxruntime"] == {"baseline": "cnn/fp32/onnxruntime/b1/single-stream",
                                                              "relative": 0.98}
    emulated = cp.complete(_record(cell), SimpleNamespace(emulated=True), res, member, 0, loop=True)
    assert emulated.comparisons["runtime:onnxruntime"].speedup is None
    assert emulated.comparisons["runtime:onnxruntime"].reason.startswith("emulated:")
    never = {"members": {"runtime:onnxruntime/b1": {"status": "ok", "block_ms": [math.nan] * 7}}}
    assert cp.complete(_record(cell), NATIVE, never, member, 0, True).comparisons["runtime:onnxruntime"].reason \
        == "no cycle timed both sides"
    absent = cp.complete(_record(cell), NATIVE, {"members": {}}, member, 0, True)
    assert absent.comparisons["runtime:onnxruntime"].reason == "the baseline was not timed in this worker"


def test_a_scenario_without_the_paired_loop_says_so_and_gives_no_ratio(suite):
    cell = _cell(suite, "cnn/int8/torch/b1/single-stream").replace(scenario="offline")
    rec = CrossPairs(_run(suite)).complete(_record(cell), NATIVE, {"members": {}}, {}, 0, loop=False)
    assert rec.comparisons["runtime:onnxruntime"] == Comparison(
        baseline="cnn/fp32/onnxruntime/b1/offline", reason=SCENARIO_REASON.format(scenario="offline"))


def test_the_baseline_runners_own_cells_repeat_their_fp32_pairing_and_say_so(suite):
    cp = CrossPairs(_run(suite))
    cell = _cell(suite, "cnn/int8/onnxruntime/b4/single-stream")
    twin = Comparison(baseline="cnn/fp32/onnxruntime/b4/single-stream", speedup=1.5, ci=(1.4, 1.6), method="paired",
                      rounds=1)
    q = Quality(metric="top1", value=0.9, fp32_value=0.95, relative=0.9 / 0.95, below_floor=True, min_relative=0.99)
    rec = cp.complete(_record(cell, comparison=twin, quality=q), NATIVE, {"members": {}}, {}, 0, True)
    c = rec.comparisons["runtime:onnxruntime"]
    assert (c.speedup, c.ci, c.baseline, c.note, c.extra) == (1.5, (1.4, 1.6), twin.baseline, TWIN_NOTE,
                                                              {"pairing": TWIN_NOTE})
    v = rec.quality.vs_baseline["runtime:onnxruntime"]
    assert (v["relative"], v["below_floor"], v["baseline_value"]) == (0.9 / 0.95, True, 0.95)
    fp32 = _cell(suite, "cnn/fp32/onnxruntime/b4/single-stream")   # the baseline itself: nothing to compare
    assert cp.complete(_record(fp32), NATIVE, {"members": {}}, {}, 0, True).comparisons == {}
    assert cp.unpaired(fp32, "why") == {}
    assert cp.unpaired(_cell(suite, "cnn/fp32/torch/b4/single-stream"), "the group's worker failed") == {
        "runtime:onnxruntime": Comparison(baseline="cnn/fp32/onnxruntime/b4/single-stream",
                                          reason="the group's worker failed")}


def test_quality_passes_are_scored_against_each_baselines_fp32_outputs(tmp_path):
    suite = _suite(tmp_path, "{baseline_model: big}")
    run = _run(suite)
    run.figures.fp32_quality[("big", "torch")] = 0.8
    got = CrossPairs(run).quality_baselines(_cell(suite, "cnn/int8/torch/b1/single-stream"),
                                            lambda model, runner: tmp_path / f"{model}-{runner}.npz")
    assert got == {"model:big": {"cell_id": "big/fp32/torch/b1/single-stream",
                                 "reference_path": str(tmp_path / "big-torch.npz"), "value": 0.8}}


def test_quality_against_a_baseline_top1_cosine_and_why_none(tmp_path):
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.savez(tmp_path / "ref.npz", outputs=ref)
    base = {"cell_id": "big/fp32/ort/b1/s", "reference_path": str(tmp_path / "ref.npz"), "value": 0.8}
    top1 = baseline_quality(ref * 2, base, "top1", 0.84, 0.99)
    assert (top1["value"], top1["baseline_value"], top1["below_floor"]) == (0.84, 0.8, False)
    assert top1["relative"] == pytest.approx(1.05) and top1["fidelity"]["top1_agreement"] == 1.0
    cos = baseline_quality(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]), base, "cosine", None, 0.99)
    assert cos["value"] == pytest.approx(2 / 3) and cos["baseline_value"] == 1.0 and cos["below_floor"] is True
    missing = baseline_quality(ref, {**base, "reference_path": str(tmp_path / "none.npz")}, "cosine", None, 0.99)
    assert missing["relative"] is None and "no reference outputs of the baseline" in missing["reason"]
    shape = baseline_quality(np.zeros((3, 5)), base, "top1", 0.9, 0.99)
    assert shape["relative"] == pytest.approx(0.9 / 0.8) and "shape [3, 2]" in shape["fidelity_reason"]
    no_value = baseline_quality(ref, {**base, "value": None}, "top1", 0.9, 0.99)
    assert no_value["relative"] is None and "has no top1 value" in no_value["reason"]


def test_a_worker_of_several_runtimes_turns_spinning_off_and_says_so(suite):
    torch_cell = _cell(suite, "cnn/fp32/torch/b1/single-stream")
    ort_cell = _cell(suite, "cnn/fp32/onnxruntime/b1/single-stream")
    one = _thread_pools(ort_cell, {"model:big": {"cell": ort_cell.replace(model="big")}})
    assert one["options"] == {"shared_thread_pool": True}
    mixed = _thread_pools(torch_cell, {"runtime:onnxruntime": {"cell": ort_cell}})
    assert mixed["options"] == {"shared_thread_pool": False, "allow_spinning": False}
    assert mixed["record"]["runtimes"] == ["onnxruntime", "torch"] and "allow_spinning=0" in mixed["record"]["pools"]
    two_counts = _thread_pools(ort_cell, {"runtime:x": {"cell": ort_cell.replace(threads=2)}})
    assert two_counts["options"]["shared_thread_pool"] is False   # one process-wide pool has one size
    from effbench.runners.onnxruntime import _session_options
    so = _session_options(1, {"allow_spinning": False})
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    with pytest.raises(Exception):   # ORT's default (spinning on) is not written as an entry
        _session_options(1, {}).get_session_config_entry("session.intra_op.allow_spinning")


def _round(cell, rnd: int, comps: dict) -> Record:
    return _record(cell, round=rnd, rounds=3, comparisons=comps, samples_ms=(1.0, 1.1, 0.9))


def test_rounds_merge_each_comparison_with_a_ci_over_rounds(suite):
    cell = _cell(suite, "cnn/int8/torch/b1/single-stream")

    def comp(v):
        return Comparison(baseline="b", speedup=v, ci=(v * 0.9, v * 1.1), method="paired", rounds=1, cycles=7,
                          ci_scope="one moment (1 round)", extra={"thread_pools": {"runtimes": ["a", "b"]}})
    merged, = merge_rounds([_round(cell, 0, {"runtime:onnxruntime": comp(2.0)}),
                            _round(cell, 1, {"runtime:onnxruntime": comp(2.2)}),
                            _round(cell, 2, {"runtime:onnxruntime": Comparison(baseline="b", reason="failed")})])
    c = merged.comparisons["runtime:onnxruntime"]
    assert (c.rounds, c.round_speedups, c.ci_scope, c.method, c.cycles) == (2, (2.0, 2.2), "between rounds",
                                                                          "paired", 14)
    assert c.ci[0] < c.speedup < c.ci[1] and "1 round(s) without a paired value: failed" in c.note
    assert c.extra == {"thread_pools": {"runtimes": ["a", "b"]}}


def test_records_round_trip_their_comparisons_and_old_stores_load_without_them():
    from effbench.results.store import load
    old = load(DATA / "stores" / "v1-before-typed-records.jsonl")
    assert old.records and all(r.comparisons == {} for r in old.records)
    assert all(r.quality is None or r.quality.vs_baseline == {} for r in old.records)
    r = old.records[0]
    new = r.replace(comparisons={"runtime:torch": Comparison(baseline="x", speedup=0.5, ci=(0.4, 0.6),
                                                             method="paired")},
                    quality=Quality(metric="top1", vs_baseline={"runtime:torch": {"relative": 1.0}}))
    back = Record.from_json(new.to_json())
    assert back == new and back.comparisons["runtime:torch"].ci == (0.4, 0.6)


def test_the_csv_has_a_column_group_per_compare_baseline():
    from effbench.results.store import Results, load
    r = load(DATA / "stores" / "v1-before-typed-records.jsonl").records[0]
    comp = Comparison(baseline="x", speedup=0.5, ci=(0.4, 0.6), method="paired")
    frame = Results(records=[r.replace(comparisons={"runtime:torch": comp})]).to_frame()
    assert frame.loc[0, "comparisons.runtime:torch.speedup"] == 0.5
    assert frame.loc[0, "comparisons.runtime:torch.baseline"] == "x"
    assert "comparisons.runtime:torch.speedup" not in Results(records=[r]).to_frame().columns
