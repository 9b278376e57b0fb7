"""The regression gate on synthetic stores: planted changes must be caught, noise must not fail a build."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from effbench.errors import UserError
from effbench.gate import DEFAULT_RULES, TESTS, Rule, compare, compare_ab, compare_paths, parse_rule, resolve_rules
from effbench.measure.latency import LatencyStats
from effbench.measure.stats import holm, noise_floor, quantile_ci
from effbench.results.record import Cell, Energy, Latency, Memory, ModelStats, Provenance, Quality
from effbench.results.store import Record, Store, load

HOST = {"cpu": "AMD EPYC", "cores": 2}
PACKAGES = {"onnxruntime": "1.31.1", "torch": "2.13.0+cpu"}


def lognormal(seed: int, median_ms: float, n: int = 400, sigma: float = 0.05) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(rng.lognormal(math.log(median_ms), sigma, n))


def cell_of(cell_id: str) -> Cell:
    """The full cell a cell id names: model/variant/runner_label/bBATCH/scenario."""
    model, variant, runner_label, batch, scenario = cell_id.split("/")
    return Cell(model=model, variant=variant, precision=variant, runner=runner_label, runner_label=runner_label,
                batch_size=int(batch.lstrip("b")), scenario=scenario)


def record(cell_id: str, samples: list[float], *, rnd: int = 0, rounds: int = 1, median: float | None = None,
           size: int = 1_000_000, macs: int = 5_000_000, quality: float = 0.99, peak: int = 100_000_000,
           speed_ms: float = 10.0, host: dict | None = None, packages: dict | None = None,
           energy: dict | None = None, status: str = "ok", throughput: float | None = None) -> Record:
    lat = Latency.from_json(LatencyStats.from_samples_ms(samples).to_json()) if samples else None
    if lat is not None and median is not None:
        lat = lat.replace(median=median)  # a planted per-round median, exact to the digit
    ok = status == "ok"
    return Record(
        cell_id=cell_id, config_hash="h-" + cell_id, status=status,
        reason=None if ok else "worker crashed (SIGSEGV)",
        cell=cell_of(cell_id), round=rnd, rounds=rounds,
        model_stats=ModelStats(size_bytes=size, macs=macs) if ok else None,
        latency_ms=lat if ok else None, samples_ms=tuple(samples) if ok else (),
        throughput_ips=throughput, memory=Memory(peak_rss_bytes=peak) if ok else None,
        energy=Energy.from_json(energy) if energy else None,
        quality=Quality(metric="top1", value=quality * 0.9, fp32_value=0.9, relative=quality),
        provenance=Provenance(host=host or HOST, packages=packages or PACKAGES, python="3.11",
                              speed_index={"name": "matmul-f32-512", "gflops": 100.0 / speed_ms * 10,
                                           "median_ms": speed_ms}),
    )


def write(tmp_path, name: str, records: list[Record]):
    path = tmp_path / name / "results.jsonl"
    store = Store(path)
    for r in records:
        store.append(r)
    return load(path)


def single_round_store(tmp_path, name, medians: dict[str, float], seed: int, **kw):
    return write(tmp_path, name, [record(c, lognormal(seed + i, m), **kw) for i, (c, m) in enumerate(medians.items())])


def rounds_store(tmp_path, name, round_medians: dict[str, list[float]], seed: int, sigma: float = 0.03, **kw):
    recs = []
    for i, (cell, meds) in enumerate(round_medians.items()):
        for k, m in enumerate(meds):
            recs.append(record(cell, lognormal(seed * 100 + i * 10 + k, m, n=100, sigma=sigma), rnd=k,
                               rounds=len(meds), median=m, **kw))
    return write(tmp_path, name, recs)


def rows_by(verdict, metric="latency.median"):
    return {r["cell_id"]: r for r in verdict.rows if r["metric"] == metric}


CELLS = {"digits-cnn/fp32/onnxruntime/b1/single-stream": 2.0,
         "digits-cnn/int8/onnxruntime/b1/single-stream": 1.3}


# --------------------------------------------------------------------------- rules


@pytest.mark.parametrize("text, metric, threshold, kind", [
    ("latency.median:5%", "latency.median", 0.05, "relative"),
    ("latency.p99:10%", "latency.p99", 0.10, "relative"),
    ("quality.relative:-0.5pp", "quality.relative", 0.5, "absolute_pp"),
    ("size:0%", "size", 0.0, "relative"),
    ("throughput:-5%", "throughput", 0.05, "relative"),
    (" memory.peak : 10 % ", "memory.peak", 0.10, "relative"),
    ("energy:2.5%", "energy", 0.025, "relative"),
    ("latency:7%", "latency.median", 0.07, "relative"),
])
def test_parse_rule(text, metric, threshold, kind):
    rule = parse_rule(text)
    assert rule == Rule(metric, pytest.approx(threshold), kind)


@pytest.mark.parametrize("text, needle", [
    ("latency.medain:5%", "did you mean 'latency.median'"),
    ("latency.median:5", "no unit"),
    ("latency.median:5pp", "percentage points"),
    ("latency.median", "cannot read rule"),
    ("speed:5%", "unknown gate metric"),
    ("latency.median:five%", "cannot read rule"),
])
def test_bad_rules_raise_user_error_naming_source_and_fix(text, needle):
    with pytest.raises(UserError) as e:
        parse_rule(text, source="suite.yaml gate[0]")
    assert needle in e.value.one_line()
    assert e.value.field == "suite.yaml gate[0]"
    assert e.value.fix


def test_resolve_rules_overrides_by_metric_and_drops_off():
    rules = resolve_rules(["latency.median:10%", "throughput:5%", "memory.peak:off"], suite_gate=["size:1%"])
    by = {r.metric: r for r in rules}
    assert by["latency.median"].threshold == pytest.approx(0.10)
    assert by["size"].threshold == pytest.approx(0.01)
    assert "throughput" in by and "memory.peak" not in by
    assert {r.metric for r in DEFAULT_RULES} - {"memory.peak"} <= set(by)
    with pytest.raises(UserError):
        resolve_rules(["bogus:off"])


def test_holm_matches_hand_computation():
    # sorted p: 0.01, 0.02, 0.03, 0.5 with m=4 -> 0.04, 0.06, 0.06 (monotone), 0.5
    assert holm([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert holm([0.9, 0.4]) == pytest.approx([0.9, 0.8])   # capped step-down: 2*0.4, max(0.8, 0.9)
    assert holm([0.7, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_quantile_ci_brackets_the_quantile_and_refuses_small_n():
    x = lognormal(1, 10.0, n=5000)
    lo, hi = quantile_ci(x, 0.99)
    assert lo < np.quantile(x, 0.99) < hi
    assert quantile_ci(x[:100], 0.99) is None


# --------------------------------------------------------------------------- planted changes


def test_planted_30pct_slowdown_single_round_is_regressed(tmp_path):
    base = single_round_store(tmp_path, "base", CELLS, seed=1)
    slow = {c: m * (1.3 if "fp32" in c else 1.0) for c, m in CELLS.items()}
    new = single_round_store(tmp_path, "new", slow, seed=50)
    v = compare(base, new)
    rows = rows_by(v)
    fp32, int8 = list(CELLS)
    assert rows[fp32]["verdict"] == "regressed"
    assert rows[fp32]["test"] == "mann-whitney-samples"
    assert rows[fp32]["ratio"] == pytest.approx(1.3, rel=0.02)
    assert rows[fp32]["p_holm"] < 0.01
    assert rows[int8]["verdict"] == "unchanged"
    assert v.exit_code == 1
    assert v.summary["counts"]["regressed"] == 1
    assert v.summary["geomean_latency_ratio"] == pytest.approx(math.sqrt(1.3), rel=0.02)


def test_planted_30pct_slowdown_with_rounds_is_regressed(tmp_path):
    base = rounds_store(tmp_path, "base", {c: [m * f for f in (1.0, 1.01, 0.99, 1.005, 0.995)]
                                           for c, m in CELLS.items()}, seed=1)
    new = rounds_store(tmp_path, "new", {c: [m * f * (1.3 if "fp32" in c else 1) for f in (1.0, 0.99, 1.01, 1.0, 1.005)]
                                         for c, m in CELLS.items()}, seed=2)
    v = compare(base, new)
    fp32, int8 = list(CELLS)
    rows = rows_by(v)
    # 5 vs 5 rounds: U's smallest p (0.0079) cannot reach alpha/2 after Holm, so the 99% CIs decide
    assert rows[fp32]["test"] == "ci-overlap"
    assert rows[fp32]["verdict"] == "regressed"
    assert rows[int8]["verdict"] == "unchanged"
    # 5 rounds: each store's floor is half its range; the two add in quadrature (independent medians)
    one = math.log(math.sqrt(1.01 / 0.99))
    assert rows[fp32]["noise_floor"] == pytest.approx(math.exp(math.sqrt(2) * one) - 1, rel=1e-6)
    assert v.exit_code == 1


def test_identical_stores_are_unchanged(tmp_path):
    base = single_round_store(tmp_path, "base", CELLS, seed=7)
    new = single_round_store(tmp_path, "new", CELLS, seed=7)
    v = compare(base, new)
    assert v.rows and all(r["verdict"] == "unchanged" for r in v.rows)
    # every default rule but the server scenario's and generation's (these cells have neither)
    assert {r["metric"] for r in v.rows} == {r.metric for r in DEFAULT_RULES} - {"server.max_qps", "ttft_ms",
                                                                                 "tpot_ms", "decode_tokens_per_s"}
    assert all(r["ratio"] == pytest.approx(1.0) for r in v.rows)
    assert v.exit_code == 0
    assert len(v.warnings) == 1 and "single rounds" in v.warnings[0]   # no environment warnings


def test_one_percent_shift_is_unchanged_even_when_significant(tmp_path):
    base = single_round_store(tmp_path, "base", CELLS, seed=3)
    new = single_round_store(tmp_path, "new", {c: m * 1.01 for c, m in CELLS.items()}, seed=3)
    v = compare(base, new)
    rows = rows_by(v)
    for r in rows.values():
        assert r["ratio"] == pytest.approx(1.01, rel=1e-9)
        assert r["p_holm"] < 0.01          # thousands of samples see a 1% shift ...
        assert r["verdict"] == "unchanged"  # ... but it is within the 5% rule
    assert v.exit_code == 0


def test_quality_drop_below_rule_is_regressed(tmp_path):
    base = single_round_store(tmp_path, "base", CELLS, seed=1, quality=0.990)
    small = single_round_store(tmp_path, "small", CELLS, seed=1, quality=0.987)
    big = single_round_store(tmp_path, "big", CELLS, seed=1, quality=0.980)
    ok = rows_by(compare(base, small), "quality.relative")
    bad = compare(base, big)
    assert all(r["verdict"] == "unchanged" for r in ok.values())
    q = rows_by(bad, "quality.relative")
    assert all(r["verdict"] == "regressed" and r["test"] == "exact" for r in q.values())
    assert all(r["delta"] == pytest.approx(-1.0) for r in q.values())
    assert bad.exit_code == 1
    # the opposite direction is an improvement, not a failure
    better = compare(big, base)
    assert all(r["verdict"] == "improved" for r in rows_by(better, "quality.relative").values())
    assert better.exit_code == 0


def test_size_growth_fails_size_zero_rule(tmp_path):
    base = single_round_store(tmp_path, "base", CELLS, seed=1, size=1_000_000)
    new = single_round_store(tmp_path, "new", CELLS, seed=1, size=1_000_004)
    v = compare(base, new)
    assert all(r["verdict"] == "regressed" for r in rows_by(v, "size").values())
    assert v.exit_code == 1


def test_noisy_rounds_are_unstable_not_regressed(tmp_path):
    cell = list(CELLS)[0]
    # the bimodal machine of docs/runtime-notes.md: rounds land at ~17.5 or ~27 ms
    base = rounds_store(tmp_path, "base", {cell: [17.5, 27.0, 17.6, 26.8, 17.4]}, seed=1)
    new = rounds_store(tmp_path, "new", {cell: [27.2, 17.8, 27.1, 26.9, 17.7]}, seed=2)
    v = compare(base, new)
    row = rows_by(v)[cell]
    assert row["ratio"] > 1.05          # the median moved by 53% ...
    assert row["noise_floor"] > 0.2     # ... inside a between-round spread of +-24%
    assert row["verdict"] == "unstable"
    assert v.exit_code == 0
    # identical noisy stores: the gate cannot vouch for the cell either
    same = compare(base, base)
    assert rows_by(same)[cell]["verdict"] == "unstable"


def test_large_change_clears_a_noise_floor_above_threshold(tmp_path):
    cell = list(CELLS)[0]
    base = rounds_store(tmp_path, "base", {cell: [10.0 + 0.2 * i for i in range(8)]}, seed=1)   # floor ~7%
    new = rounds_store(tmp_path, "new", {cell: [20.0 + 0.4 * i for i in range(8)]}, seed=2)
    row = rows_by(compare(base, new))[cell]
    assert row["noise_floor"] > 0.05
    assert row["test"] == "mann-whitney-rounds"
    assert row["verdict"] == "regressed"


def test_holm_correction_turns_a_borderline_cell_unstable(tmp_path):
    fp32, int8 = list(CELLS)
    base_meds = [10.0 + 0.05 * i for i in range(8)]
    new_meds = [10.2, 10.3, 10.36, 10.9, 10.95, 11.0, 11.05, 11.1]   # +7.4%, U p = 0.0053
    alone = compare(rounds_store(tmp_path, "b1", {fp32: base_meds}, seed=1),
                    rounds_store(tmp_path, "n1", {fp32: new_meds}, seed=2))
    r = rows_by(alone)[fp32]
    assert r["test"] == "mann-whitney-rounds"
    assert r["p_value"] == pytest.approx(0.0053, abs=1e-4)
    assert r["p_holm"] == pytest.approx(r["p_value"])
    assert r["verdict"] == "regressed"
    # a second tested cell doubles the smallest p-value: 0.0106 > 0.01
    steady = [2.0 + 0.01 * i for i in range(8)]
    two = compare(rounds_store(tmp_path, "b2", {fp32: base_meds, int8: steady}, seed=1),
                  rounds_store(tmp_path, "n2", {fp32: new_meds, int8: steady}, seed=2))
    r2 = rows_by(two)[fp32]
    assert r2["p_value"] == pytest.approx(r["p_value"])
    assert r2["p_holm"] == pytest.approx(2 * r["p_value"])
    assert r2["verdict"] == "unstable"
    assert two.exit_code == 0


def test_tail_latency_rule_on_raw_samples(tmp_path):
    cell = list(CELLS)[0]
    rng = np.random.default_rng(5)
    body = list(rng.lognormal(math.log(10), 0.03, 3000))
    tail = list(body)
    for i in range(0, 3000, 25):       # 4% of calls hit a 40 ms stall: p99 moves, the median barely
        tail[i] = 40.0 + rng.random()
    base = write(tmp_path, "base", [record(cell, body)])
    new = write(tmp_path, "new", [record(cell, tail)])
    v = compare(base, new, rules=[parse_rule("latency.median:5%"), parse_rule("latency.p99:10%")])
    assert rows_by(v, "latency.median")[cell]["verdict"] == "unchanged"
    p99 = rows_by(v, "latency.p99")[cell]
    assert p99["test"] == "ci-overlap" and p99["verdict"] == "regressed"


# --------------------------------------------------------------------------- cells, statuses, environment


def test_added_and_removed_cells_are_listed_not_failures(tmp_path):
    fp32, int8 = list(CELLS)
    base = single_round_store(tmp_path, "base", {fp32: 2.0, int8: 1.3}, seed=1)
    new = single_round_store(tmp_path, "new", {fp32: 2.0, "digits-cnn/int4/onnxruntime/b1/single-stream": 1.9}, seed=1)
    v = compare(base, new)
    assert v.added == ["digits-cnn/int4/onnxruntime/b1/single-stream"]
    assert v.removed == [int8]
    assert {r["cell_id"] for r in v.rows} == {fp32}
    assert v.exit_code == 0
    assert compare(base, new, require_same_cells=True).exit_code == 1


def test_a_cell_that_now_fails_is_regressed(tmp_path):
    fp32, int8 = list(CELLS)
    base = single_round_store(tmp_path, "base", CELLS, seed=1)
    new = write(tmp_path, "new", [record(fp32, lognormal(1, 2.0)), record(int8, [], status="failed")])
    v = compare(base, new)
    status = [r for r in v.rows if r["metric"] == "status"]
    assert status == [pytest.approx(status[0])] and status[0]["cell_id"] == int8
    assert status[0]["verdict"] == "regressed" and "SIGSEGV" in status[0]["note"]
    assert v.exit_code == 1


def test_host_and_package_differences_warn(tmp_path):
    base = single_round_store(tmp_path, "base", CELLS, seed=1)
    new = single_round_store(tmp_path, "new", CELLS, seed=1, host={"cpu": "Intel Xeon", "cores": 2},
                             packages={**PACKAGES, "onnxruntime": "1.32.0"})
    v = compare(base, new)
    text = " ".join(v.warnings)
    assert "host differs" in text and "AMD EPYC" in text and "Intel Xeon" in text
    assert "onnxruntime 1.31.1 -> 1.32.0" in text
    assert v.exit_code == 0


def test_speed_index_warns_and_normalize_scales_timings(tmp_path):
    base = single_round_store(tmp_path, "base", CELLS, seed=1, speed_ms=10.0)
    # the new machine is 25% slower on the speed index and every cell is 25% slower with it
    new = single_round_store(tmp_path, "new", {c: m * 1.25 for c, m in CELLS.items()}, seed=1, speed_ms=12.5)
    raw = compare(base, new)
    assert any("speed index differs by +25.0%" in w for w in raw.warnings)
    assert all(r["verdict"] == "regressed" for r in rows_by(raw).values())
    norm = compare(base, new, normalize=True)
    assert all(r["verdict"] == "unchanged" and r["ratio"] == pytest.approx(1.0) for r in rows_by(norm).values())
    assert norm.summary["speed_ratio"] == pytest.approx(1.25)


def test_normalize_without_speed_index_is_a_user_error(tmp_path):
    recs = [record(c, lognormal(1, m)) for c, m in CELLS.items()]
    recs = [r.replace(provenance=r.provenance.replace(speed_index=None)) for r in recs]
    base = write(tmp_path, "base", recs)
    assert any("no machine-speed index" in w for w in compare(base, base).warnings)
    with pytest.raises(UserError, match="--normalize"):
        compare(base, base, normalize=True)


def test_energy_sources_never_mix(tmp_path):
    cell = list(CELLS)[0]
    base = write(tmp_path, "base", [record(cell, lognormal(1, 2.0), energy={"source": "measured:rapl", "j_per_inference": 0.01})])
    new = write(tmp_path, "new", [record(cell, lognormal(1, 2.0), energy={"source": "modeled:local", "j_per_inference": 0.05})])
    v = compare(base, new, rules=[parse_rule("energy:5%")])
    assert not v.rows and v.exit_code == 0
    assert any("measured and modeled never mix" in w for w in v.warnings)


def test_single_round_throughput_cannot_be_gated(tmp_path):
    cell = list(CELLS)[0]
    base = write(tmp_path, "base", [record(cell, lognormal(1, 2.0), throughput=500.0)])
    new = write(tmp_path, "new", [record(cell, lognormal(1, 2.0), throughput=350.0)])
    row = rows_by(compare(base, new, rules=[parse_rule("throughput:5%")]), "throughput")[cell]
    assert row["verdict"] == "unstable" and row["test"] == "none"


# --------------------------------------------------------------------------- bad input


def test_missing_or_empty_store_is_a_user_error(tmp_path):
    good = tmp_path / "good"
    single_round_store(tmp_path, "good", CELLS, seed=1)
    with pytest.raises(UserError, match="no such results store"):
        compare_paths(tmp_path / "nowhere" / "results.jsonl", good)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "results.jsonl").write_text("")
    with pytest.raises(UserError, match="no result records"):
        compare_paths(good, tmp_path / "empty")
    with pytest.raises(UserError, match="alpha"):
        compare_paths(good, good, alpha=1.5)
    assert compare(good, good / "results.jsonl").exit_code == 0   # paths or report folders work too


# --------------------------------------------------------------------------- A/B mode


def ab_pairs(ratio: float, rounds: int, seed: int, jitter: float = 0.01):
    """Interleaved rounds on a bimodal machine: both sides of a pair share the machine's state."""
    rng = np.random.default_rng(seed)
    states = rng.choice([17.5, 27.0], size=rounds)
    pairs = []
    for i, cell in enumerate(CELLS):
        bm = [float(s * rng.lognormal(0, jitter)) for s in states]
        nm = [float(s * ratio * rng.lognormal(0, jitter)) for s in states]
        b = record(cell, lognormal(seed + i, float(np.median(bm))), rounds=rounds).replace(round_medians_ms=tuple(bm))
        n = record(cell, lognormal(seed + 10 + i, float(np.median(nm))), rounds=rounds).replace(round_medians_ms=tuple(nm))
        pairs.append((b, n))
    return pairs


