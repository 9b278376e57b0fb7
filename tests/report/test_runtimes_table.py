"""The report's "fastest runtime x precision per model at the quality floor" and its table of paired comparisons
across runtimes and models (issue 31 item 5): ranked by paired speedups against one baseline where every candidate
has one, else by median latency of separate workers with no ratio; a comparison without a number says why."""
from __future__ import annotations

from effbench.report import build_overview, build_rows, render_html, render_markdown
from effbench.report.markdown import md_cell
from effbench.report.runtimes import SEPARATE, fastest, markdown
from effbench.results.record import Cell, Comparison, Latency, Quality, Record
from effbench.results.store import Results

BASE = "m/fp32/onnxruntime/b1/single-stream"


def _cell(model: str, variant: str, runner: str, scenario: str = "single-stream") -> Cell:
    precision = variant.split("-")[0]
    return Cell(model=model, variant=variant, precision=precision, runner=runner, runner_label=runner, threads=1,
                batch_size=1, scenario=scenario)


def _paired(v: float, lo: float, hi: float, baseline: str = BASE, **extra) -> Comparison:
    return Comparison(baseline=baseline, speedup=v, ci=(lo, hi), ci_level=0.95, ci_scope="between rounds",
                      rounds=3, method="paired", extra=extra)


def _rec(model, variant, runner, median, *, comparison=None, comparisons=None, quality=None,
         scenario="single-stream", status="ok", reason=None) -> Record:
    cell = _cell(model, variant, runner, scenario)
    return Record(cell_id=cell.cell_id, config_hash="h", status=status, reason=reason, cell=cell,
                  latency_ms=Latency(median=median) if status == "ok" else None, comparison=comparison,
                  comparisons=comparisons or {}, quality=quality, round_medians_ms=(median,) * 3)


def _q(relative: float, floor: float = 0.99, key: str | None = None, vs: float | None = None) -> Quality:
    below = relative < floor
    return Quality(metric="top1", value=0.9 * relative, fp32_value=0.9, relative=relative, below_floor=below,
                   min_relative=floor,
                   vs_baseline={key: {"relative": vs, "below_floor": vs < floor}} if key else {})


def _results() -> Results:
    key = "runtime:onnxruntime"
    records = [
        _rec("m", "fp32", "onnxruntime", 1.0),
        _rec("m", "int8", "onnxruntime", 0.66, comparison=_paired(1.5, 1.4, 1.6),
             comparisons={key: _paired(1.5, 1.4, 1.6, pairing="the baseline is this cell's FP32 twin")},
             quality=_q(0.995, key=key, vs=0.995)),
        _rec("m", "fp32", "torch", 2.0, comparisons={key: _paired(0.5, 0.45, 0.55)}, quality=_q(1.0, key=key, vs=1.0)),
        # the fastest by far, but below the floor against the baseline: left out
        _rec("m", "int8", "torch", 0.4, comparison=_paired(5.0, 4.5, 5.5, baseline="m/fp32/torch/b1/single-stream"),
             comparisons={key: _paired(2.5, 2.3, 2.7)}, quality=_q(0.995, key=key, vs=0.95)),
        _rec("m", "fp16", "torch", 1.9, comparison=Comparison(baseline="m/fp32/torch/b1/single-stream",
                                                              reason="no cycle timed both sides"),
             comparisons={key: Comparison(baseline=BASE, reason="the baseline m/fp32/onnxruntime/b1/single-stream is "
                                                                "failed: worker crashed")},
             quality=_q(1.0, key=key, vs=1.0)),
        # another model, no compare: in its suite: ranked by median latency, no ratio
        _rec("n", "fp32", "onnxruntime", 3.0),
        _rec("n", "fp32", "torch", 2.0),
        _rec("n", "int8", "torch", 1.0, status="failed", reason="crashed"),
        _rec("n", "fp32", "onnxruntime", 0.1, scenario="offline"),   # not single-stream: not ranked here
    ]
    return Results(records=records, raw=records, sources=["mem"], warnings=[])


