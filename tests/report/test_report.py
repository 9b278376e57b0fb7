"""The report: files written, derived figures, escaping, merging hosts, scale, regression view."""
from __future__ import annotations

import json
import re
import sys

import pandas as pd
import plotly.graph_objects as go
import pytest
from report_fixtures import CRASHED_GROUP, MODELS, make_records, write_store

from effbench.report import build_overview, build_rows, write_report
from effbench.report.figures import MAX_POINTS, pareto_front, summarise_samples
from effbench.report.html import script_json, unpack_figures
from effbench.report.markdown import COLUMNS, md_cell
from effbench.report.table import fmt_speedup
from effbench.results.store import load

EVIL = "<script>alert(1)</script>"


def _figures(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="eb-figures">(.*?)</script>', html, re.S)
    assert m, "the figures block is missing"
    return unpack_figures(json.loads(m.group(1)))


def _md_speedup(line: str) -> str:
    """The speedup column of a Markdown table line (cells hold no bare pipe: md_cell escapes them)."""
    return line[2:-2].split(" | ")[COLUMNS.index("speedup vs FP32")]


# ------------------------------------------------------------------ derived figures

def test_pareto_front_keeps_only_undominated_points():
    pts = [(1.0, 0.5), (2.0, 0.9), (3.0, 0.8), (0.5, 0.2), (2.5, 0.95), (2.0, 0.7)]
    assert pareto_front(pts) == [(0.5, 0.2), (1.0, 0.5), (2.0, 0.9), (2.5, 0.95)]


def test_summarise_samples_keeps_range_and_caps_points():
    raw = [float(i) for i in range(10_000)]
    pts = summarise_samples(raw)
    assert len(pts) == MAX_POINTS
    assert pts[0] == 0.0 and pts[-1] == 9999.0
    assert pts[MAX_POINTS // 2] == pytest.approx(5000, rel=0.01)
    assert summarise_samples([3.0, 1.0]) == [3.0, 1.0]   # short series untouched


def test_script_json_cannot_close_the_script_block():
    s = script_json({"name": "</script><!-- x -->", "n": 1})
    assert "</" not in s and "<!--" not in s and "-->" not in s
    assert json.loads(s) == {"name": "</script><!-- x -->", "n": 1}


def test_rows_take_the_fixture_comparisons(small_results):
    rows = build_rows(small_results)
    for row in rows:
        comp = row.record.comparison
        if row.speedup:
            assert (row.speedup.value, (row.speedup.lo, row.speedup.hi)) == (comp.speedup, comp.ci)
        else:
            assert not row.record.ok or row.variant in ("fp32", "binary") or comp.speedup is None
    speedups = [r.speedup for r in rows if r.speedup]
    # the fixture plants every case the report must tell apart
    assert {sp.direction for sp in speedups} == {"faster", "slower", "no clear difference"}
    assert any(sp.one_moment for sp in speedups) and any(sp.rounds == 3 and not sp.one_moment for sp in speedups)
    assert any(r.speedup_note == CRASHED_GROUP for r in rows)
    assert any(r.emulated and r.record.ok and r.speedup is None for r in rows)
    assert any("drift" in r.flags for r in rows)
    ids = {r.cell_id: r for r in rows}
    int8 = ids["digits-cnn/int8-static/onnxruntime/b32/single-stream"]
    assert 1.2 < int8.speedup.value < 2.2 and int8.speedup.direction == "faster"   # 0.63x latency planted
    fp32 = ids["digits-cnn/fp32/onnxruntime/b32/single-stream"]
    assert fp32.speedup is None and fp32.speedup_note is None
    assert ids["digits-cnn/bf16/onnxruntime/b1/offline"].speedup is None   # unsupported
    # calibration error: the fixture's local projection is measured median x 1.15
    assert int8.calibration_error == pytest.approx(0.15, abs=0.08)


# ------------------------------------------------------------------ the three files

def test_write_report_writes_three_files(small_results, tmp_path):
    paths = write_report(small_results, tmp_path / "out")
    assert set(paths) == {"html", "markdown", "csv"}
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    html = paths["html"].read_text()
    # plotly.js embedded exactly once, nothing loaded from anywhere
    assert html.count("plotly.js v") == 1
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html, re.I)
    assert "Content-Security-Policy" in html and "connect-src &#x27;none&#x27;" in html
    figs = _figures(html)
    # Pareto, latency, throughput and MACs for each of the two models
    assert sorted(k.rsplit("-", 1)[0] for k in figs) == sorted(
        ["fig-pareto", "fig-latency", "fig-throughput", "fig-work"] * 2)
    for fig in figs.values():
        go.Figure(fig)                              # plotly's own validation of every figure
    c = build_overview(small_results, build_rows(small_results)).counts
    assert c == {"total": 112, "ok": 94, "unsupported": 16, "failed": 2,
                 "unstable": c["unstable"], "drift": 9, "below_floor": 24}   # every ninth cell drifted, 9 of them ok
    assert f'<b>{c["failed"]}</b> failed' in html and f'<b>{c["unsupported"]}</b> unsupported' in html
    assert f'<b>{c["drift"]}</b> drift' in html
    for anchor in ("decision", "pareto", "latency", "throughput", "projections", "work", "failed",
                   "unsupported", "unstable", "drift", "below-floor"):
        assert f'id="{anchor}"' in html
    assert "worker timed out after 120 s" in html
    assert 'class="tag tag-emulated"' in html and 'class="tag tag-modeled"' in html
    assert "cortex-m7" in html and "does not fit" in html and "no 1-bit kernels in the profile" in html


def test_latency_boxes_are_summarised(tmp_path):
    res = load(write_store(tmp_path / "r.jsonl", make_records(models={"mlp": MODELS["mlp"]}, n_samples=3000)))
    assert max(len(r.samples_ms) for r in res) >= 3000
    figs = _figures((write_report(res, tmp_path / "o")["html"]).read_text())
    boxes = [t for t in figs["fig-latency-0"]["data"] if t["type"] == "box"]
    assert boxes and all(len(t["y"]) <= MAX_POINTS for t in boxes)


def test_csv_is_the_flat_frame(small_results, tmp_path):
    csv = write_report(small_results, tmp_path)["csv"]
    df = pd.read_csv(csv)
    assert len(df) == len(small_results) == 112
    assert {"cell_id", "status", "latency_ms.median", "energy.source", "projections.cortex-m7.fits"} <= set(df.columns)
    expect = small_results.to_frame().set_index("cell_id")["latency_ms.median"]
    got = df.set_index("cell_id")["latency_ms.median"]
    assert got.loc[expect.index].to_numpy() == pytest.approx(expect.to_numpy(), nan_ok=True)


def test_summary_md_holds_the_decision_table(small_results, tmp_path):
    md = write_report(small_results, tmp_path)["markdown"].read_text()
    assert md.startswith("# effbench report: quickstart")
    assert "**112 cells:** 94 ok, 16 unsupported, 2 failed" in md
    assert "## Batch size 1" in md and "## Batch size 32" in md
    rows = {r.cell_id: r for r in build_rows(small_results)}
    r = rows["mlp/int8-dynamic/torch/b32/single-stream"]
    line = next(ln for ln in md.splitlines() if ln.startswith("| mlp | int8-dynamic | torch | 32 | single-stream |"))
    assert md_cell(fmt_speedup(r.speedup)) in line and r.speedup.clear
    assert "(modeled:local)" in line
    crashed = next(ln for ln in md.splitlines() if ln.startswith("| mlp | int8-dynamic | torch | 32 | offline |"))
    assert md_cell(CRASHED_GROUP) in crashed and _md_speedup(crashed) == "—"
    bf16 = next(ln for ln in md.splitlines() if ln.startswith("| mlp | bf16 | onnxruntime | 1 | offline |"))
    assert "UNSUPPORTED: BF16 compute is not implemented" in bf16
    assert "emulated" in next(ln for ln in md.splitlines() if ln.startswith("| mlp | binary | torch | 1 |"))
    header = next(ln for ln in md.splitlines() if ln.startswith("| model |"))
    assert all(ln.count(" | ") == header.count(" | ") for ln in md.splitlines() if ln.startswith("| mlp |"))


# ------------------------------------------------------------------ escaping

def test_hostile_names_render_as_text(tmp_path):
    recs = make_records(models={EVIL: MODELS["mlp"]})
    recs[0] = recs[0].replace(reason="a | pipe and </script> in a reason", status="failed")
    res = load(write_store(tmp_path / "r.jsonl", recs))
    paths = write_report(res, tmp_path / "o", title=f"suite {EVIL}")
    html = paths["html"].read_text()
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.lower().count("<script") == html.lower().count("</script>") == 4   # ours only
    figs = _figures(html)
    assert any("&lt;script&gt;" in json.dumps(f) for f in figs.values())   # plotly labels escaped too
    md = paths["markdown"].read_text()
    assert EVIL not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "a \\| pipe and &lt;/script&gt; in a reason" in md


# ------------------------------------------------------------------ merging hosts

def test_two_stores_from_two_hosts(tmp_path):
    a = write_store(tmp_path / "a" / "results.jsonl", make_records(host="ci-runner-a", seed=1))
    b = write_store(tmp_path / "b" / "results.jsonl",
                    make_records(host="lab-box-b", seed=2, energy_source="measured:rapl",
                                 stamp="2025-03-03T09:00:00Z"))
    res = load(a, b)
    assert len(res) == 224
    rows = build_rows(res)
    ov = build_overview(res, rows)
    assert ov.hosts == ["ci-runner-a", "lab-box-b"]
    assert ov.date_range == "2025-03-02T10:00:00Z – 2025-03-03T09:00:00Z"
    html = write_report(res, tmp_path / "o")["html"].read_text()
    assert html.count('<div class="host-name">') == 2
    assert "ci-runner-a" in html and "lab-box-b" in html and "measured:rapl" in html
    # each host's row keeps the speedup its own machine paired
    by_host = {(r.host, r.cell_id): r for r in rows}
    cell = "mlp/int8-static/torch/b1/offline"
    want = {host: recs.by_id()[cell].comparison.speedup for host, recs in (("ci-runner-a", load(a)),
                                                                               ("lab-box-b", load(b)))}
    assert want["ci-runner-a"] != want["lab-box-b"]
    assert all(by_host[(host, cell)].speedup.value == v for host, v in want.items())
    figs = _figures(html)
    labels = [b["label"] for b in figs["fig-pareto-0"]["layout"]["updatemenus"][0]["buttons"]]
    assert any("ci-runner-a" in x for x in labels) and any("lab-box-b" in x for x in labels)


# ------------------------------------------------------------------ scale

def test_thousand_records_render_under_ten_megabytes(tmp_path):
    models = {f"net-{i:02d}": MODELS["digits-cnn" if i % 2 else "mlp"] for i in range(18)}
    recs = make_records(models=models, n_samples=1500, rounds_every=10**9)
    res = load(write_store(tmp_path / "big.jsonl", recs))
    assert len(res) >= 1000
    html = write_report(res, tmp_path / "o")["html"]
    assert html.stat().st_size < 10 * 1024 * 1024
    figs = _figures(html.read_text())
    assert len(figs) == 4 * len(models)


# ------------------------------------------------------------------ regression view

class _Verdict:
    def __init__(self, rows):
        self.rows = rows

    def to_json(self):
        return {"rows": self.rows}


def test_regression_view_renders_verdict_rows(small_results, tmp_path):
    verdict = _Verdict([
        {"cell_id": "mlp/fp32/torch/b1/offline", "metric": "latency_ms", "base": 0.02, "new": 0.03,
         "ratio": 1.5, "p_value": 0.0001, "verdict": "regressed"},
        {"cell_id": EVIL, "metric": "latency_ms", "base": 0.02, "new": 0.02, "ratio": 1.0,
         "p_value": 0.8, "verdict": "unchanged"}])
    paths = write_report(small_results, tmp_path, verdict=verdict)
    html = paths["html"].read_text()
    assert 'id="regression"' in html and 'class="verdict-regressed">regressed<' in html
    assert EVIL not in html
    md = paths["markdown"].read_text()
    assert "| mlp/fp32/torch/b1/offline | latency_ms | 0.02 | 0.03 | 1.5 | 0.0001 | regressed |" in md
    assert "regressed" in md


def test_report_renders_the_verdict_it_is_given_and_never_runs_the_gate(small_results, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "effbench.gate", None)     # importing the gate now raises ImportError
    verdict = _Verdict([{"cell_id": "mlp/fp32/torch/b1/offline", "metric": "latency_ms", "base": 0.02,
                         "new": 0.02, "ratio": 1.0, "p_value": 0.8, "verdict": "unchanged"}])
    html = write_report(small_results, tmp_path, verdict=verdict)["html"].read_text()
    assert 'id="regression"' in html and "Regression view skipped" not in html
    with pytest.raises(TypeError):      # a baseline is the caller's to gate: the CLI passes the verdict
        write_report(small_results, tmp_path, baseline=small_results)


def test_no_baseline_no_regression_section(small_results, tmp_path):
    html = write_report(small_results, tmp_path)["html"].read_text()
    assert 'id="regression"' not in html


def test_real_gate_verdict_renders_one_row_per_verdict_row(tmp_path):
    from effbench.gate import compare
    base = load(write_store(tmp_path / "a.jsonl", make_records(models={"mlp": MODELS["mlp"]}, seed=3)))
    new = load(write_store(tmp_path / "b.jsonl", make_records(models={"mlp": MODELS["mlp"]}, seed=4)))
    verdict = compare(base, new)
    html = write_report(new, tmp_path / "o", verdict=verdict)["html"].read_text()
    assert 'id="regression"' in html and "Regression view skipped" not in html
    assert html.count("<tr><td data-v") >= len(verdict.rows) > 0   # one table row per verdict row
