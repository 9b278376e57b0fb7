"""The load scenarios outside their engines: the suite grammar and its errors, the typed record sections and
their merge over rounds, the gate on max_qps, the report's load section, and `effbench run` end to end."""
from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest
from ebrecords import make
from ebtest import DATA, run_cli

from effbench.config.suite import load_suite
from effbench.errors import UserError
from effbench.gate import compare
from effbench.measure.stats import over_rounds, with_floor
from effbench.results.merge import merge_rounds
from effbench.results.record import Offline, Record, Server
from effbench.results.store import Store, load
from effbench.scenarios.plan import OFFLINE, SERVER, parse_scenario

HEAD = "name: s\nmodels: [{id: m, source: {builtin: mlp}}]\n"


def suite_with(tmp_path, scenarios: str):
    p = tmp_path / "s.yaml"
    p.write_text(HEAD + f"scenarios: {scenarios}\n")
    return load_suite(p)


# ------------------------------------------------------------------------------ grammar
def test_scenarios_with_options_expand_to_cells(tmp_path):
    s = suite_with(tmp_path, "[single-stream, {offline: {queries: 256, streams: 2}}, "
                             "{server: {latency_bound_ms: 20, percentile: 99}}]")
    assert [c.cell_id.rsplit("/", 1)[1] for c in s.cells()] == ["single-stream", "offline", "server"]
    assert s.scenario(SERVER).settings["latency_bound_ms"] == 20.0
    assert s.scenario(SERVER).settings["queries"] == 1000  # a default
    assert s.scenario(OFFLINE).options == {"queries": 256, "streams": 2}
    assert parse_scenario("offline").options == {} and parse_scenario({"offline": None}).name == OFFLINE


def test_scenario_options_change_the_config_hash_but_not_old_ones(tmp_path):
    a = suite_with(tmp_path, "[single-stream, {server: {latency_bound_ms: 20}}]")
    b = suite_with(tmp_path, "[single-stream, {server: {latency_bound_ms: 30}}]")
    c = suite_with(tmp_path, "[single-stream]")
    ha, hb, hc = ({x.cell_id: s.config_hash(x) for x in s.cells()} for s in (a, b, c))
    ss, sv = "m/fp32/onnxruntime/b1/single-stream", "m/fp32/onnxruntime/b1/server"
    assert ha[ss] == hb[ss] == hc[ss] and ha[sv] != hb[sv]


@pytest.mark.parametrize("scenarios,field,needle", [
    ("[server]", "scenarios[0]", "needs latency_bound_ms"),
    ("[{server: {percentile: 99}}]", "scenarios[0].server", "needs latency_bound_ms"),
    ("[{server: {latency_bound_ms: 0}}]", "scenarios[0].server.latency_bound_ms", "positive number"),
    ("[{server: {latency_bound_ms: fast}}]", "scenarios[0].server.latency_bound_ms", "positive number"),
    ("[{server: {latency_bound_ms: 20, percentile: 100}}]", "scenarios[0].server.percentile", "below 100"),
    ("[{server: {latency_bound_ms: 20, latency: 3}}]", "scenarios[0].server.latency", "unknown key"),
    ("[{server: {latency_bound_ms: 20, queries: 50}}]", "scenarios[0].server.queries", "from 100"),
    ("[{offline: {queries: -1}}]", "scenarios[0].offline.queries", "from 1 to"),
    ("[{offline: {streams: 1.5}}]", "scenarios[0].offline.streams", "whole number"),
    ("[{offline: 3}]", "scenarios[0].offline", "mapping"),
    ("[{offline: {}, server: {latency_bound_ms: 3}}]", "scenarios[0]", "one-key mapping"),
    ("[multi-streams]", "scenarios[0]", "unknown scenario 'multi-streams' (did you mean 'multi-stream'?)"),
    ("[{multi-stream: {samples_per_query: 0}}]", "scenarios[0].multi-stream.samples_per_query", "from 1"),
    ("[{multi-stream: {samples_per_query: 8.5}}]", "scenarios[0].multi-stream.samples_per_query", "whole number"),
    ("[{multi-stream: {percentile: 100}}]", "scenarios[0].multi-stream.percentile", "below 100"),
    ("[{multi-stream: {sample_per_query: 8}}]", "scenarios[0].multi-stream.sample_per_query",
     "did you mean 'samples_per_query'?"),
    ("[{multi-stream: {min_duration_s: 90}}]", "scenarios[0].multi-stream.max_duration_s",
     "below min_duration_s"),
    ("[{multi-stream: {max_duration_s: -1}}]", "scenarios[0].multi-stream.max_duration_s", "positive number"),
    ("[{multi-stream: 8}]", "scenarios[0].multi-stream", "mapping"),
    ("[{single-stream: {loadgen: yes please}}]", "scenarios[0].single-stream.loadgen", "true or false"),
    ("[{single-stream: {loadgen: 1}}]", "scenarios[0].single-stream.loadgen", "true or false"),
    ("[{single-stream: {queries: 0}}]", "scenarios[0].single-stream.queries", "from 1"),
    ("[{single-stream: {load_gen: false}}]", "scenarios[0].single-stream.load_gen", "did you mean 'loadgen'?"),
    ("[[offline]]", "scenarios[0]", "a name or a one-key mapping"),
    ("[offline, {offline: {queries: 8}}]", "scenarios[1]", "duplicate entry 'offline'"),
])
def test_bad_scenarios_are_one_line_errors_with_field_and_fix(tmp_path, scenarios, field, needle):
    with pytest.raises(UserError) as e:
        suite_with(tmp_path, scenarios)
    line = e.value.one_line()
    assert e.value.field == field and needle in line and e.value.line == 3 and e.value.fix, line


