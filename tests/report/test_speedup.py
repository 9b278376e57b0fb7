"""The report leads with what holds: the paired speedup, its CI and what the CI covers, drift flags.

A small hand-built store with one cell per case, so each assertion names the case it checks.
"""
from __future__ import annotations

import re

import pytest

from effbench.report import build_overview, build_rows, render_html, render_markdown
from effbench.report.figures import hover_text
from effbench.report.markdown import COLUMNS, md_cell
from effbench.report.table import EMULATED, NOT_PAIRED, Speedup, fmt_speedup
from effbench.results.record import Cell, Comparison, Drift, Latency, VariantInfo
from effbench.results.store import Record, Results

FP32_ID = "m/fp32/ort/b1/single-stream"
ONE_ROUND = "one moment (1 round)"
UNSTABLE_WHY = "round medians spread: the 95% CI over 3 rounds is +-14% of the median (flagged above +-10%)"


def _comp(value: float | None, lo: float | None = None, hi: float | None = None, *, rounds: int = 3,
          scope: str = "between rounds", method: str | None = "paired", reason: str | None = None) -> Comparison:
    return Comparison(baseline=FP32_ID, speedup=value, ci=None if lo is None else (lo, hi), ci_level=0.95,
                      rounds=rounds, method=method, ci_scope=scope, reason=reason)


def _record(variant: str, comparison: Comparison | None = None, *, median: float = 0.5, emulated: bool = False,
            drift: Drift | None = None, latency: dict | None = None, rounds: list[float] | None = None) -> Record:
    cell = Cell(model="m", variant=variant, precision="fp32" if variant == "fp32" else "int8", runner="ort",
                runner_label="ort", batch_size=1, scenario="single-stream")
    lat = Latency(median=median, ci=(median * 0.9, median * 1.1), **(latency or {}))
    return Record(cell_id=f"m/{variant}/ort/b1/single-stream", config_hash="x", status="ok", cell=cell,
                  variant=VariantInfo(emulated=emulated), latency_ms=lat, comparison=comparison, drift=drift,
                  round_medians_ms=tuple(rounds or ()), rounds=len(rounds or [0]))


def _store() -> Results:
    three = [0.5, 0.52, 0.49]
    return Results(records=[
        _record("fp32", median=1.0, rounds=[1.0, 1.02, 0.98]),
        _record("faster", _comp(1.92, 1.85, 2.01), rounds=three,
                latency={"ci_scope": "between rounds", "ci_method": "t-interval on logs over 3 rounds",
                         "within_round_ci": (0.47, 0.53)}),
        _record("slower", _comp(0.8, 0.75, 0.86), rounds=three),
        _record("unclear", _comp(1.04, 0.97, 1.12), rounds=three,
                latency={"unstable": True, "unstable_reason": UNSTABLE_WHY}),
        _record("edge", _comp(1.05, 1.0, 1.1), rounds=three),                     # a CI ending on 1 holds 1
        _record("oneround", _comp(1.3, 1.25, 1.36, rounds=1, scope=ONE_ROUND)),
        _record("reason", _comp(None, reason="the FP32 twin is failed: worker timed out")),
        # an emulated variant never gets a speedup, even from a store that holds a number for it
        _record("emu", _comp(2.5, 2.4, 2.6), emulated=True, rounds=three),
        # an old or A/B store: FP32 and this cell both timed, but apart; no ratio of medians is made up
        _record("unpaired", None, median=0.5, rounds=three),
        _record("ratio", _comp(2.0, 1.9, 2.1, method="ratio of medians"), rounds=three),
        _record("drifted", _comp(1.5, 1.45, 1.55), rounds=three,
                drift=Drift(threshold=0.10, max_abs_change=0.17, flagged=True,
                            rounds=[{"before_us": 31.2, "after_us": 36.5, "change": 0.17}])),
        _record("steady", _comp(1.5, 1.45, 1.55), rounds=three,
                drift=Drift(threshold=0.10, max_abs_change=0.02, flagged=False, rounds=[])),
    ])


@pytest.fixture(scope="module")
def rows():
    return {r.variant: r for r in build_rows(_store())}


def _html_rows(page: str) -> dict[str, dict[str, str]]:
    """The decision table as {variant label: {column label: the whole <td> element}}."""
    table = page[page.index('id="decision-table"'):]
    table = table[:table.index("</table>")]
    heads = re.findall(r"<th [^>]*>([^<]*)</th>", table)
    out = {}
    for tr in re.findall(r"<tr class=.*?</tr>", table, re.S):
        tds = re.findall(r"<td[^>]*>.*?</td>", tr, re.S)
        variant = re.match(r"<td[^>]*>([^<]*)", tds[1]).group(1).strip()
        out[variant] = dict(zip(heads, tds))
    return out


@pytest.fixture(scope="module")
def html_rows(rows):
    return _html_rows(render_html(list(rows.values()), build_overview(_store(), list(rows.values()))))


@pytest.fixture(scope="module")
def md_rows(rows):
    md = render_markdown(list(rows.values()), build_overview(_store(), list(rows.values())))
    lines = [ln for ln in md.splitlines() if ln.startswith("| m | ")]
    return {ln.split(" | ")[1]: dict(zip(COLUMNS, ln[2:-2].split(" | "))) for ln in lines}, md


def test_direction_needs_a_ci_that_excludes_one():
    def sp(v, lo, hi):
        return Speedup(v, lo, hi, 3, "between rounds", "paired")
    assert (sp(1.92, 1.85, 2.01).clear, sp(1.92, 1.85, 2.01).direction) == (True, "faster")
    assert (sp(0.8, 0.75, 0.86).clear, sp(0.8, 0.75, 0.86).direction) == (True, "slower")
    assert sp(1.3, 0.97, 1.6).direction == "no clear difference"      # a big point value is not enough
    assert sp(1.05, 1.0, 1.1).direction == "no clear difference"
    assert sp(0.95, 0.9, 1.0).direction == "no clear difference"
    assert Speedup(1.5, None, None, None, None, "paired").direction == "no clear difference"


