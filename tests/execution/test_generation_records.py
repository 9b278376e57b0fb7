"""Generative suites (task: generate): the schema and its one-line errors, cell ids with the prompt length,
the records' generation section merged over rounds, the report's Generation section, the gate's rules;
and (slow) llama-tiny end to end on every runtime."""
import importlib.util
import json

import pytest
from ebtest import ROOT, run_cli

from effbench.config.suite import load_suite
from effbench.errors import UserError
from effbench.results.merge import merge_rounds
from effbench.results.record import Cell, Comparison, Generation, Latency, Record

TINY = """name: t
models:
  - id: tiny
    source: {builtin: llama-tiny}
    task: generate
    generate: {prompt_tokens: [16, 64], new_tokens: 8}
precisions: [fp32, int4]
runners:
  - {name: torch, threads: 1}
  - {name: llamacpp, threads: 1, options: {gguf_type: Q4_1}}
  - {name: onnxruntime-genai, threads: 1, options: {accuracy_level: 1}}
scenarios: [single-stream, offline]
"""


def _suite(tmp_path, text):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return load_suite(p)


def test_prompt_lengths_are_cells_with_the_prompt_in_their_id(tmp_path):
    suite = _suite(tmp_path, TINY)
    ids = {c.cell_id for c in suite.cells()}
    assert len(ids) == 2 * 2 * 3 * 2
    assert "tiny/int4/llamacpp-gguf_type=Q4_1/p64/single-stream" in ids
    assert "tiny/fp32/onnxruntime-genai-accuracy_level=1/p16/offline" in ids
    cell = next(c for c in suite.cells() if c.prompt_tokens == 16)
    assert cell.batch_size == 1 and Cell.from_json(cell.to_json()) == cell
    # a classifier cell's id and JSON (so its config hash) are as before
    clf = Cell(model="m", variant="fp32", precision="fp32", runner="torch", runner_label="torch", batch_size=4)
    assert clf.cell_id == "m/fp32/torch/b4/single-stream" and "prompt_tokens" not in clf.to_json()


@pytest.mark.parametrize("model, options, fragment", [
    ("source: {builtin: llama-tiny}", "", "add task: generate"),
    ("source: {builtin: mlp}\n    task: generate", "", "task: generate needs a decoder LLM source"),
    ("source: {builtin: llama-tiny}\n    task: generate\n    generate: {new_tokens: 1}", "", "new_tokens"),
    ("source: {builtin: llama-tiny}\n    task: generate\n    generate: {prompt: [8]}", "", "unknown key 'prompt'"),
    ("source: {builtin: lama-tiny}\n    task: generate", "", "did you mean 'llama-tiny'"),
    ("source: {hf: nowhere}\n    task: generate", "", "model folder not found"),
    ("source: {builtin: llama-tiny}\n    task: generate", "options: {accuracy: 4}", "unknown option 'accuracy'"),
    ("source: {builtin: llama-tiny}\n    task: generate", "options: {accuracy_level: 7}", "runners[0].options"),
])
def test_mistakes_are_one_line_with_file_and_field(tmp_path, model, options, fragment):
    text = (f"name: s\nmodels:\n  - id: m\n    {model}\nprecisions: [fp32]\n"
            f"runners:\n  - {{name: onnxruntime-genai, threads: 1{', ' + options if options else ''}}}\n")
    with pytest.raises(UserError) as e:
        _suite(tmp_path, text)
    line = e.value.one_line()
    assert fragment in line and "s.yaml:" in line and "\n" not in line