def test_ab_catches_a_10pct_slowdown_on_a_bimodal_machine():
    v = compare_ab(ab_pairs(1.10, rounds=12, seed=1))
    rows = rows_by(v)
    assert all(r["test"] == "wilcoxon-paired-rounds" for r in rows.values())
    assert all(r["verdict"] == "regressed" for r in rows.values())
    assert all(r["ratio"] == pytest.approx(1.10, rel=0.02) for r in rows.values())
    assert v.exit_code == 1 and v.mode == "ab"


def test_ab_aa_on_a_bimodal_machine_is_unchanged():
    v = compare_ab(ab_pairs(1.0, rounds=12, seed=2))
    assert all(r["verdict"] == "unchanged" for r in rows_by(v).values())
    assert v.exit_code == 0


def test_ab_with_few_rounds_cannot_decide():
    # 5 rounds: the CI of the median ratio covers only 93.8%; it gated 1 of 16 A/A cells on this machine
    v = compare_ab(ab_pairs(1.3, rounds=5, seed=3))
    rows = rows_by(v)
    assert all(r["test"] == "ci-paired-rounds" and r["verdict"] == "unstable" for r in rows.values())
    assert all("coverage only 93.8%" in r["note"] and "cannot decide" in r["note"] for r in rows.values())
    assert v.exit_code == 0