def test_fmt_speedup():
    assert fmt_speedup(Speedup(1.923, 1.849, 2.011, 3, "between rounds", "paired")) == "1.92× [1.85–2.01]"
    assert fmt_speedup(Speedup(1.5, None, None, None, None, "paired")) == "1.50×"
    # a clear CI must not read as one that touches 1
    assert fmt_speedup(Speedup(0.9, 0.8, 0.9996, 3, "between rounds", "paired")) == "0.90× [0.80–0.9996]"
    assert fmt_speedup(Speedup(1.1, 1.004, 1.2, 3, "between rounds", "paired")) == "1.10× [1.004–1.20]"
    assert fmt_speedup(None) == "—"


def test_rows_take_the_speedup_only_from_the_paired_comparison(rows):
    sp = rows["faster"].speedup
    assert (sp.value, sp.lo, sp.hi, sp.rounds, sp.method) == (1.92, 1.85, 2.01, 3, "paired")
    assert rows["fp32"].speedup is None and rows["fp32"].speedup_note is None
    assert rows["unpaired"].speedup is None and rows["unpaired"].speedup_note == NOT_PAIRED
    assert rows["ratio"].speedup is None and rows["ratio"].speedup_note == NOT_PAIRED
    assert rows["reason"].speedup is None
    assert rows["reason"].speedup_note == "the FP32 twin is failed: worker timed out"
    assert rows["emu"].speedup is None and rows["emu"].speedup_note == EMULATED


def test_flags_say_drift_and_one_round(rows):
    assert "drift" in rows["drifted"].flags and "drift" not in rows["steady"].flags
    assert rows["oneround"].speedup.one_moment and "1 round" in rows["oneround"].flags
    assert "1 round" not in rows["faster"].flags
    # a store without ci_scope: a latency CI without several round medians is one worker's
    assert "1 round" in rows["reason"].flags


def test_html_colours_only_a_clear_speedup(html_rows):
    def col(v):
        return html_rows[v]["speedup vs FP32"]
    assert 'class="good"' in col("faster") and "1.92× [1.85–2.01]" in col("faster")
    assert 'data-v="1.92"' in col("faster")                   # sorting keeps the point value
    assert "no clear difference" not in col("faster")
    assert 'class="bad"' in col("slower") and "0.80× [0.75–0.86]" in col("slower")
    for v in ("unclear", "edge"):
        assert 'class="neutral"' in col(v) and '<div class="ci">no clear difference</div>' in col(v)
        assert 'class="good"' not in col(v) and 'class="bad"' not in col(v)
    assert "95% CI over 3 rounds" in col("faster") and "paired in one worker, alternating blocks" in col("faster")
    assert "1 round" in col("oneround") and "one moment" in col("oneround")


def test_html_shows_no_speedup_where_none_holds(html_rows):
    for v, note in (("emu", EMULATED), ("unpaired", NOT_PAIRED), ("ratio", NOT_PAIRED),
                    ("reason", "the FP32 twin is failed: worker timed out")):
        cell = html_rows[v]["speedup vs FP32"]
        assert re.fullmatch(r'<td data-v="" title="[^"]*">—</td>', cell), cell
        assert f'title="{note}"' in cell.replace("&#x27;", "'")
    assert "×" not in html_rows["emu"]["speedup vs FP32"]


def test_html_tags_drift_and_labels_ci_scopes(html_rows):
    assert 'class="tag tag-drift"' in html_rows["drifted"]["status"]
    assert "moved by 17% (more than 10%)" in html_rows["drifted"]["status"]
    assert "tag-drift" not in html_rows["steady"]["status"]
    assert f'title="{UNSTABLE_WHY}"' in html_rows["unclear"]["status"]
    latency = "median latency (95% CI)"
    assert 'title="one round: this CI covers one moment only"' in html_rows["reason"][latency]
    assert "1 round" in html_rows["reason"][latency]
    assert "within one worker: 0.470 – 0.530 ms" in html_rows["faster"][latency]
    assert "one moment" not in html_rows["faster"][latency]


def test_markdown_says_what_holds(md_rows):
    cells, md = md_rows
    sp = "speedup vs FP32"
    assert cells["faster"][sp] == md_cell("1.92× [1.85–2.01]")
    assert cells["slower"][sp] == md_cell("0.80× [0.75–0.86]")
    assert cells["unclear"][sp] == md_cell("1.04× [0.97–1.12] (no clear difference)")
    assert cells["edge"][sp].endswith("(no clear difference)")
    for v in ("emu", "unpaired", "ratio", "reason", "fp32"):
        assert cells[v][sp] == "—"
    assert NOT_PAIRED in cells["unpaired"]["notes"]
    assert "drift" in cells["drifted"]["notes"].split("; ") and "drift" not in cells["steady"]["notes"]
    assert "1 round" in cells["oneround"]["notes"].split("; ")
    assert "1 drift" not in md and "1 with drift" in md
    assert "paired" in md and "FP32 median latency / variant median latency" not in md


def test_hover_text_shows_the_ci_or_why_there_is_none(rows):
    assert "speedup vs FP32: 1.92× [1.85–2.01], faster (paired" in hover_text(rows["faster"])
    assert "no clear difference" in hover_text(rows["unclear"])
    assert f"speedup vs FP32: — ({EMULATED})" in hover_text(rows["emu"])
