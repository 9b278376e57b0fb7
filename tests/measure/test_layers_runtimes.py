"""`effbench layers` names the profiler it used: each runtime's own (ONNX Runtime's, OpenVINO's PERF_COUNT,
ExecuTorch's ETDump), or one line saying the runtime has none (LiteRT), never another runtime's numbers."""
from __future__ import annotations

import csv
import json

import pytest
from ebtest import require, run_cli

from effbench.report.layers import load_profiles, section


def _suite(tmp_path, runners: str):
    p = tmp_path / "s.yaml"
    p.write_text("name: layers-runtimes\nmodels:\n  - id: cnn\n    source: {builtin: digits-cnn}\nprecisions: [fp32]\n"
                 f"runners: {runners}\nbatch_sizes: [4]\n")
    return p


@pytest.mark.spawns
@pytest.mark.parametrize("runner,module,extra,profiler", [
    ("onnxruntime", "onnxruntime", "test", "ONNX Runtime profiler"),
    ("openvino", "openvino", "openvino", "OpenVINO PERF_COUNT"),
    ("executorch", "executorch", "executorch", "ExecuTorch ETDump"),
])
def test_each_runtime_is_profiled_by_its_own_profiler_and_says_which(tmp_path, cache_dir, runner, module, extra,
                                                                      profiler):
    require(module, extra)
    out = tmp_path / "out"
    res = run_cli("layers", str(_suite(tmp_path, f"[{{name: {runner}, threads: 1}}]")), "--cell", f"cnn/fp32/{runner}/b4/*",
                  "-o", str(out), "--cache-dir", str(cache_dir), "--runs", "10", "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    folder = out / "layers" / f"cnn_fp32_{runner}_b4_single-stream"
    data = json.loads((folder / "layers.json").read_text())
    assert data["profiler"] == profiler and data["runtime"] == runner and data["runtime_version"]
    rows = data["rows"]
    assert rows and all(r["time_us"] > 0 for r in rows) and sum(r["share"] for r in rows) == pytest.approx(1.0)
    with open(folder / "layers.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and {t["profiler"] for t in table} == {profiler}
    assert {t["runtime_version"] for t in table} == {data["runtime_version"]}
    assert res.stdout.splitlines()[0].startswith(f"{profiler} ({runner} {data['runtime_version']})")
    if runner != "onnxruntime":   # the new runtimes say which kernel ran, in which precision
        assert all(r["kernel"] for r in rows)
        assert all(r["precision"] for r in rows if r["op_type"] in ("Convolution", "FullyConnected"))
    assert profiler in section(load_profiles(out))


@pytest.mark.spawns
def test_a_litert_cell_says_in_one_line_that_its_runtime_has_no_per_op_profiler(tmp_path, cache_dir):
    require("ai_edge_litert", "litert")
    out = tmp_path / "out"
    res = run_cli("layers", str(_suite(tmp_path, "[{name: litert, threads: 1}, {name: onnxruntime, threads: 1}]")),
                  "--cell", "cnn/fp32/litert/b4/*", "-o", str(out), "--cache-dir", str(cache_dir), "--no-progress")
    assert res.returncode == 1, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "unsupported: LiteRT's Python interpreter exposes no per-op profiler (ai-edge-litert"), res.stdout
    assert "Traceback" not in res.stderr and "ONNX Runtime" not in res.stdout
    assert not (out / "layers").exists()   # nothing written: no other runtime's profile stands in