def test_ab_unequal_rounds_are_not_paired():
    (b, n), _ = ab_pairs(1.3, rounds=6, seed=4)
    n = n.replace(round_medians_ms=n.round_medians_ms[:5])
    row = rows_by(compare_ab([(b, n)]))[b.cell_id]
    assert row["verdict"] == "unstable" and "do not pair" in row["note"]


# --------------------------------------------------------------------------- rendering


def test_render_three_formats(tmp_path):
    base = single_round_store(tmp_path, "base", CELLS, seed=1)
    new = single_round_store(tmp_path, "new", {c: m * (1.3 if "fp32" in c else 1) for c, m in CELLS.items()},
                             seed=9, packages={**PACKAGES, "torch": "2.14.0"})
    v = compare(base, new)
    table = v.render("table")
    assert table.splitlines()[0].startswith("warning: package differs")
    assert "REGRESSED" in table and "+30." in table
    assert table.splitlines()[-1].startswith("FAIL: 1 regressed")
    md = v.render("md")
    assert md.startswith("## :x: effbench gate: FAIL")
    assert "| cell | metric |" in md and "**regressed**" in md and "<details>" in md
    assert "`latency.median:5%`" in md and "`quality.relative:-0.5pp`" in md
    data = json.loads(v.render("json"))
    assert data["exit_code"] == 1 and data["schema"] == "effbench.verdict/1"
    assert len(data["rows"]) == len(v.rows)
    assert data["summary"]["counts"]["regressed"] == 1
    passing = compare(base, base)
    assert passing.render("md").startswith("## :white_check_mark: effbench gate: PASS")
    with pytest.raises(UserError, match="did you mean 'md'"):
        v.render("mdd")


