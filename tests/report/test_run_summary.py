"""The table `effbench run` prints: the unstable mark sits on the absolute latency (with its rule under the
table), never on the status or the paired speedup, and the clear wins are named with their held-out quality."""
from __future__ import annotations

from effbench.cli.summary import LEGEND, summary_table
from effbench.results.record import Cell, Comparison, Latency, Quality, VariantInfo
from effbench.results.store import Record, Results

SPLIT = {"seed": 0, "calibration_samples": 10, "evaluation_samples": 10, "overlap": 0}


def _rec(variant: str, speedup: tuple[float, float, float] | None, *, unstable: bool = False,
         relative: float = 1.0, below: bool = False) -> Record:
    cell = Cell(model="m", variant=variant, precision="fp32" if variant == "fp32" else "int8", runner="ort",
                runner_label="ort", batch_size=1, scenario="single-stream")
    comp = None if speedup is None else Comparison(
        baseline="m/fp32/ort/b1/single-stream", speedup=speedup[0], ci=speedup[1:], ci_level=0.95, rounds=3,
        method="paired", ci_scope="between rounds")
    return Record(cell_id=f"m/{variant}/ort/b1/single-stream", config_hash="x", status="ok", cell=cell,
                  variant=VariantInfo(), comparison=comp, rounds=3, round_medians_ms=(1.0, 0.5, 1.5),
                  latency_ms=Latency(median=1.0, ci=(0.2, 3.0) if unstable else (0.95, 1.05), unstable=unstable,
                                     unstable_reason="round medians spread" if unstable else None),
                  quality=Quality(metric="top1", value=0.9 * relative, relative=relative, min_relative=0.99,
                                  below_floor=below, split=SPLIT))


def _line(text: str, cell: str) -> str:
    return next(line for line in text.splitlines() if cell in line and "│" in line)


def test_unstable_marks_the_latency_not_the_speedup_and_its_rule_is_stated():
    text = summary_table(Results(records=[_rec("fp32", None, unstable=True), _rec("int8", (1.9, 1.6, 2.2),
                                                                                   unstable=True)]))
    row = _line(text, "m/int8/")
    status = row.split("│")[2].strip()
    assert status == "ok"                        # not "ok unstable": the cell is fine, its absolute latency moved
    assert "1.90× [1.60–2.20]" in row and "~" not in row.split("│")[3]
    assert "[0.2, 3] !" in row
    assert LEGEND["!"].startswith("! unstable") and "+-10%" in text and "--rounds" in text
    assert "p99 from fewer than" not in text and "fewer threads (N)" not in text   # marks not shown: not explained
    assert "m/int8/ort/b1/single-stream: 1.90× [1.60–2.20], top1 1.000 of FP32 (held-out)" in text


def test_legend_explains_only_the_marks_the_table_shows():
    quiet = summary_table(Results(records=[_rec("fp32", None), _rec("int8", (1.9, 1.6, 2.2))]))
    assert "! unstable" not in quiet and "~ the speedup" not in quiet
    unclear = summary_table(Results(records=[_rec("fp32", None), _rec("int8", (1.1, 0.9, 1.3))]))
    assert "~ the speedup's CI contains 1" in unclear and "! unstable" not in unclear


def test_clear_wins_leave_out_unclear_slower_and_below_floor_variants():
    text = summary_table(Results(records=[
        _rec("fp32", None), _rec("unclear", (1.1, 0.9, 1.3)), _rec("slower", (0.8, 0.7, 0.9)),
        _rec("lossy", (2.5, 2.2, 2.8), relative=0.9, below=True)]))
    assert "No variant is clearly faster than FP32 here" in text
    assert "below floor" in _line(text, "m/lossy/")
    assert "0.900" in _line(text, "m/lossy/")


def test_compare_pairings_are_listed_with_their_ci_or_reason():
    rec = _rec("int8", (1.9, 1.6, 2.2))
    comps = {"runtime:onnxruntime": Comparison(baseline="m/fp32/onnxruntime/b1/single-stream", speedup=2.9,
                                               ci=(2.8, 3.0), ci_level=0.95, rounds=2, method="paired",
                                               ci_scope="between rounds"),
             "model:teacher": Comparison(baseline="teacher/fp32/ort/b1/single-stream", reason="the baseline failed")}
    text = summary_table(Results(records=[_rec("fp32", None), rec.replace(comparisons=comps)]))
    assert "m/int8/ort/b1/single-stream vs runtime onnxruntime FP32: 2.90× [2.80–3.00]" in text
    assert "m/int8/ort/b1/single-stream vs model teacher FP32: none (the baseline failed)" in text
    assert "compare:" not in summary_table(Results(records=[_rec("fp32", None)]))


def test_progress_line_names_loadgens_headline_and_verdict():
    from effbench.execution.progress import record_line
    from effbench.results.scenarios import MultiStream, SingleStream
    rec = _rec("int8", (1.9, 1.6, 2.2)).replace(multi_stream=MultiStream(percentile_ms=0.229, verdict="VALID"),
                                                single_stream=SingleStream(percentile_ms=0.1, verdict="INVALID"))
    line = record_line(rec)
    assert "LoadGen multi-stream p99 0.229 ms VALID" in line and "LoadGen single-stream p90 0.1 ms INVALID" in line
    assert "LoadGen" not in record_line(_rec("int8", (1.9, 1.6, 2.2)))


def test_a_generative_cell_shows_its_next_token_agreement_as_quality():
    from effbench.results.scenarios import Generation
    gen = Generation(prompt_tokens=128, new_tokens=64, quality={"next_token_agreement": 0.9765, "kl_mean": 0.003})
    llm = _rec("int8", (2.3, 2.1, 2.5)).replace(quality=None, generation=gen)
    text = summary_table(Results(records=[_rec("fp32", None), llm]))
    assert "agree 0.977" in _line(text, "m/int8/")
    assert "m/int8/ort/b1/single-stream: 2.30× [2.10–2.50], next-token agreement with FP32 0.977 (held text)" in text
