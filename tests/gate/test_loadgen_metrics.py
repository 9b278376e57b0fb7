"""LoadGen's headline latencies can be gated: single-stream's 90th and multi-stream's 99th percentile."""
from __future__ import annotations

from effbench.gate.metrics import METRICS, metric_name
from effbench.gate.rules import DEFAULT_RULES, OPT_IN_RULES
from effbench.results.record import Cell, Latency
from effbench.results.scenarios import MultiStream, SingleStream
from effbench.results.store import Record


def test_stream_percentiles_are_read_from_their_sections_and_are_opt_in():
    cell = Cell(model="m", variant="fp32", precision="fp32", runner="ort", runner_label="ort", batch_size=1,
                scenario="multi-stream")
    rec = Record(cell_id="m/fp32/ort/b1/multi-stream", config_hash="x", status="ok", cell=cell,
                 latency_ms=Latency(median=1.0), single_stream=SingleStream(percentile_ms=0.7),
                 multi_stream=MultiStream(percentile_ms=2.5))
    assert METRICS["single_stream.percentile"].value(rec) == 0.7
    assert METRICS["multi_stream.percentile"].value(rec) == 2.5
    assert METRICS["multi_stream.percentile"].value(rec.replace(multi_stream=None)) is None
    assert metric_name("multi_stream.percentile_ms", "--rule") == "multi_stream.percentile"
    assert {r.metric for r in OPT_IN_RULES} >= {"single_stream.percentile", "multi_stream.percentile"}
    assert not {r.metric for r in DEFAULT_RULES} & {"single_stream.percentile", "multi_stream.percentile"}