@pytest.mark.spawns
def test_a_bad_scenario_exits_2_with_one_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(HEAD + "scenarios: [{server: {latency_bound_ms: -5}}]\n")
    res = run_cli("validate", str(p))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "latency_bound_ms" in res.stderr


# ------------------------------------------------------------------------------ records and rounds
SERVER_ID = "m/fp32/onnxruntime/b1/server"
OFFLINE_ID = "m/fp32/onnxruntime/b32/offline"


def server_round(rnd: int, max_qps: float, *, cell_id: str = SERVER_ID, config_hash: str = "h") -> Record:
    curve = [(max_qps / 2, 3.0), (max_qps, 9.0), (max_qps * 1.3, 40.0)]
    return make(cell_id, config_hash=config_hash, round=rnd, rounds=5, samples_ms=[1.0, 2.0, 9.0],
                server={"max_qps": max_qps, "latency_bound_ms": 10.0, "percentile": 99.0, "percentile_ms": 9.0 + rnd,
                        "queries": 1000, "curve": curve, "early_stopping": {"passed": True},
                        "probes": [{"offered_qps": q, "percentile_ms": v} for q, v in curve]})


def test_server_and_offline_sections_round_trip_and_refuse_bad_fields():
    r = server_round(0, 100.0)
    assert isinstance(r.server, Server) and r.server.curve[1] == (100.0, 9.0)
    assert Record.from_json(r.to_json()) == r
    o = make(OFFLINE_ID, offline={"samples_per_s": 5000.0, "queries": 256, "batch_size": 32, "future": 1})
    assert isinstance(o.offline, Offline) and o.offline.extra == {"future": 1}
    assert Record.from_json(o.to_json()) == o
    line = r.to_json()
    line["server"]["curve"] = [[1.0]]
    with pytest.raises(ValueError, match=r"server\.curve\[0\] must be a list of 2"):
        Record.from_json(line)
    line["server"] = {"max_qps": 3.0}
    with pytest.raises(ValueError, match=r"server\.latency_bound_ms is missing"):
        Record.from_json(line)


def test_rounds_merge_max_qps_and_samples_per_s_with_a_ci_over_rounds():
    values = [100.0, 104.0, 96.0, 101.0, 99.0]
    recs = [server_round(i, q) for i, q in enumerate(values)]
    recs += [make(OFFLINE_ID, round=i, rounds=3, offline={"samples_per_s": v, "queries": 256, "passes": 2})
             for i, v in enumerate([5000.0, 5200.0, 4900.0])]
    merged = {r.cell_id: r for r in merge_rounds(recs)}
    s = merged[SERVER_ID].server
    assert s.max_qps == 100.0 and s.round_max_qps == tuple(values)
    assert s.max_qps_ci[0] < 100.0 < s.max_qps_ci[1] and s.ci_scope == "between rounds"
    assert s.percentile_ms == 9.0 + values.index(100.0)  # the figures at the peak: the median round's
    assert len(s.curve) == 15 and len(s.probes) == 15 and {p["round"] for p in s.probes} == set(range(5))
    o = merged[OFFLINE_ID].offline
    assert o.samples_per_s == 5000.0 and o.ci[0] < 5000.0 < o.ci[1] and o.passes == 6
    assert o.round_samples_per_s == (5000.0, 5200.0, 4900.0)


