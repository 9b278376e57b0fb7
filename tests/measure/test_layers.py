"""Per-layer profiles: ONNX Runtime's kernel trace folded onto the graph's layers (issue 15, part 1)."""
from __future__ import annotations

import csv
import json

import pytest
from ebtest import run_cli

from effbench.measure.layers import fold, kernel_times, summary


def _ev(name, op, dur):
    return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "args": {"op_name": op}}


def test_kernels_fold_onto_their_layers_and_runtime_kernels_stand_apart():
    trace = []
    for _ in range(4):  # 4 profiled calls
        trace += [_ev("node_conv2d_token_1", "QLinearConv", 60), _ev("Transpose_token_7", "Transpose", 20),
                  _ev("node_relu", "Relu", 10), _ev("node_relu", "Relu", 10)]  # a kernel run twice per call
    trace.append({"cat": "Session", "name": "model_run", "dur": 999})
    kernels = kernel_times(trace, calls=4)
    assert kernels["node_relu"]["per_call"] == 2 and kernels["node_relu"]["us"] == 20
    by_node = [{"name": "node_conv2d", "op_type": "Conv", "macs": 3_000_000, "bytes": 1000},
               {"name": "node_relu", "op_type": "Relu", "macs": 0, "bytes": 500}]
    rows = fold(kernels, by_node)
    assert [r.layer for r in rows] == ["node_conv2d", "Transpose_token_7", "node_relu"]
    conv = rows[0]
    assert conv.op_type == "Conv" and conv.kernel == "QLinearConv" and conv.time_us == 60
    assert conv.share == pytest.approx(0.6) and conv.gflops == pytest.approx(2 * 3e6 / 60e3)
    assert rows[1].added_by_runtime and rows[1].op_type == "" and rows[1].macs is None
    s = summary(rows)
    assert s["share_without_macs"] == pytest.approx(0.4) and s["share_added_by_runtime"] == pytest.approx(0.2)


def test_a_graph_without_node_names_folds_onto_its_layers(tmp_path):
    """No node named (onnx.helper): layers are `<op>_<index>` in the counter, the wiring and the profile, so
    each Conv and Gemm finds its kernels (a fused unnamed Gemm would otherwise be ONNX Runtime's 'fused ')."""
    import numpy as np
    from ebgraphs import unnamed_cnn

    from effbench.measure.flops import count_work
    from effbench.measure.layers import links
    from effbench.runners.onnxruntime import profile_graph
    path = unnamed_cnn(tmp_path / "cnn.onnx")
    feeds = {"x": np.random.default_rng(0).random((1, 1, 8, 8)).astype(np.float32)}
    rows = fold(kernel_times(profile_graph(path, 1, feeds, 3), 3), count_work(path).by_node, links(path))
    assert sorted(r.layer for r in rows if r.macs) == ["Conv_0", "Conv_2", "Gemm_5", "Gemm_7"]
    assert [r.layer for r in rows if r.added_by_runtime and r.kernel not in ("ReorderInput", "ReorderOutput")] == []


def _suite(tmp_path, runners="[{name: onnxruntime, threads: 1}]"):
    p = tmp_path / "s.yaml"
    p.write_text(f"name: layers\nmodels:\n  - id: cnn\n    source: {{builtin: digits-cnn}}\nprecisions: [fp32]\n"
                 f"runners: {runners}\nbatch_sizes: [4]\n")
    return p


@pytest.mark.spawns
def test_layers_command_profiles_one_cell_and_the_report_shows_it(tmp_path, cache_dir):
    out = tmp_path / "out"
    res = run_cli("layers", str(_suite(tmp_path)), "--cell", "cnn/fp32/onnxruntime/b4/*", "-o", str(out),
                  "--cache-dir", str(cache_dir), "--runs", "10", "--no-progress")
    assert res.returncode == 0, res.stderr
    folder = out / "layers" / "cnn_fp32_onnxruntime_b4_single-stream"
    data = json.loads((folder / "layers.json").read_text())
    rows = data["rows"]
    # every Conv and Gemm of the graph is a layer with its MACs; the shares add up to the whole
    mac_rows = [r for r in rows if r["macs"]]
    assert sorted(r["op_type"] for r in mac_rows) == ["Conv", "Conv", "Gemm", "Gemm"]
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert all(r["time_us"] > 0 and r["gflops"] > 0 for r in mac_rows)
    assert data["summary"]["total_us"] > 0 and data["runs"] == 10
    with open(folder / "layers.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert "GFLOP/s" in res.stdout and "the MAC count does not explain" in res.stdout
    # the report beside the store shows the section
    run = run_cli("run", str(_suite(tmp_path)), "-o", str(out), "--cache-dir", str(cache_dir), "--quick",
                  "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "Where time goes" in (out / "index.html").read_text()


@pytest.mark.spawns
def test_a_torch_cell_is_profiled_module_by_module(tmp_path, cache_dir):
    """torch's profiler, leaf module by leaf module, with each module's MACs; what runs outside the leaf
    modules is its own row, so the shares add up to the whole call."""
    out = tmp_path / "out"
    suite = _suite(tmp_path, runners="[{name: torch, threads: 1}]")
    res = run_cli("layers", str(suite), "--cell", "cnn/fp32/torch/b4/*", "-o", str(out), "--cache-dir",
                  str(cache_dir), "--runs", "10", "--no-progress")
    assert res.returncode == 0, res.stderr
    data = json.loads((out / "layers" / "cnn_fp32_torch_b4_single-stream" / "layers.json").read_text())
    rows = {r["layer"]: r for r in data["rows"]}
    mac_rows = [r for r in data["rows"] if r["macs"]]
    assert sorted(r["op_type"] for r in mac_rows) == ["Conv2d", "Conv2d", "Linear", "Linear"]
    assert all(r["time_us"] > 0 and r["gflops"] > 0 for r in mac_rows)
    assert sum(r["share"] for r in data["rows"]) == pytest.approx(1.0)
    assert "(outside leaf modules)" in rows and "torch's profiler" in data["timing"]
    # the modules' MACs add up to what the graph counts for the same model
    onnx = run_cli("layers", str(_suite(tmp_path)), "--cell", "cnn/fp32/onnxruntime/b4/*", "-o", str(out),
                   "--cache-dir", str(cache_dir), "--runs", "3", "--no-progress")
    graph = json.loads((out / "layers" / "cnn_fp32_onnxruntime_b4_single-stream" / "layers.json").read_text())
    assert onnx.returncode == 0 and sum(r["macs"] for r in mac_rows) == sum(r["macs"] or 0 for r in graph["rows"])


@pytest.mark.spawns
@pytest.mark.parametrize("cell,message", [("nope/*", "matches 0 cells"),
                                          ("cnn/bf16/onnxruntime/*", "bf16")])
def test_a_cell_that_cannot_be_profiled_is_one_line(tmp_path, cache_dir, cell, message):
    suite = _suite(tmp_path, runners="[{name: onnxruntime, threads: 1}, {name: torch, threads: 1}]")
    suite.write_text(suite.read_text().replace("precisions: [fp32]", "precisions: [fp32, bf16]"))
    res = run_cli("layers", str(suite), "--cell", cell, "-o", str(tmp_path / "o"), "--cache-dir", str(cache_dir),
                  "--runs", "3", "--no-progress")
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