def test_the_fastest_is_ranked_by_paired_speedups_against_one_baseline_at_the_quality_floor():
    rows = build_rows(_results())
    by_model = {f.model: f for f in fastest(rows)}
    assert set(by_model) == {"m", "n"}
    m = by_model["m"]
    assert (m.row.cell_id, m.basis, m.key, m.baseline) == ("m/int8/onnxruntime/b1/single-stream", "paired",
                                                            "runtime:onnxruntime", BASE)
    assert m.pair.speedup.value == 1.5 and (m.pair.speedup.lo, m.pair.speedup.hi) == (1.4, 1.6)
    assert m.runner_up.cell_id == BASE and not m.overlap   # 1.4-1.6 against the baseline's 1
    # torch int8 is below the floor against the baseline; torch fp16's pairing failed: not ranked, and said so
    assert m.candidates == 3 and m.left_out == ["1 below the quality floor or without a quality figure",
                                                "1 without a paired speedup vs m fp32 on onnxruntime: torch × fp16"]
    n = by_model["n"]
    assert (n.row.cell_id, n.basis, n.pair) == ("n/fp32/torch/b1/single-stream", "separate", None)


def test_the_markdown_and_html_show_the_speedups_with_cis_and_say_when_there_is_no_ratio():
    rows = build_rows(_results())
    md = markdown(rows, md_cell)
    line_m = next(ln for ln in md.splitlines() if ln.startswith("| m, batch 1, single-stream |"))
    assert "onnxruntime × int8" in line_m and "1.50× \\[1.40–1.60\\]" in line_m
    assert "paired vs m fp32 on onnxruntime, 3 candidates; next: onnxruntime × fp32" in line_m
    line_n = next(ln for ln in md.splitlines() if ln.startswith("| n, batch 1, single-stream |"))
    assert SEPARATE in line_n and "×" not in line_n.split("|")[4]   # no ratio between separate workers
    assert "| m/fp32/torch/b1/single-stream | m fp32 on onnxruntime | 0.50× \\[0.45–0.55\\] | 100.0% | — |" in md
    assert "| m/int8/torch/b1/single-stream | m fp32 on onnxruntime | 2.50× \\[2.30–2.70\\] | 95.0% |" in md
    fp16 = next(ln for ln in md.splitlines() if ln.startswith("| m/fp16/torch/b1/single-stream |"))
    assert "| — |" in fp16 and "is failed: worker crashed" in fp16
    assert "the same pairing as its speedup vs FP32" in next(
        ln for ln in md.splitlines() if ln.startswith("| m/int8/onnxruntime/b1/single-stream | m fp32"))
    overview = build_overview(_results(), rows)
    assert "## Fastest runtime × precision per model at the quality floor" in render_markdown(rows, overview)
    html = render_html(rows, overview)
    assert '<section id="runtimes">' in html and 'href="#runtimes"' in html
    assert "1.50× [1.40–1.60]" in html and "Paired comparisons across runtimes and models" in html
    assert "is failed: worker crashed" in html and " below floor" in html


def test_a_store_without_compare_still_names_the_fastest_from_separate_workers():
    key_free = [r.replace(comparisons={}) for r in _results().records if r.cell.model == "m"]
    rows = build_rows(Results(records=key_free, raw=key_free, sources=["mem"], warnings=[]))
    f, = fastest(rows)
    # torch int8 is at the floor against its own FP32 and fastest by median latency: named, with no ratio
    assert (f.row.cell_id, f.basis, f.pair) == ("m/int8/torch/b1/single-stream", "separate", None)
    assert "Paired comparisons across runtimes and models" not in markdown(rows, md_cell)


def test_every_candidate_of_one_runner_ranks_by_its_fp32_twin_pairing():
    one = [r for r in _results().records if r.cell.model == "m" and r.cell.runner == "onnxruntime"]
    one = [r.replace(comparisons={}) for r in one]
    f, = fastest(build_rows(Results(records=one, raw=one, sources=["mem"], warnings=[])))
    assert (f.row.cell_id, f.basis, f.key, f.baseline) == ("m/int8/onnxruntime/b1/single-stream", "paired", "twin",
                                                            BASE)