def test_a_round_without_a_peak_is_said():
    recs = [server_round(0, 100.0), server_round(1, 110.0),
            make(SERVER_ID, round=2, rounds=3, server={"max_qps": None, "latency_bound_ms": 10.0,
                                                       "reason": "no rate met the bound"})]
    s = merge_rounds(recs)[0].server
    assert s.max_qps == pytest.approx(105.0) and "1 of 3 rounds found no rate" in s.reason


def test_a_round_without_a_peak_is_said_when_only_one_round_found_one():
    """The note used to be dropped when one round alone found a peak (no CI over one value)."""
    recs = [server_round(0, 100.0),
            make(SERVER_ID, round=1, rounds=2, server={"max_qps": None, "latency_bound_ms": 10.0,
                                                       "reason": "no rate met the bound"})]
    s = merge_rounds(recs)[0].server
    assert s.max_qps == 100.0 and s.reason and "1 of 2 rounds found no rate within the bound" in s.reason


# ------------------------------------------------------------------------------ the gate
def test_a_drop_in_max_qps_regresses_and_noise_does_not(tmp_path):
    def store(name, factor, seed):
        import numpy as np
        rng = np.random.default_rng(seed)
        path = tmp_path / name / "results.jsonl"
        st = Store(path)
        for i in range(8):
            st.append(server_round(i, 100.0 * factor * float(rng.lognormal(0, 0.02)), config_hash=name))
        return load(path)
    base = store("base", 1.0, 1)
    rows = {r["metric"]: r for r in compare(base, store("slow", 0.7, 2)).rows}
    assert rows["server.max_qps"]["verdict"] == "regressed"
    rows = {r["metric"]: r for r in compare(base, store("same", 1.0, 3)).rows}
    assert rows["server.max_qps"]["verdict"] == "unchanged"


