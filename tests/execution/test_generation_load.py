"""Generative offline and server through MLPerf LoadGen with token latencies: the server's grammar in MLPerf's
LLM form, what a generative cell cannot run and why, and (spawns) llama-tiny on torch end to end: LoadGen's
verdict per rate, TTFT and TPOT at the percentile, tokens/s offline paired vs FP32, logs beside the results."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from effbench.config.suite import load_suite
from effbench.errors import UserError
from effbench.execution.generation import GenerationGroups
from effbench.scenarios.plan import ScenarioError, parse_scenario

SUITE = """name: gl
models:
  - id: tiny
    source: {{builtin: llama-tiny}}
    task: generate
    generate: {{prompt_tokens: [16], new_tokens: 6, requests: 2, quality_positions: 32}}
precisions: [fp32, int4]
runners:
  - {{name: torch, threads: 1}}
scenarios: {scenarios}
devices: []
measure: {{rounds: 1, min_time_s: 0.3}}
"""
SERVER = "{server: {ttft_ms: 300, tpot_ms: 50, percentile: 90, queries: 100, min_duration_s: 0.2, max_time_s: 4}}"


def test_the_server_takes_ttft_and_tpot_bounds_in_mlperf_llm_form():
    c = parse_scenario({"server": {"ttft_ms": 2000, "tpot_ms": 100, "percentile": 99}})
    assert c.settings["ttft_ms"] == 2000 and c.settings["tpot_ms"] == 100 and "latency_bound_ms" not in c.settings
    assert parse_scenario({"server": {"latency_bound_ms": 20}}).settings["latency_bound_ms"] == 20
    with pytest.raises(ScenarioError, match="ttft_ms and tpot_ms go together"):
        parse_scenario({"server": {"ttft_ms": 2000}})
    with pytest.raises(ScenarioError, match="needs latency_bound_ms") as e:
        parse_scenario({"server": {"percentile": 99}})
    assert "ttft_ms: 2000" in e.value.fix


def test_a_suite_with_token_bounds_loads_and_a_bad_one_names_its_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(SUITE.format(scenarios=f"[single-stream, offline, {SERVER}]"))
    ids = {c.cell_id for c in load_suite(p).cells()}
    assert "tiny/int4/torch/p16/server" in ids and "tiny/fp32/torch/p16/offline" in ids
    p.write_text(SUITE.format(scenarios="[{server: {tpot_ms: 100}}]"))
    with pytest.raises(UserError) as e:
        load_suite(p)
    assert "ttft_ms and tpot_ms go together" in str(e.value) and "scenarios[0]" in str(e.value)


def test_a_generative_server_bounded_by_one_call_latency_is_refused_when_the_suite_loads(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(SUITE.format(scenarios="[{server: {latency_bound_ms: 20}}]"))
    with pytest.raises(UserError, match="its tokens need ttft_ms and tpot_ms") as e:
        load_suite(p)
    assert "scenarios[0].server" in str(e.value) and "add ttft_ms: 2000, tpot_ms: 100" in str(e.value)
    p.write_text(SUITE.format(scenarios=f"[offline, {SERVER}]"))
    suite = load_suite(p)
    groups = GenerationGroups(SimpleNamespace(suite=suite))
    assert all(groups._cannot(c) is None for c in suite.cells())


@pytest.mark.slow
def test_llama_tiny_offline_and_server_through_loadgen(tmp_path, cache_dir):
    from effbench.cli.app import main
    p = tmp_path / "s.yaml"
    p.write_text(SUITE.format(scenarios=f"[{{offline: {{queries: 16, batch_sizes: [1, 2]}}}}, {SERVER}]"))
    out = tmp_path / "out"
    assert main(["run", str(p), "-o", str(out), "--cache-dir", str(cache_dir), "--no-progress"]) == 0
    recs = {json.loads(ln)["cell_id"]: json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()}
    for prec in ("fp32", "int4"):
        off, srv = recs[f"tiny/{prec}/torch/p16/offline"], recs[f"tiny/{prec}/torch/p16/server"]
        assert off["status"] == "ok" and srv["status"] == "ok", (off["reason"], srv["reason"])
        # offline: LoadGen's tokens/s is its requests/s x the forced output length
        o = off["offline"]
        assert o["samples_per_s"] > 0 and o["passes"] == 3
        assert o["output_tokens_per_s"] == pytest.approx(6 * o["samples_per_s"], rel=0.02)
        assert all(r["valid"] for r in o["loadgen"]["runs"]), o["loadgen"]["runs"]
        # the batch sweep: each size run 3 times; the figure is the size with the most output tokens/s
        sweep = {x["batch"]: x for x in o["batch_sweep"]}
        assert sorted(sweep) == [1, 2] and all(x["runs"] == 3 for x in sweep.values())
        best = max(sweep.values(), key=lambda x: x["output_tokens_per_s"])
        assert o["batch_size"] == best["batch"] and o["output_tokens_per_s"] == best["output_tokens_per_s"]
        assert o["batch_unsupported"] == {}
        assert off["generation"]["speedup_vs_fp32"] or prec == "fp32"
        # server: every rate LoadGen judged is kept, with TTFT and TPOT at p90 against their bounds
        s = srv["server"]
        assert s["latency_bound_ms"] == 300 and s["tpot_bound_ms"] == 50 and s["percentile"] == 90
        assert s["probes"] and all(isinstance(x["valid"], bool) for x in s["probes"])
        assert all(x["ttft_met"] is not None and x["ttft_ms"] is not None for x in s["probes"])
        if s["max_qps"]:
            best = max((x for x in s["probes"] if x["valid"]), key=lambda x: x["qps"])
            assert best["qps"] == s["max_qps"] and best["ttft_ms"] <= 300 and best["tpot_ms"] <= 50
            assert s["tokens"]["ttft_ms"]["p90"] == s["percentile_ms"]
        else:
            assert s["reason"]
        for sec in (o, s):    # LoadGen's own logs, beside the results, linked relative to the output folder
            assert (out / sec["loadgen"]["summary"]).exists() and sec["loadgen"]["summary"].startswith("loadgen/")
        g = srv["generation"]
        assert g["scenario"] == "server" and "one request at a time" in g["serving"] and g["concurrency"] == 1
        assert g["kernel"]["precision"] == prec and srv["energy"]["reason"]
    speedup = recs["tiny/int4/torch/p16/offline"]["generation"]["speedup_vs_fp32"]["output_tokens_per_s"]
    assert speedup["method"] == "paired" and speedup["speedup"] > 0
    assert Path(out / "loadgen" / "tiny_torch_server" / "round-0").is_dir()
    md = (out / "summary.md").read_text()
    assert "### Generation under load" in md and "VALID" in md