def test_json_never_holds_nan_or_inf(tmp_path):
    cell = list(CELLS)[0]
    base = write(tmp_path, "base", [record(cell, lognormal(1, 2.0), size=0)])
    new = write(tmp_path, "new", [record(cell, lognormal(1, 2.0), size=10)])
    v = compare(base, new)
    size = rows_by(v, "size")[cell]
    assert size["verdict"] == "regressed" and size["ratio"] == math.inf
    text = v.render("json")
    assert "Infinity" not in text and "NaN" not in text
    assert "new" in v.render("table")
    assert {r["test"] for r in v.rows} <= set(TESTS)  # every test name rendered is a documented one


def test_one_stray_round_does_not_set_the_noise_floor(tmp_path):
    cell = list(CELLS)[0]
    # one slow round in each store of 10: the old floor (half the whole range, 9.5%) hid this 8% shift;
    # the 95% CI of the median over 10 rounds leaves the stray round out
    base = rounds_store(tmp_path, "base", {cell: [10.0 + 0.01 * i for i in range(9)] + [12.0]}, seed=1)
    new = rounds_store(tmp_path, "new", {cell: [10.8 + 0.01 * i for i in range(9)] + [12.1]}, seed=2)
    row = rows_by(compare(base, new))[cell]
    assert row["test"] == "mann-whitney-rounds" and row["p_holm"] < 0.01
    assert row["noise_floor"] < 0.01
    assert row["verdict"] == "regressed"


