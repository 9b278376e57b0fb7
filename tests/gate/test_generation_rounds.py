"""A generative cell's gate rows are tested over rounds from the merged record's `generation.round_values`
(an A/B run's stores hold merged records only, so there are no per-round records to read)."""
from __future__ import annotations

from effbench.gate.plan import generation_rounds, plan_metric
from effbench.gate.rules import Rule
from effbench.results.record import Cell, Latency
from effbench.results.scenarios import Generation
from effbench.results.store import Record


def _rec(ttft: list[float]) -> Record:
    cell = Cell(model="m", variant="int4", precision="int4", runner="torch", runner_label="torch", batch_size=1,
                scenario="single-stream")
    gen = Generation(prompt_tokens=16, new_tokens=8, ttft_ms=sorted(ttft)[len(ttft) // 2],
                     round_values={"ttft_ms": ttft, "tpot_ms": [1.0]})
    return Record(cell_id="m/int4/torch/p16/single-stream", config_hash="x", status="ok", cell=cell, generation=gen,
                  latency_ms=Latency(median=sum(ttft) / len(ttft)))


def test_ttft_rows_are_tested_on_the_rounds_the_merged_record_keeps():
    base, new = _rec([10.0, 10.5, 9.8]), _rec([14.0, 14.2, 13.9])
    row = plan_metric(Rule("ttft_ms", 0.10), base.cell_id, base, new, None, None, 1.0)
    assert row.test == "mann-whitney-rounds" and row.x == [10.0, 10.5, 9.8] and row.y == [14.0, 14.2, 13.9]
    assert "3 vs 3 rounds" in row.notes and not any("one round per store" in n for n in row.notes)


def test_one_round_each_still_says_it_cannot_be_tested():
    base, new = _rec([10.0]), _rec([14.0])
    row = plan_metric(Rule("ttft_ms", 0.10), base.cell_id, base, new, None, None, 1.0)
    assert row.test == "none" and "one round per store: significance cannot be tested" in row.notes
    assert generation_rounds("ttft_ms", base.replace(generation=None)) == []