def test_a_missing_llm_extra_names_it(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    with pytest.raises(UserError) as e:
        _suite(tmp_path, TINY)
    assert "llama-cpp-python" in e.value.one_line() and "pip install -e .[llm]" in e.value.one_line()


def _round(rnd: int, ttft: float, tps: float, speedup: float | None) -> Record:
    cell = Cell(model="m", variant="int4", precision="int4", runner="torch", runner_label="torch", batch_size=1,
                prompt_tokens=16)
    comp = None if speedup is None else Comparison(baseline="m/fp32/torch/p16/single-stream", speedup=speedup,
                                                   ci=(speedup * 0.9, speedup * 1.1), rounds=1, method="paired")
    gen = Generation(prompt_tokens=16, new_tokens=8, requests=2, ttft_ms=ttft, tpot_ms=1000 / tps,
                     decode_tokens_per_s=tps, round_values={"ttft_ms": [ttft], "decode_tokens_per_s": [tps]},
                     itl_ms={"p50": 1.0, "p99": 2.0 + rnd}, decode_bytes_per_token=1000,
                     bandwidth_bytes_per_s=1e6 * (rnd + 1),
                     speedup_vs_fp32={"decode_tokens_per_s": comp.to_json()} if comp else {})
    return Record(cell_id=cell.cell_id, config_hash="h", status="ok", cell=cell, round=rnd, rounds=3,
                  latency_ms=Latency(median=10.0), samples_ms=(10.0,), generation=gen)


def test_generation_merges_over_rounds_with_a_ci_and_old_records_still_load():
    merged, = merge_rounds([_round(0, 10.0, 100.0, 2.0), _round(1, 12.0, 110.0, 2.2), _round(2, 11.0, 90.0, 1.8)])
    g = merged.generation
    assert g.ttft_ms == 11.0 and g.ttft_ms_ci[0] < 11.0 < g.ttft_ms_ci[1] and g.ci_scope == "between rounds"
    assert g.decode_tokens_per_s == 100.0 and g.round_values["decode_tokens_per_s"] == [100.0, 110.0, 90.0]
    assert g.requests == 6 and g.itl_ms["p99"] == 3.0
    assert g.bandwidth_bytes_per_s == 2e6 and g.bandwidth_utilization == pytest.approx(100.0 * 1000 / 2e6)
    sp = g.speedup_vs_fp32["decode_tokens_per_s"]
    assert sp["speedup"] == 2.0 and sp["rounds"] == 3 and sp["ci"][0] < 2.0 < sp["ci"][1]
    again = Record.from_json(json.loads(json.dumps(merged.to_json())))
    assert again.generation == g
    old = merged.to_json()
    old.pop("generation")
    old["cell"].pop("prompt_tokens")
    assert Record.from_json(old).generation is None


def test_report_has_a_generation_section_and_the_gate_its_rules(tmp_path):
    from effbench.gate.rules import DEFAULT_RULES
    from effbench.report import write_report
    from effbench.results.store import Store, load
    store = Store(tmp_path / "results.jsonl")
    for r in merge_rounds([_round(0, 10.0, 100.0, 2.0), _round(1, 12.0, 110.0, 2.2)]):
        store.append(r)
    paths = write_report(load(store.path), tmp_path / "report")
    md = paths["markdown"].read_text()
    assert "## Generation" in md and "| m | torch | int4 | 16 |" in md
    assert 'id="generation"' in paths["html"].read_text()
    assert {"ttft_ms", "tpot_ms", "decode_tokens_per_s"} <= {r.metric for r in DEFAULT_RULES}


@pytest.mark.slow
def test_llama_tiny_end_to_end_on_every_runtime(tmp_path, cache_dir):
    out = tmp_path / "run"
    p = run_cli("run", str(ROOT / "suites" / "llm-tiny.yaml"), "-o", str(out), "--cache-dir", str(cache_dir),
                "--rounds", "2", timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    records = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    by_id = {}
    for r in records:
        by_id.setdefault(r["cell_id"], []).append(r)
    assert len(by_id) == 3 * 4 * 2
    for runner in ("torch", "llamacpp", "onnxruntime-genai"):
        for prec in ("fp32", "int4"):
            rounds = by_id[f"llama-tiny/{prec}/{runner}/p64/single-stream"]
            assert len(rounds) == 2 and all(r["status"] == "ok" for r in rounds), rounds[0].get("reason")
            g = rounds[0]["generation"]
            assert g["ttft_ms"] > 0 and g["tpot_ms"] > 0 and g["new_tokens"] == 8 and g["prompt_tokens"] == 64
            assert g["kv_cache_bytes_analytic"] == 2 * 2 * 2 * 16 * 72 * g["kernel"]["kv_bytes_per_element"]
            assert g["kv_cache_bytes_measured"] and g["bandwidth_utilization"] > 0
            if prec == "int4":
                assert g["kernel"]["quantization"] == "weight-only"
                assert g["speedup_vs_fp32"]["tpot_ms"]["method"] == "paired"
                assert 0 <= g["quality"]["next_token_agreement"] <= 1 and g["quality"]["perplexity"] is None
    # bf16 on ORT GenAI's CPU provider: unsupported with the runtime's reason, never a crash
    ort_bf16 = by_id["llama-tiny/bf16/onnxruntime-genai/p16/single-stream"][0]
    assert ort_bf16["status"] in ("ok", "unsupported") and (ort_bf16["status"] == "ok" or ort_bf16["reason"])
    md = (out / "summary.md").read_text()
    assert "## Generation" in md
    merged = run_cli("report", str(out / "results.jsonl"), "-o", str(tmp_path / "rep"))
    assert merged.returncode == 0


@pytest.mark.spawns
def test_a_broken_hf_folder_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "s.yaml").write_text("name: b\nmodels:\n  - id: m\n    source: {hf: model}\n    task: generate\n"
                                     "runners: [{name: torch}]\ndevices: []\n")
    p = run_cli("run", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "out"), timeout=300)
    assert p.returncode == 2
    line = p.stderr.strip().splitlines()[-1]
    assert "models[0].source.hf" in line and "config.json" in line and "Traceback" not in p.stderr