def test_noise_floor_shrinks_as_rounds_are_added():
    rng = np.random.default_rng(5)
    spread = {n: np.median([noise_floor(rng.lognormal(0, 0.05, n)) for _ in range(200)]) for n in (6, 12, 48)}
    assert spread[6] > spread[12] > spread[48]
    assert noise_floor([10.0, 12.0]) == pytest.approx(math.sqrt(1.2) - 1)   # 2 rounds: half the range
    assert noise_floor([10.0]) is None


def test_significant_change_inside_the_noise_floor_is_unstable():
    cell = list(CELLS)[0]
    # every round slower (signed-rank p = 0.0005), median +6.7%, but the rounds disagree on how much:
    # the median's 95% CI spans 3% to 42%, so whether it is beyond the 5% threshold is unknown
    logs = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.3, 0.35, 0.4, 0.45]
    row = rows_by(compare_ab(explicit_pairs([math.exp(x) for x in logs])))[cell]
    assert row["test"] == "wilcoxon-paired-rounds" and row["p_holm"] < 0.01
    assert row["ratio"] == pytest.approx(math.exp(0.065), rel=1e-6)
    assert row["noise_floor"] == pytest.approx(math.exp((0.35 - 0.03) / 2) - 1, rel=1e-6)
    assert row["verdict"] == "unstable" and "noise floor" in row["note"]


