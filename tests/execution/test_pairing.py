"""What a record says about its pairing: the whole `comparison` section of a paired round, each reason a
comparison has no number, the FP32 twin, the interleaving seed and the drift sentinel's verdict (issue 30:
fields a mutation tester could change unnoticed)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from effbench.config.suite import Cell
from effbench.execution.pairing import (
    DRIFT_THRESHOLD,
    drift_section,
    fp32_twin,
    group_seed,
    paired_comparison,
    unpaired_comparison,
)
from effbench.results.record import Comparison, Drift

CELL = Cell(model="m", variant="int8-static", precision="int8", method="static-qdq", runner="onnxruntime",
            runner_label="onnxruntime", threads=1, compile=False, batch_size=4, scenario="single-stream")
TWIN_ID = "m/fp32/onnxruntime/b4/single-stream"
NATIVE = SimpleNamespace(emulated=False)
SEED_RUN_A = 3034180332  # the first 4 bytes of sha256("run-a/0/m/ort"), little-endian


def test_a_paired_round_is_the_whole_comparison_section():
    fp32 = {"status": "ok", "block_ms": [2.0, 2.0, 2.2, math.nan, 2.0, 2.0, 2.0, 2.4]}
    member = {"status": "ok", "block_ms": [1.0, 1.0, 1.0, 1.0, 0.8, 1.0, 1.0, 1.0]}
    # FP32 / member per cycle: 2, 2, 2.2, 2.5, 2, 2, 2.4 (the NaN cycle dropped): median 2; the order-statistic CI
    # of 7 values is their whole range [2, 2.5], widened below to the +-2% floor
    assert paired_comparison(CELL, NATIVE, member, fp32) == Comparison(
        baseline=TWIN_ID, speedup=2.0, ci=(2.0 / 1.02, 2.5), ci_level=0.95, ci_scope="one moment (1 round)",
        ci_method="order statistics over 7 values of one worker, widened to the +-2% floor between runs",
        rounds=1, method="paired", cycles=7)


def test_each_comparison_without_a_number_says_why():
    member = {"status": "ok", "block_ms": [1.0, 1.0]}
    assert paired_comparison(CELL, SimpleNamespace(emulated=True), member, {"status": "ok", "block_ms": [2.0, 2.0]}) \
        == Comparison(baseline=TWIN_ID, reason="emulated: this precision runs as float kernels that emulate it, so "
                                               "its speed is not the speed of native kernels")
    assert paired_comparison(CELL, NATIVE, member, {"status": "unsupported", "reason": "no kernel"}) == Comparison(
        baseline=TWIN_ID, reason="the FP32 twin is unsupported: no kernel")
    assert paired_comparison(CELL, NATIVE, member, None) == Comparison(baseline=TWIN_ID,
                                                                       reason="no FP32 variant to compare with")
    never = {"status": "ok", "block_ms": [math.nan, math.nan]}  # the twin sat out every cycle
    assert paired_comparison(CELL, NATIVE, member, never) == Comparison(baseline=TWIN_ID,
                                                                        reason="no cycle timed both sides")
    assert unpaired_comparison(CELL, "why") == Comparison(baseline=TWIN_ID, reason="why")


def test_the_fp32_twin_and_the_interleaving_seed():
    twin = fp32_twin(CELL)
    assert (twin.variant, twin.precision, twin.method, twin.batch_size) == ("fp32", "fp32", None, 4)
    assert twin.cell_id == TWIN_ID
    seeds = {group_seed("run-a", r, w) for r in (0, 1) for w in ("m/ort", "n/ort")}
    assert len(seeds) == 4 and group_seed("run-a", 0, "m/ort") == group_seed("run-a", 0, "m/ort")
    assert group_seed("run-b", 0, "m/ort") != group_seed("run-a", 0, "m/ort")
    assert all(0 <= s < 2 ** 32 for s in seeds)  # numpy seeds: the first 4 bytes of a SHA-256
    assert group_seed("run-a", 0, "m/ort") == SEED_RUN_A  # stored runs can be replayed: the seed is stable


@pytest.mark.parametrize("change,flagged", [(0.09, False), (-0.09, False), (0.10, False), (0.11, True),
                                            (-0.11, True), (None, False)])
def test_drift_is_a_sentinel_change_beyond_ten_percent_either_way(change, flagged):
    sentinel = {"before_us": 16.0, "after_us": None if change is None else 16.0 * (1 + change), "change": change}
    assert drift_section(sentinel) == Drift(threshold=DRIFT_THRESHOLD, rounds=[sentinel],
                                            max_abs_change=None if change is None else abs(change), flagged=flagged)
    assert DRIFT_THRESHOLD == 0.10
