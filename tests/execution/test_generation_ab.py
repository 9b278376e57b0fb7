"""A/B mode (`effbench run SUITE --ab BASE`) for generative cells: each side's own generative worker, then the
same requests sent to both sessions in alternating order in one worker; the candidate's record keeps the
round's paired ratio for the gate."""
from __future__ import annotations

import pytest

from effbench.execution.generation import GenerationGroups, LlmArtifact, _with_paired
from effbench.models.llm import resolve_llm
from effbench.results.record import Latency
from effbench.workloads.worker import AB_MIN_PAIRS, measure_generation_pair

SUITE = """name: {name}
models:
  - id: tiny
    source: {{builtin: llama-tiny}}
    task: generate
    generate: {{prompt_tokens: [16], new_tokens: 4, requests: 2, quality_positions: 32}}
precisions: [int4]
runners: [{{name: torch, threads: 1}}]
devices: []
"""


def test_the_same_session_twice_pairs_near_one(cache_dir):
    model = resolve_llm("llama-tiny", cache_dir).to_json()
    side = {"runtime": "torch", "threads": 1, "options": {}, "model": model, "precision": "fp32"}
    out = measure_generation_pair([side, side], prompt_tokens=16, new_tokens=4, pairs=2, cache_dir=str(cache_dir))
    assert len(out["ratios"]) == AB_MIN_PAIRS          # at least this many pairs, whatever the suite's requests
    assert 0.5 < out["ratio"] < 2.0 and out["ttft_ratio"] > 0 and out["tpot_ratio"] > 0
    assert "alternating order" in out["method"]


def test_the_ratio_lands_on_the_candidates_record_only_when_it_ran():
    from ebrecords import make
    ok, failed = make("m/int4/torch/p16/single-stream"), make("m/int4/torch/p16/single-stream", status="failed")
    assert _with_paired(ok, {"ratio": 0.9}).paired_ratios == (0.9,)
    assert _with_paired(ok, None).paired_ratios == () and _with_paired(failed, {"ratio": 0.9}).paired_ratios == ()


@pytest.mark.spawns   # the run's provenance asks `uname`; no worker starts
def test_ab_sends_generative_cells_to_the_generative_groups(tmp_path, monkeypatch):
    """The A/B loop gives a generative cell each side's generative worker and the paired pass (no classifier
    variant is built for it): routing only, the workers replaced."""
    from effbench.execution import ab
    calls = []

    def prepare(self, index, progress):
        return LlmArtifact({"shape": {}, "reference": "test"})

    def do_group(self, rnd, cells, progress, paired=None):
        calls.append(("group", self.run.opts.out_dir.name, cells[0].cell_id, rnd, paired))
        rec = self.run.record(rnd, cells[0], status="ok", latency_ms=Latency(median=1.0))
        return [self.run.finish(rec, progress)]

    def pair_pass(self, rnd, cell, other, other_cell, progress):
        calls.append(("pair", cell.cell_id, rnd))
        return {"ratio": 1.0}

    monkeypatch.setattr(GenerationGroups, "prepare", prepare)
    monkeypatch.setattr(GenerationGroups, "do_group", do_group)
    monkeypatch.setattr(GenerationGroups, "pair_pass", pair_pass)
    monkeypatch.setattr("effbench.measure.speed.speed_index", lambda: None)
    for name in ("new", "base"):
        (tmp_path / f"{name}.yaml").write_text(SUITE.format(name=name))
    base, new, _ = ab.run_ab(tmp_path / "new.yaml", tmp_path / "base.yaml", out_dir=tmp_path / "out", rounds=2,
                             progress=False, cache_dir=tmp_path / "cache")
    cid = "tiny/int4/torch/p16/single-stream"
    assert [c for c in calls if c[0] == "pair"] == [("pair", cid, 0), ("pair", cid, 1)]
    groups = [c for c in calls if c[0] == "group"]
    assert [(g[1], g[3]) for g in groups] == [("base", 0), ("out", 0), ("base", 1), ("out", 1)]
    assert groups[1][4] == {cid: {"ratio": 1.0}} and groups[0][4] is None    # the ratio goes to the candidate
    assert len(base.records) == len(new.records) == 1
