"""Single-stream's LoadGen run and the multi-stream scenario: their grammar and plan, the record sections and
their merge over rounds, real LoadGen runs whose every figure must be the one its own summary log gives,
`effbench run` end to end on the builtin mlp, and stores from before these sections."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from ebrecords import make
from ebtest import DATA, run_cli

from effbench.measure.stats import over_rounds
from effbench.results.merge import merge_rounds
from effbench.results.record import Record
from effbench.results.scenarios import MultiStream, SingleStream
from effbench.results.store import Store, load
from effbench.scenarios.plan import MULTI_STREAM, MULTI_STREAM_CYCLES, batch_shapes, load_plan, parse_scenario
from effbench.scenarios.worker import _multi_stream_figures, single_stream_loadgen

BUDGET = {"min_time_s": 0.3, "max_time_s": 2.0}
W = np.random.default_rng(0).random((64, 64), dtype=np.float32)


def numpy_call(batch: int):
    x = np.ones((batch, 64), dtype=np.float32)
    return lambda: (x @ W).sum()


def summary_figures(path: str | Path) -> dict:
    """What LoadGen's summary says, read here with a regex of its own (not effbench's parser): the headline
    percentile line (ms), every early-stopping estimate (ms), the verdict."""
    text = Path(path).read_text()
    head = re.search(r"^(\d+(?:\.\d+)?)th percentile latency \(ns\)\s*:\s*(\d+)", text, re.MULTILINE)
    es = {f"p{float(p):g}": int(ns) / 1e6 for p, ns in
          re.findall(r"Early stopping (\d+(?:\.\d+)?)th percentile estimate: (\d+)", text)}
    return {"percentile": float(head[1]), "percentile_ms": int(head[2]) / 1e6, "early_stopping_ms": es,
            "verdict": re.search(r"^Result is : (\w+)", text, re.MULTILINE)[1]}


# ------------------------------------------------------------------------------ grammar and plan
def test_multi_stream_defaults_plan_and_batch_shapes():
    c = parse_scenario("multi-stream")
    assert c.name == MULTI_STREAM and c.options == {}
    s = c.settings
    assert (s["samples_per_query"], s["percentile"], s["queries"], s["max_duration_s"]) == (8, 99.0, 662, 60.0)
    assert "min_duration_s" not in s  # the suite's measure.min_time_s decides
    plan = load_plan(c, BUDGET, 60.0)
    assert plan.target == "effbench.scenarios.worker:measure_load" and plan.logs and not plan.loop
    assert plan.options["min_duration_s"] == 0.3 and plan.payload(5.0) == {"options": plan.options}
    assert plan.timeout_s_per_member == 60.0 + MULTI_STREAM_CYCLES * (60.0 + 5)
    quick = load_plan(parse_scenario({"multi-stream": {"min_duration_s": 3}}), BUDGET, 60.0, quick=True)
    assert quick.options["queries"] == 662 and quick.options["min_duration_s"] == 0.2  # early stopping still holds
    # a query of 8 samples: calls of the cell's batch and the remainder; one padded call above 8
    assert [batch_shapes(MULTI_STREAM, s, b) for b in (1, 3, 4, 8, 16)] == [[1], [2, 3], [4], [8], [16]]
    assert batch_shapes(MULTI_STREAM, {"samples_per_query": 2}, 4) == [4]


def test_single_stream_runs_loadgen_by_default_and_can_leave_it_out():
    plan = load_plan(parse_scenario("single-stream"), BUDGET, 60.0)
    assert plan.loop and plan.logs and plan.target == "effbench.execution.tasks:measure_group"
    pay = plan.payload(7.0)
    assert pay["overhead_ns"] == 7.0 and pay["loadgen"]["loadgen"] is True
    assert pay["loadgen"]["percentile"] == 90.0 and pay["loadgen"]["queries"] == 256
    assert pay["loadgen"]["min_duration_s"] == 0.3          # the suite's min_time_s
    # its LoadGen runs fit in the worker's own timeout: no longer wait for a hung worker
    assert plan.timeout_s_per_member == 60.0 and pay["loadgen"]["timeout_s_per_member"] == 60.0
    off = load_plan(parse_scenario({"single-stream": {"loadgen": False}}), BUDGET, 60.0)
    assert off.payload(7.0) == {"overhead_ns": 7.0} and not off.logs and off.timeout_s_per_member == 60.0
    # options given are part of the cell's config hash; the defaults are not (old stores keep their hashes)
    assert parse_scenario({"single-stream": {"loadgen": False}}).options == {"loadgen": False}
    assert parse_scenario("single-stream").options == {}


# ------------------------------------------------------------------------------ real LoadGen runs
def test_single_stream_loadgen_figures_are_its_summarys(tmp_path):
    members = [{"key": "fp32/b1", "batch_size": 1}, {"key": "fp32/b4", "batch_size": 4},
               {"key": "int8/b1", "batch_size": 1}]
    calls = {"fp32/b1": numpy_call(1), "fp32/b4": numpy_call(4), "int8/b1": numpy_call(1)}
    opts = {**parse_scenario("single-stream").settings, "queries": 100, "min_duration_s": 0.05}
    out = single_stream_loadgen(calls, members, opts, seed=3, log_dir=str(tmp_path / "loadgen" / "g"))
    assert set(out) == set(calls)
    assert "one sample" in out["fp32/b4"]["single_stream"]["reason"]
    for key in ("fp32/b1", "int8/b1"):
        s = SingleStream.from_json(out[key]["single_stream"])
        summary = tmp_path / s.loadgen["summary"]
        assert s.loadgen["summary"].startswith("loadgen/") and summary.is_file()
        assert (tmp_path / s.loadgen["detail"]).is_file()
        lg = summary_figures(summary)
        assert (s.percentile, s.percentile_ms, s.verdict) == (90.0, lg["percentile_ms"], lg["verdict"]) == \
            (lg["percentile"], lg["percentile_ms"], "VALID")
        assert s.early_stopping_ms == lg["early_stopping_ms"]["p90"] and s.early_stopping_estimates_ms == \
            lg["early_stopping_ms"]
        assert s.early_stopping_met is True and s.queries >= 100 and s.p99_ms >= s.percentile_ms
        assert s.loadgen["version"].startswith("6.") and s.loadgen["seeds"]["schedule_rng_seed"]
        assert "LoadGen 6." in s.loadgen["generator"] and "not an MLPerf result" in s.loadgen["generator"]


def test_single_stream_loadgen_ends_within_the_workers_timeout(tmp_path):
    import time

    from effbench.scenarios.worker import TIMEOUT_MARGIN_S, _process_age_s
    opts = {**parse_scenario("single-stream").settings, "queries": 10**6, "min_duration_s": 0.05}
    age = _process_age_s()
    assert age is not None and age > 0
    # a timeout that leaves this process about 1.5 s more: the run is cut there, and LoadGen says INVALID
    per_member = age + TIMEOUT_MARGIN_S + 1.5
    t0 = time.monotonic()
    out = single_stream_loadgen({"a": numpy_call(1)}, [{"key": "a", "batch_size": 1}],
                                {**opts, "timeout_s_per_member": per_member}, 0, str(tmp_path))
    s = SingleStream.from_json(out["a"]["single_stream"])
    assert time.monotonic() - t0 < 5 and s.verdict == "INVALID" and s.loadgen["settings"]["max_duration_ms"] < 1600
    assert summary_figures(tmp_path / s.loadgen["summary"])["verdict"] == "INVALID"
    late = single_stream_loadgen({"a": numpy_call(1)}, [{"key": "a", "batch_size": 1}],
                                 {**opts, "timeout_s_per_member": 1.0}, 0, str(tmp_path / "late"))
    assert "timeout left too little time" in late["a"]["single_stream"]["reason"]


def test_single_stream_loadgen_failure_costs_only_its_section(tmp_path):
    runs = [0]

    def flaky() -> None:
        runs[0] += 1
        if runs[0] > 5:
            raise ValueError("boom")
    opts = {**parse_scenario("single-stream").settings, "queries": 50, "min_duration_s": 0.01}
    out = single_stream_loadgen({"a": flaky}, [{"key": "a", "batch_size": 1}], opts, 0, str(tmp_path))
    assert "the LoadGen run failed" in out["a"]["single_stream"]["reason"] and "boom" in out["a"]["single_stream"]["reason"]


def test_multi_stream_runs_are_paired_by_cycle_and_read_from_summaries(tmp_path):
    opts = {**parse_scenario("multi-stream").settings, "min_duration_s": 0.05}
    calls = {"fp32/b1": [{1: numpy_call(1)}], "int8/b4": [{4: numpy_call(4)}]}
    members = {"fp32/b1": {"batch_size": 1}, "int8/b4": {"batch_size": 4}}
    out = _multi_stream_figures(calls, members, opts, seed=1, log_dir=str(tmp_path / "loadgen" / "g"), threads=2)
    for key, per_query in (("fp32/b1", 8), ("int8/b4", 2)):
        res = out[key]
        m = MultiStream.from_json(res["multi_stream"])
        assert m.runs == MULTI_STREAM_CYCLES == len(res["block_ms"]) == len(m.loadgen["runs"])
        assert m.calls_per_query == per_query and m.samples_per_query == 8 and m.percentile == 99.0
        runs = [summary_figures(tmp_path / r["summary"]) for r in m.loadgen["runs"]]
        # every run's figure and verdict as its own summary says; the paired blocks are those figures
        assert [r["percentile_ms"] for r in m.loadgen["runs"]] == [x["percentile_ms"] for x in runs] == res["block_ms"]
        assert [r["verdict"] for r in m.loadgen["runs"]] == [x["verdict"] for x in runs]
        assert all((tmp_path / r["detail"]).is_file() for r in m.loadgen["runs"])
        # the round's figure is the median run's, every figure of it from that one summary
        mid = summary_figures(tmp_path / m.loadgen["summary"])
        assert m.percentile_ms == mid["percentile_ms"] == sorted(res["block_ms"])[1]
        assert m.early_stopping_ms == mid["early_stopping_ms"]["p99"]
        assert m.verdict == ("VALID" if all(x["verdict"] == "VALID" for x in runs) else "INVALID")
        assert m.runs_valid == sum(x["verdict"] == "VALID" for x in runs) and m.queries >= 3 * 662
        assert m.ci and m.ci[0] <= m.percentile_ms <= m.ci[1]
        assert res["latency_ms"]["median"] > 0 and res["throughput_ips"] == pytest.approx(8 / (m.mean_ms / 1e3))
        assert "queries of 8 samples, p99" in m.loadgen["generator"]


# ------------------------------------------------------------------------------ records and rounds
MS_ID = "m/int8/onnxruntime/b1/multi-stream"
SS_ID = "m/int8/onnxruntime/b1/single-stream"


def test_stream_sections_round_trip_and_merge_over_rounds():
    ms = [make(MS_ID, round=i, rounds=3, multi_stream={
        "percentile_ms": v, "verdict": verdict, "runs": 3, "runs_valid": 3 if verdict == "VALID" else 2,
        "queries": 2000, "early_stopping_ms": v * 1.01, "loadgen": {"version": "6.0.17"}, "future": i})
        for i, (v, verdict) in enumerate([(2.0, "VALID"), (2.4, "INVALID"), (2.2, "VALID")])]
    assert Record.from_json(ms[0].to_json()) == ms[0] and ms[0].multi_stream.extra == {"future": 0}
    (m,) = merge_rounds(ms)
    est = over_rounds([2.0, 2.4, 2.2])
    s = m.multi_stream
    assert (s.percentile_ms, *s.ci) == pytest.approx((est.value, est.lo, est.hi)) and s.ci_scope == "between rounds"
    assert s.round_percentile_ms == (2.0, 2.4, 2.2) and s.round_verdicts == ("VALID", "INVALID", "VALID")
    assert s.verdict == "INVALID" and (s.runs, s.runs_valid, s.queries) == (9, 8, 6000)
    assert s.early_stopping_ms == pytest.approx(2.2 * 1.01)  # the median round's
    ss = [make(SS_ID, round=i, rounds=2, single_stream={"percentile_ms": v, "verdict": "VALID", "queries": 300})
          for i, v in enumerate([0.5, 0.7])]
    (one,) = merge_rounds(ss)
    assert one.single_stream.verdict == "VALID" and one.single_stream.round_percentile_ms == (0.5, 0.7)
    assert one.single_stream.queries == 600 and one.single_stream.ci
    no_run = [make("m/int8/onnxruntime/b4/single-stream", round=i, rounds=2,
                   single_stream={"reason": "LoadGen's single-stream query is one sample"}) for i in range(2)]
    (nr,) = merge_rounds(no_run)
    assert nr.single_stream.percentile_ms is None and "one sample" in nr.single_stream.reason
    with pytest.raises(ValueError, match="multi_stream.runs"):
        make(MS_ID, multi_stream={"runs": "three"})


def test_stores_from_before_the_stream_sections_still_load_and_report(tmp_path):
    from effbench.report import write_report
    old = DATA / "stores" / "v1-before-typed-records.jsonl"
    records, warnings = Store(old).records()
    assert records and not warnings
    assert all(r.single_stream is None and r.multi_stream is None for r in records)
    assert merge_rounds(records)
    # an offline record as stored before these sections, beside a new multi-stream one
    path = tmp_path / "s" / "results.jsonl"
    lines = [json.loads(x) for x in old.read_text().splitlines()]
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    st = Store(path)
    st.append(make(MS_ID, multi_stream={"percentile_ms": 2.0, "verdict": "VALID", "runs": 3, "runs_valid": 3,
                                        "samples_per_query": 8, "batch_size": 1, "calls_per_query": 8,
                                        "loadgen": {"generator": "LoadGen 6.0.17 (multi-stream ...)",
                                                    "summary": "loadgen/x/mlperf_log_summary.txt"}}))
    write_report(load(path), tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="load"' in page and "fig-load-multi-stream" in page
    assert "p99 2 ms per query of 8 samples" in page and 'href="loadgen/x/mlperf_log_summary.txt"' in page


# ------------------------------------------------------------------------------ end to end
@pytest.mark.spawns
def test_effbench_run_multi_stream_and_single_stream_loadgen_on_mlp(tmp_path, cache_dir):
    """The builtin mlp through `effbench run`: multi-stream and single-stream's LoadGen run in their
    workers, each round's figures those of LoadGen's own summaries (kept under loadgen/), merged over
    rounds, and the report's load section with LoadGen's version and settings and links to its logs."""
    p = tmp_path / "suite.yaml"
    p.write_text("""name: streams