# ------------------------------------------------------------------------------ the report
def test_the_report_draws_latency_against_load_and_offline_bars(tmp_path):
    import re

    from effbench.report import load as load_section
    from effbench.report import write_report
    from effbench.report.html import unpack_figures
    recs = [server_round(i, q) for i, q in enumerate([100.0, 104.0, 96.0])]
    recs += [server_round(i, q, cell_id="m/int8/onnxruntime/b1/server") for i, q in enumerate([180.0, 190.0, 185.0])]
    recs += [make(OFFLINE_ID, round=i, rounds=2, offline={"samples_per_s": v, "queries": 256}) for i, v in
             enumerate([5000.0, 5100.0])]
    path = tmp_path / "store" / "results.jsonl"
    st = Store(path)
    for r in recs:
        st.append(r)
    write_report(load(path), tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="load"' in page and 'href="#load"' in page
    figs = unpack_figures(json.loads(re.search(r'id="eb-figures">(.*?)</script>', page, re.S).group(1)))
    server = next(f for k, f in figs.items() if k.startswith("fig-load-server"))
    offline = next(f for k, f in figs.items() if k.startswith("fig-load-offline"))
    for f in (server, offline):
        go.Figure(f)  # plotly accepts it
    lines = [t for t in server["data"] if t["mode"] == "lines+markers"]
    assert {t["name"] for t in lines} == {"fp32", "int8"} and len(lines) == 6  # a line per cell and round
    assert all(len(t["x"]) == 3 for t in lines) and sum(t["showlegend"] for t in lines) == 2
    stars = [t for t in server["data"] if t["mode"] == "markers"]
    assert sorted(t["x"][0] for t in stars) == [100.0, 185.0]
    assert server["layout"]["shapes"][0]["y0"] == 10.0  # the bound
    bar = offline["data"][0]
    assert bar["type"] == "bar" and bar["y"] == [5050.0] and bar["error_y"]["array"][0] > 0
    assert load_section.section([], {}) == ""


# ------------------------------------------------------------------------------ end to end
@pytest.mark.spawns
def test_effbench_run_measures_server_and_offline_cells(tmp_path, cache_dir):
    """A tiny suite through `effbench run`: offline and server cells in their own workers, their sections
    in the merged records, the report's load section."""
    p = tmp_path / "suite.yaml"
    p.write_text(f"""name: load
models:
  - id: tiny
    source: {{onnx: {DATA / 'models' / 'tiny.onnx'}}}
    dataset: {{npz: {DATA / 'models' / 'good.npz'}}}
precisions: [fp32, int8-dynamic]
runners: [{{name: onnxruntime, threads: 1}}]
batch_sizes: [4]
scenarios: [{{offline: {{queries: 100}}}}, {{server: {{latency_bound_ms: 50, queries: 700, min_duration_s: 0.2, max_time_s: 8}}}}]
devices: []
measure: {{warmup_s: 0.02, min_time_s: 0.05, max_time_s: 0.3, target_rel_ci: 0.05, rounds: 2}}
""")
    out = tmp_path / "out"
    res = run_cli("run", str(p), "-o", str(out), "--cache-dir", str(cache_dir), "--no-progress")
    assert res.returncode == 0, res.stderr
    merged = load(out).by_id()
    off = merged["tiny/fp32/onnxruntime/b4/offline"]
    assert off.ok and off.offline.queries == 100 and off.offline.batch_size == 4 and off.offline.passes >= 6
    assert off.throughput_ips in off.offline.round_samples_per_s
    assert len(off.offline.round_samples_per_s) == 2 and off.offline.ci_scope == "between rounds"
    # merged over the rounds: each round's figure kept, the median with Student's t on logs over them
    raw = sorted(load(out).raw, key=lambda x: x.round)
    rounds = [x for x in raw if x.cell_id == off.cell_id]
    est = over_rounds([x.offline.samples_per_s for x in rounds])
    assert off.offline.round_samples_per_s == tuple(x.offline.samples_per_s for x in rounds)
    assert (off.offline.samples_per_s, *off.offline.ci) == pytest.approx((est.value, est.lo, est.hi))
    assert off.offline.passes == sum(x.offline.passes for x in rounds)
    q8 = merged["tiny/int8-dynamic/onnxruntime/b4/offline"]
    q8_rounds = [x.comparison.speedup for x in raw if x.cell_id == q8.cell_id]  # samples/s, paired by cycle
    sp = with_floor(over_rounds(q8_rounds))
    assert q8.comparison.method == "paired" and q8.comparison.round_speedups == tuple(q8_rounds)
    assert (q8.comparison.speedup, *q8.comparison.ci) == pytest.approx((sp.value, sp.lo, sp.hi))
    srv = merged["tiny/int8-dynamic/onnxruntime/b4/server"]
    s = srv.server
    assert srv.ok and s.latency_bound_ms == 50.0 and s.percentile == 99.0 and s.max_batch == 4
    assert s.curve and s.probes and s.search
    lg = s.extra["loadgen"]  # every figure from MLPerf LoadGen's own logs, which stay beside the results
    assert lg["version"] and "not an MLPerf result" in lg["generator"] and (out / lg["summary"]).is_file()
    assert all((out / p["summary_path"]).is_file() for p in s.probes)
    if s.max_qps:  # on a machine that stalls for 50 ms every run could fail: then it says why
        assert s.percentile_ms <= 50.0 and s.early_stopping["met"] is True
        # each round's peak is a rate LoadGen called VALID; where the search says so, LoadGen called the run
        # at 1.3x that round's peak INVALID
        for rnd, peak in enumerate(s.round_max_qps):
            runs = [p for p in s.probes if p["round"] == rnd]
            assert any(p["valid"] and p["qps"] == peak for p in runs)
        if "INVALID" in (s.search or ""):
            assert any(not p["valid"] and abs(p["qps"] / s.round_max_qps[-1] - 1.3) < 0.05
                       for p in s.probes if p["round"] == len(s.round_max_qps) - 1)
    else:
        assert s.reason
    assert off.offline.extra["loadgen"]["version"] == lg["version"]
    # whether a figure is the generator's own limit is measured each time with a no-op system under test
    assert isinstance(off.offline.extra["loadgen"]["limited_by_generator"], bool)
    assert off.offline.extra["loadgen"]["noop_samples_per_s"] > off.offline.samples_per_s
    if s.max_qps:
        assert isinstance(lg["limited_by_generator"], bool) and "no-op" in lg["generator_check"]
    html = (out / "index.html").read_text()
    assert "MLPerf LoadGen" in html and 'href="loadgen/' in html
    assert srv.comparison.speedup is None and "max_qps" in srv.comparison.reason
    assert srv.energy.reason and not srv.projections
    assert 'id="load"' in (out / "index.html").read_text()