def test_overlapping_round_cis_beyond_threshold_are_unstable(tmp_path):
    cell = list(CELLS)[0]
    base = rounds_store(tmp_path, "base", {cell: [10.0, 10.4, 10.8]}, seed=1)   # floor 3.9%
    new = rounds_store(tmp_path, "new", {cell: [10.7, 11.2, 11.6]}, seed=2)     # +7.7%, ranges overlap
    row = rows_by(compare(base, new))[cell]
    assert row["test"] == "ci-overlap" and row["ratio"] == pytest.approx(11.2 / 10.4)
    assert row["verdict"] == "unstable" and "not significant" in row["note"]
    apart = rounds_store(tmp_path, "apart", {cell: [10.9, 11.2, 11.6]}, seed=3)
    assert rows_by(compare(base, apart))[cell]["verdict"] == "regressed"


def explicit_pairs(ratios: list[float]):
    cell = list(CELLS)[0]
    states = [17.5 if i % 3 else 27.0 for i in range(len(ratios))]
    b = record(cell, lognormal(1, 20.0), rounds=len(ratios)).replace(round_medians_ms=tuple(states))
    n = record(cell, lognormal(2, 20.0), rounds=len(ratios)).replace(
        round_medians_ms=tuple(s * q for s, q in zip(states, ratios)))
    return [(b, n)]