models: [{id: mlp, source: {builtin: mlp}}]
precisions: [fp32, int8-dynamic]
runners: [{name: onnxruntime, threads: 1}]
batch_sizes: [1, 4]
scenarios: [{single-stream: {queries: 64}}, {multi-stream: {queries: 662, max_duration_s: 10}}]
devices: []
measure: {warmup_s: 0.02, min_time_s: 0.05, max_time_s: 0.3, target_rel_ci: 0.05, rounds: 2}
""")
    out = tmp_path / "out"
    res = run_cli("run", str(p), "-o", str(out), "--cache-dir", str(cache_dir), "--no-progress")
    assert res.returncode == 0, res.stderr
    store = load(out)
    merged = store.by_id()
    raw = [r for r in store.raw if r.ok]
    for r in raw:
        if r.multi_stream:
            m = r.multi_stream
            lg = summary_figures(out / m.loadgen["summary"])
            assert (m.percentile_ms, m.early_stopping_ms) == (lg["percentile_ms"], lg["early_stopping_ms"]["p99"])
            for run in m.loadgen["runs"]:
                s = summary_figures(out / run["summary"])
                assert (run["percentile_ms"], run["verdict"]) == (s["percentile_ms"], s["verdict"])
                assert (out / run["detail"]).is_file()
            assert m.calls_per_query == (8 if r.cell.batch_size == 1 else 2)
        if r.single_stream and r.cell.batch_size == 1:
            s, lg = r.single_stream, summary_figures(out / r.single_stream.loadgen["summary"])
            assert (s.percentile_ms, s.verdict, s.early_stopping_ms) == \
                (lg["percentile_ms"], lg["verdict"], lg["early_stopping_ms"]["p90"])
            assert (out / s.loadgen["detail"]).is_file()
    assert sum(1 for r in raw if r.multi_stream) == 8 and sum(1 for r in raw if r.single_stream) == 8
    ms = merged["mlp/int8-dynamic/onnxruntime/b1/multi-stream"]
    rounds = [r.multi_stream.percentile_ms for r in sorted(raw, key=lambda x: x.round) if r.cell_id == ms.cell_id]
    est = over_rounds(rounds)
    assert ms.multi_stream.round_percentile_ms == tuple(rounds)
    assert (ms.multi_stream.percentile_ms, *ms.multi_stream.ci) == pytest.approx((est.value, est.lo, est.hi))
    assert ms.multi_stream.verdict in ("VALID", "INVALID") and ms.multi_stream.runs == 2 * MULTI_STREAM_CYCLES
    assert ms.comparison.method == "paired"  # per cycle, the ratio of FP32's p99 per query to this one's
    ss = merged["mlp/fp32/onnxruntime/b1/single-stream"].single_stream
    assert ss.percentile == 90.0 and len(ss.round_percentile_ms) == 2 and ss.loadgen["version"]
    assert "one sample" in merged["mlp/fp32/onnxruntime/b4/single-stream"].single_stream.reason
    html = (out / "index.html").read_text()
    assert "fig-load-multi-stream" in html and "per query of 8 samples" in html
    assert html.count('href="loadgen/mlp_onnxruntime_multi-stream/') >= 4
    assert 'href="loadgen/mlp_onnxruntime_single-stream/' in html and "LoadGen 6." in html
    assert "not an MLPerf result" in html


@pytest.mark.spawns
def test_a_bad_multi_stream_option_exits_2_with_one_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\n"
                 "scenarios: [{multi-stream: {samples_per_query: 0}}]\n")
    res = run_cli("validate", str(p))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "samples_per_query" in res.stderr
