"""Paired comparisons between runtimes and between models, end to end (issue 31 item 5): real workers, real
runtimes, small budgets. ONNX Runtime against torch on the builtin mlp, and a small CNN against a residual one
that shares its inputs, each with its CI over rounds in fresh workers."""
from __future__ import annotations

from pathlib import Path

import pytest
from ebtest import run_cli

QUICK = "measure: {warmup_s: 0.02, min_time_s: 0.08, max_time_s: 0.3, target_rel_ci: 0.05, rounds: 2}\n"


def _suite(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(body + "batch_sizes: [1]\ndevices: []\n" + QUICK)
    return p


@pytest.mark.spawns
def test_onnxruntime_and_torch_paired_in_one_worker_with_a_ci_over_rounds(tmp_path, cache_dir):
    from effbench.execution.run import run
    from effbench.report import write_report
    suite = _suite(tmp_path, """name: rt
models:
  - id: mlp
    source: {builtin: mlp}
    dataset: {builtin: digits}
precisions: [fp32, fp16]
runners: [{name: onnxruntime, threads: 1}, {name: torch, threads: 1}]
compare: runtimes
quality: {metric: top1}
""")
    results = run(suite, out_dir=tmp_path / "out", cache_dir=cache_dir, progress=False)
    by = results.by_id()
    base = "mlp/fp32/onnxruntime/b1/single-stream"
    assert all(r.ok for r in results), [(r.cell_id, r.reason) for r in results if not r.ok]
    for cid in ("mlp/fp32/torch/b1/single-stream", "mlp/fp16/torch/b1/single-stream"):
        r = by[cid]
        c = r.comparisons["runtime:onnxruntime"]
        assert c.baseline == base and c.method == "paired" and c.reason is None
        assert c.rounds == 2 and len(c.round_speedups) == 2 and c.ci_scope == "between rounds"
        assert c.ci[0] < c.speedup < c.ci[1] and c.speedup > 0
        assert c.extra["thread_pools"]["runtimes"] == ["onnxruntime", "torch"]
        # the baseline session in the torch worker: its own pool, spinning off, and the record says so
        assert c.extra["baseline_runtime"]["thread_pool"] == "per session"
        assert "allow_spinning=0" in c.extra["baseline_runtime"]["spinning"]
        q = r.quality.vs_baseline["runtime:onnxruntime"]
        assert q["baseline"] == base and q["baseline_value"] == by[base].quality.value
        assert q["relative"] == pytest.approx(r.quality.value / by[base].quality.value)
    # each round was one worker's pairing: its own CI covers one moment, from at least the loop's 6 cycles
    raw = [r for r in results.raw if r.cell_id == "mlp/fp16/torch/b1/single-stream"]
    assert len(raw) == 2 and all(r.comparisons["runtime:onnxruntime"].ci_scope == "one moment (1 round)"
                                 and r.comparisons["runtime:onnxruntime"].cycles >= 6 for r in raw)
    # the baseline runner's own cells: their FP32 twin is the baseline; its group had no other runtime in it
    ort16 = by["mlp/fp16/onnxruntime/b1/single-stream"]
    twin = ort16.comparisons["runtime:onnxruntime"]
    assert twin.speedup == ort16.comparison.speedup and twin.ci == ort16.comparison.ci and twin.extra["pairing"]
    assert ort16.variant.runtime["thread_pool"] == "shared by the worker's sessions"
    assert by[base].comparisons == {}
    paths = write_report(results, tmp_path / "report")
    md = paths["markdown"].read_text()
    assert "## Fastest runtime × precision per model at the quality floor" in md
    assert "paired vs mlp fp32 on onnxruntime, 4 candidates" in md
    assert "## Paired comparisons across runtimes and models" in md
    assert 'id="runtimes"' in paths["html"].read_text()


@pytest.mark.slow
def test_a_small_cnn_against_a_larger_one_that_shares_its_inputs(tmp_path, cache_dir):
    from effbench.execution.run import run
    suite = _suite(tmp_path, """name: bm
models:
  - id: student
    source: {builtin: digits-cnn}
    dataset: {builtin: digits}
  - id: teacher
    source: {builtin: digits-resnet}
    dataset: {builtin: digits}
precisions: [fp32]
runners: [{name: onnxruntime, threads: 1}]
compare: {baseline_model: teacher}
quality: {metric: top1}
""")
    results = run(suite, out_dir=tmp_path / "out", cache_dir=cache_dir, progress=False, only="student/*")
    by = results.by_id()
    assert list(by) == ["student/fp32/onnxruntime/b1/single-stream"]   # the teacher is timed, not recorded
    r = by["student/fp32/onnxruntime/b1/single-stream"]
    c = r.comparisons["model:teacher"]
    assert c.baseline == "teacher/fp32/onnxruntime/b1/single-stream" and c.method == "paired"
    assert c.rounds == 2 and c.ci[0] < c.speedup < c.ci[1]
    assert c.speedup > 1.5   # ~0.1M vs ~17M MACs per image: the student is faster by far, in any state of the machine
    q = r.quality.vs_baseline["model:teacher"]
    assert q["metric"] == "top1" and q["value"] == r.quality.value and 0.5 < q["baseline_value"] <= 1
    assert q["relative"] == pytest.approx(q["value"] / q["baseline_value"]) and q["fidelity"]["top1_agreement"] > 0.5


@pytest.mark.spawns
def test_models_whose_prepared_inputs_differ_are_one_line_exit_2(tmp_path, cache_dir):
    suite = _suite(tmp_path, """name: bad
models:
  - id: mlp
    source: {builtin: mlp}
    dataset: {builtin: digits}
  - id: cnn
    source: {builtin: digits-cnn}
    dataset: {builtin: digits}
runners: [{name: onnxruntime, threads: 1}]
compare: {baseline_model: cnn}
""")
    res = run_cli("run", str(suite), "-o", str(tmp_path / "out"), "--cache-dir", str(cache_dir), "--no-report",
                  "--no-progress")
    assert res.returncode == 2, res.stdout + res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert "s.yaml:10: compare.baseline_model: model 'mlp' cannot be compared with baseline_model 'cnn': their " \
           "inputs differ (x: [1, 64] float32 vs x: [1, 1, 8, 8] float32)" in line and "Traceback" not in res.stderr