def test_ab_inconsistent_ratios_are_not_significant():
    cell = list(CELLS)[0]
    # median ratio +8%, but 4 of 12 rounds went the other way: signed-rank p > 0.01
    ratios = [1.08, 1.09, 0.95, 1.10, 1.07, 0.93, 1.12, 1.08, 0.96, 1.09, 1.06, 0.94]
    row = rows_by(compare_ab(explicit_pairs(ratios)))[cell]
    assert row["test"] == "wilcoxon-paired-rounds" and row["p_value"] > 0.01
    assert row["ratio"] == pytest.approx(1.075, rel=1e-3)
    assert row["verdict"] == "unstable"
    # with 5 rounds the CI of the median ratio must exclude 1: one round the other way keeps it unstable
    few = rows_by(compare_ab(explicit_pairs([1.3, 1.31, 0.99, 1.29, 1.32])))[cell]
    assert few["test"] == "ci-paired-rounds" and few["verdict"] == "unstable"
    consistent = rows_by(compare_ab(explicit_pairs([1.3, 1.31, 1.28, 1.29, 1.32])))[cell]
    assert consistent["verdict"] == "unstable"  # too few rounds to decide at 99%
    twelve = rows_by(compare_ab(explicit_pairs([1.3, 1.31, 1.28, 1.29, 1.32, 1.3, 1.27, 1.33, 1.3, 1.29, 1.31, 1.3])))[cell]
    assert twelve["test"] == "wilcoxon-paired-rounds" and twelve["verdict"] == "regressed"


def test_ab_paired_block_ratios_see_through_speed_flips_between_workers():
    cell = list(CELLS)[0]
    rng = np.random.default_rng(11)
    # the two workers of a round landed in independent machine states (17.5 or 27 ms): their ratios
    # swing +-50% and hide a 10% slowdown; the paired blocks of each round saw one state and read ~1.10
    b_states, n_states = rng.choice([17.5, 27.0], size=12), rng.choice([17.5, 27.0], size=12)
    b = record(cell, lognormal(1, 20.0), rounds=12).replace(round_medians_ms=tuple(float(s) for s in b_states))
    n = record(cell, lognormal(2, 22.0), rounds=12).replace(round_medians_ms=tuple(float(s * 1.10) for s in n_states))
    unpaired = rows_by(compare_ab([(b, n)]))[cell]
    assert unpaired["verdict"] == "unstable"
    n = n.replace(paired_ratios=tuple(float(1.10 * rng.lognormal(0, 0.01)) for _ in range(12)))
    paired = rows_by(compare_ab([(b, n)]))[cell]
    assert paired["verdict"] == "regressed" and "alternating blocks" in paired["note"]
    assert paired["ratio"] == pytest.approx(1.10, rel=0.02)
    n = n.replace(paired_ratios=n.paired_ratios[:11])   # a round without its paired pass: fall back, never mis-pair
    assert rows_by(compare_ab([(b, n)]))[cell]["verdict"] == "unstable"
