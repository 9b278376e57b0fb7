"""Per-layer quantization sensitivity (issue 15, part 2): a layer made fragile ranks first."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from ebgraphs import unnamed_cnn
from ebtest import run_cli
from onnx import TensorProto, helper, numpy_helper

from effbench.analysis.sensitivity import analyse


def _mlp(path, fragile: bool):
    rng = np.random.default_rng(0)
    w = [rng.standard_normal(s).astype(np.float32) * 0.3 for s in ((16, 32), (32, 32), (32, 10))]
    if fragile:
        # fc0 reads an input channel that is 1000x the others (see _inputs) and all but ignores it: the one
        # int8 scale of fc0's input has no room left for the channels that matter (an outlier channel)
        w[0][0, :] = 1e-4
    inits = [numpy_helper.from_array(a, f"w{i}") for i, a in enumerate(w)]
    nodes = [helper.make_node("Gemm", ["x", "w0"], ["h0"], name="fc0"), helper.make_node("Relu", ["h0"], ["r0"]),
             helper.make_node("Gemm", ["r0", "w1"], ["h1"], name="fc1"), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return str(path)


def _inputs(outlier: bool) -> np.ndarray:
    x = np.random.default_rng(1).random((128, 16)).astype(np.float32)
    if outlier:
        x[:, 0] *= 1000.0
    return x


def test_a_fragile_layer_ranks_first_and_keeping_it_recovers(tmp_path):
    x = _inputs(outlier=True)
    res = analyse(_mlp(tmp_path / "m.onnx", fragile=True), {"x": x}, None, "static", {"x": x}, samples=128,
                  profile_runs=3)
    rows = res["rows"]
    assert [r["layer"] for r in rows][0] == "fc0" and len(rows) == res["layers_in_graph"] == 3
    fragile, others = rows[0], rows[1:]
    assert all(fragile["only_this"]["sqnr_db"] < o["only_this"]["sqnr_db"] - 10 for o in others)
    # keeping fc0 in FP32 with the rest quantized is far closer to FP32 than quantizing everything
    assert fragile["all_but_this"]["sqnr_db"] > res["uniform_int8"]["sqnr_db"] + 10
    assert all(r["time_share"] is not None and r["macs"] > 0 for r in rows)
    plain = _inputs(outlier=False)
    sturdy = analyse(_mlp(tmp_path / "s.onnx", fragile=False), {"x": plain}, None, "static", {"x": plain},
                     samples=128, profile_runs=3)
    assert min(r["only_this"]["sqnr_db"] for r in sturdy["rows"]) > fragile["only_this"]["sqnr_db"] + 10


@pytest.mark.spawns
def test_sensitivity_command_on_a_suite_model(tmp_path, cache_dir):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: sens\nmodels:\n  - id: cnn\n    source: {builtin: digits-cnn}\n    dataset: {builtin: digits}\n"
                     "precisions: [fp32, int8]\nrunners: [{name: onnxruntime, threads: 1}]\nbatch_sizes: [1]\n")
    out = tmp_path / "out"
    res = run_cli("sensitivity", str(suite), "--model", "cnn", "-o", str(out), "--cache-dir", str(cache_dir),
                  "--samples", "64", "--no-progress")
    assert res.returncode == 0, res.stderr
    data = json.loads((out / "sensitivity" / "cnn" / "sensitivity.json").read_text())
    # one row per Conv / Gemm layer of the graph, each measured
    assert sorted(r["op_type"] for r in data["rows"]) == ["Conv", "Conv", "Gemm", "Gemm"]
    assert data["metric"] == "top1" and data["samples"] == 64 and data["method"] == "static"
    assert all(isinstance(r["only_this"]["metric"], float) for r in data["rows"])
    assert (out / "sensitivity" / "cnn" / "sensitivity.csv").read_text().count("\n") == 5
    bad = run_cli("sensitivity", str(suite), "--model", "nope", "-o", str(out), "--cache-dir", str(cache_dir))
    assert bad.returncode == 2 and "no model 'nope'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.spawns
def test_advise_measures_candidates_and_writes_a_plan(tmp_path, cache_dir):
    import onnxruntime as ort
    suite = tmp_path / "s.yaml"
    suite.write_text("name: adv\nmodels:\n  - id: cnn\n    source: {builtin: digits-cnn}\n    dataset: {builtin: digits}\n"
                     "precisions: [fp32, int8]\nrunners: [{name: onnxruntime, threads: 1}]\nbatch_sizes: [8]\n"
                     "measure: {warmup_s: 0.05, min_time_s: 0.2, max_time_s: 1, rounds: 1}\n")
    out = tmp_path / "out"
    res = run_cli("advise", str(suite), "--model", "cnn", "--floor", "0.98", "-o", str(out), "--cache-dir",
                  str(cache_dir), "--samples", "64", "--no-progress")
    assert res.returncode == 0, res.stderr
    plan = json.loads((out / "advise" / "cnn" / "plan.json").read_text())
    cands = plan["candidates"]
    assert set(cands) == {"int8", "int8, 1 layer kept FP32", "int8, 2 layers kept FP32", "int8, 3 layers kept FP32",
                          "int8, 4 layers kept FP32", "fp16", "int4"}
    assert cands["int4"]["layers"] == {"node_conv2d": "fp32", "node_conv2d_1": "fp32", "node_linear": "int4",
                                       "node_linear_1": "int4"}  # weight-only int4 on the matrix products
    for c in cands.values():  # every candidate measured: quality on the dataset, speedup paired with FP32
        assert 0 < c["relative_quality"] <= 1.05 and c["speedup_vs_fp32"]["ci"][0] <= c["speedup_vs_fp32"]["value"]
        assert set(c["layers"]) == {"node_conv2d", "node_conv2d_1", "node_linear", "node_linear_1"}
    assert plan["meets_floor"] and cands[plan["chosen"]]["meets_floor"] and plan["relative_quality"] >= 0.98
    best = max((c for c in cands.values() if c["meets_floor"]), key=lambda c: c["speedup_vs_fp32"]["value"])
    # the plan is the fastest, or as fast within the CIs and the smallest of those
    b = best["speedup_vs_fp32"]
    tied = {n for n, c in cands.items() if c["meets_floor"] and c["speedup_vs_fp32"]["value"] >= b["ci"][0]
            and b["value"] <= c["speedup_vs_fp32"]["ci"][1]}
    assert plan["chosen"] in tied and plan["size_bytes"] == min(cands[n]["size_bytes"] for n in tied)
    uniform = {n: c["speedup_vs_fp32"]["value"] for n, c in cands.items() if n in ("int8", "fp16", "int4")
               and c["meets_floor"]}
    assert plan["best_uniform"]["precision"] == max(uniform, key=uniform.get)
    assert set(plan["pareto"]) == _front({n: (c["speedup_vs_fp32"]["value"], c["relative_quality"])
                                          for n, c in cands.items()})
    ort.InferenceSession(plan["artifact"], providers=["CPUExecutionProvider"])  # the chosen graph runs
    # the report beside the store shows the sensitivity and the advisor's candidates
    run = run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir), "--quick", "--no-progress",
                  "--only", "cnn/fp32/*")
    assert run.returncode == 0, run.stderr
    page = (out / "index.html").read_text()
    assert "Where to spend precision" in page and "node_conv2d_1" in page and "(plan)" in page
    assert 'id="fig-precision-sens-0"' in page and 'id="fig-precision-cands-0"' in page
    import plotly.graph_objects as go

    from effbench.report.layers import candidates_figure, sensitivity_figure
    sens = json.loads((out / "sensitivity" / "cnn" / "sensitivity.json").read_text())
    for fig in (candidates_figure(plan), sensitivity_figure(sens)):
        go.Figure(fig)  # plotly accepts it
    cands = candidates_figure(plan)["data"]
    assert sum(len(t["x"]) for t in cands if t["mode"] == "markers" and not t["name"].startswith("plan")) == len(plan["candidates"])
    bad = run_cli("advise", str(suite), "--model", "cnn", "--floor", "1.5", "-o", str(out), "--cache-dir", str(cache_dir))
    assert bad.returncode == 2 and "--floor must be in (0, 1]" in bad.stderr
    bad = run_cli("advise", str(suite), "--model", "cnn", "--objective", "speed", "-o", str(out))
    assert bad.returncode == 2 and "--objective must be one of" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.spawns
def test_a_plan_is_a_precision_of_the_suite(tmp_path, cache_dir):
    """`{mixed: {plan: plan.json}}` builds the plan (int8 except the layers it keeps in FP32) and measures
    it like any variant; a missing plan file is one line naming the field."""
    from effbench.results.store import load
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"model": "cnn", "method": "static",
                                "layers": {"node_conv2d": "fp32", "node_conv2d_1": "int8", "node_linear": "int8",
                                           "node_linear_1": "int8"}}))
    body = ("name: mixed\nmodels:\n  - id: cnn\n    source: {builtin: digits-cnn}\n    dataset: {builtin: digits}\n"
            "precisions: [fp32, {mixed: {plan: PLAN}}]\nrunners: [{name: onnxruntime, threads: 1}]\nbatch_sizes: [8]\n")
    suite = tmp_path / "s.yaml"
    suite.write_text(body.replace("PLAN", "plan.json"))  # relative to the suite's folder
    out = tmp_path / "out"
    res = run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir), "--quick", "--no-progress",
                  "--no-report")
    assert res.returncode == 0, res.stderr
    rec = load(out).by_id()["cnn/mixed/onnxruntime/b8/single-stream"]
    assert rec.ok, rec.reason
    assert rec.variant.build["kept_fp32"] == ["node_conv2d"] and "static int8" in rec.variant.method
    assert rec.comparison.method == "paired" and rec.quality.relative is not None
    suite.write_text(body.replace("PLAN", "nowhere/plan.json"))
    bad = run_cli("validate", str(suite))
    assert bad.returncode == 2 and "precisions[1].plan" in bad.stderr and "plan file not found" in bad.stderr


def _front(points: dict[str, tuple[float, float]]) -> set[str]:
    """The (speedup, quality) Pareto front, computed here: no other point is as good on both and better on one."""
    return {n for n, (s, q) in points.items()
            if not any(s2 >= s and q2 >= q and (s2 > s or q2 > q) for s2, q2 in points.values())}


def test_the_plan_is_the_fastest_candidate_or_the_smallest_it_ties_with(tmp_path):
    """The advisor's choice on candidates with known figures: the fastest that meets the floor unless a smaller
    one is as fast within both CIs; the best uniform one; the Pareto front; no plan when none meets the floor."""
    from effbench.analysis.advisor import _choose

    def cand(speedup, ci, quality, size, uniform):
        path = tmp_path / f"c{size}.onnx"
        path.write_bytes(b"x" * size)
        return {"path": str(path), "speedup_vs_fp32": {"value": speedup, "ci": list(ci)}, "relative_quality": quality,
                "meets_floor": quality >= 0.98, "size_bytes": size, "uniform": uniform, "layers": {"fc0": "?"}}
    cands = {"int8": cand(1.50, (1.40, 1.60), 0.990, 100, True),
             "int8, 1 layer kept FP32": cand(1.55, (1.45, 1.65), 0.995, 150, False),   # fastest, ties with int8
             "int8, 2 layers kept FP32": cand(1.20, (1.10, 1.30), 0.999, 200, False),  # slower: no tie
             "fp16": cand(1.05, (0.95, 1.15), 1.000, 300, True),
             "int4": cand(2.00, (1.90, 2.10), 0.900, 50, True)}                         # below the floor
    plan = _choose({}, cands, "latency", 0.98, tmp_path)
    assert plan["chosen"] == "int8" and plan["size_bytes"] == 100 and plan["speedup_vs_fp32"]["value"] == 1.50
    assert (tmp_path / "plan.onnx").read_bytes() == b"x" * 100
    assert "2 candidates are as fast within their CIs" in plan["note"]
    assert plan["best_uniform"]["precision"] == "int8"
    assert set(plan["pareto"]) == _front({n: (c["speedup_vs_fp32"]["value"], c["relative_quality"])
                                          for n, c in cands.items()}) == {
        "int8, 1 layer kept FP32", "int8, 2 layers kept FP32", "fp16", "int4"}
    cands["int8, 1 layer kept FP32"]["speedup_vs_fp32"] = {"value": 1.75, "ci": [1.65, 1.85]}  # clearly fastest
    plan = _choose({}, cands, "latency", 0.98, tmp_path)
    assert plan["chosen"] == "int8, 1 layer kept FP32" and "note" not in plan  # no tie, and it beats uniform int8
    assert _choose({}, cands, "size", 0.98, tmp_path)["chosen"] == "int8"  # the smallest that meets the floor
    for c in cands.values():
        c["meets_floor"] = False
    none = _choose({}, cands, "latency", 0.98, tmp_path)
    assert none["chosen"] is None and none["reason"] == "no candidate keeps 98.00% of FP32's quality; FP32 stays the choice"


def test_advisor_objectives_size_and_energy(tmp_path):
    """--objective size picks the smallest candidate that meets the floor; energy is modeled per candidate
    from its layers' precisions (system energy where an idle power is stated, else the dynamic part,
    labelled), with a CI from the paired speedup."""
    from effbench.analysis.advisor import advise, energy_per_inference
    x = _inputs(outlier=False)
    model = _mlp(tmp_path / "m.onnx", fragile=False)
    layers = ["fc0", "fc1", "fc2"]
    macs = {"fc0": 16 * 32, "fc1": 32 * 32, "fc2": 32 * 10}
    budget = {"warmup_s": 0.02, "min_time_s": 0.1, "max_time_s": 0.3, "min_warmup_calls": 3, "min_n": 16}
    pj = {"fp32": 4.6, "fp16": 1.5, "int8": 0.23}
    common = dict(labels=None, method="static", calibration={"x": x}, ranking=layers, layers=layers, floor=0.5,
                  batch_size=8, budget=budget, samples=64, layer_macs=macs)
    size = advise(model, {"x": x}, out_dir=str(tmp_path / "size"), objective="size",
                  energy_model={"pj_per_mac": pj, "pj_per_dram_byte": 160.0, "idle_w": None, "source": "test"}, **common)
    meeting = [c for c in size["candidates"].values() if c["meets_floor"]]
    assert size["objective"] == "size" and size["size_bytes"] == min(c["size_bytes"] for c in meeting)
    int8 = size["candidates"]["int8"]["energy"]
    assert int8["system_j"] is None and int8["basis"] == "dynamic part only" and "no idle power" in int8["reason"]
    assert int8["vs_fp32"] < 1  # int8 MACs and weight bytes cost less than FP32's
    energy = advise(model, {"x": x}, out_dir=str(tmp_path / "energy"), objective="energy",
                    energy_model={"pj_per_mac": pj, "pj_per_dram_byte": 160.0, "idle_w": 10.0, "source": "test"},
                    **common)
    for c in energy["candidates"].values():
        e = c["energy"]
        assert e["system_j"] > e["dynamic_j"] > 0 and e["vs_fp32_ci"][0] <= e["vs_fp32"] <= e["vs_fp32_ci"][1]
    chosen = energy["candidates"][energy["chosen"]]["energy"]["system_j"]
    assert chosen == min(c["energy"]["system_j"] for c in energy["candidates"].values() if c["meets_floor"])
    # the model itself: 1000 MACs at fp32 and nothing else, 1 ms at 10 W idle
    e = energy_per_inference({"a": "fp32"}, {"a": 1000}, 0, 0, 0, 1e-3, {"pj_per_mac": pj, "pj_per_dram_byte": 0,
                                                                        "idle_w": 10.0, "source": "t"})
    assert e["dynamic_j"] == 4.6e-9 and e["system_j"] == 10.0 * 1e-3 + 4.6e-9


def test_advisor_searches_past_six_kept_layers_by_quality():
    """When keeping the 0..6 most fragile layers in FP32 all miss the floor, the advisor keeps more, by
    quality alone (doubling, then bisection), and finds the fewest that meet it."""
    from effbench.analysis.advisor import _search_kept
    built = []

    def keep(k):
        built.append(k)
        return {"relative_quality": min(1.0, k / 10)}
    misses = [{"relative_quality": k / 10} for k in range(7)]
    text, found = _search_kept(keep, 0.85, 20, 6, misses)
    assert found == 9 and built == [12, 9, 7, 8] and "the fewest that meet it, 9" in text
    built.clear()
    text, found = _search_kept(lambda k: {"relative_quality": 0.5}, 0.85, 20, 6, misses)
    assert found is None and "none meets the floor" in text
    text, found = _search_kept(keep, 0.5, 20, 6, misses)  # k = 5 already meets it: no search
    assert found is None and built == [] and "at least one meets" in text


@pytest.mark.spawns
def test_torch_sensitivity_quantizes_each_linear_module(tmp_path, cache_dir):
    """--runner torch: torch's per-module dynamic int8 on each nn.Linear, scored on the dataset; the
    convolutions it cannot quantize per module are named, not silently dropped."""
    suite = tmp_path / "s.yaml"
    suite.write_text("name: sens\nmodels:\n  - id: cnn\n    source: {builtin: digits-cnn}\n    dataset: {builtin: digits}\n"
                     "precisions: [fp32, int8]\nrunners: [{name: torch, threads: 1}]\nbatch_sizes: [1]\n")
    out = tmp_path / "out"
    res = run_cli("sensitivity", str(suite), "--model", "cnn", "--runner", "torch", "-o", str(out), "--cache-dir",
                  str(cache_dir), "--samples", "64", "--no-progress")
    assert res.returncode == 0, res.stderr
    data = json.loads((out / "sensitivity" / "cnn-torch" / "sensitivity.json").read_text())
    assert data["runner"] == "torch" and data["layers_in_graph"] == 2
    assert sorted(r["layer"] for r in data["rows"]) == ["head.1", "head.3"]
    assert all(r["macs"] > 0 and r["time_share"] > 0 and isinstance(r["only_this"]["sqnr_db"], float) for r in data["rows"])
    assert "Conv2d" in data["not_quantized"] and "not analysed: Conv2d" in res.stdout
    bad = run_cli("sensitivity", str(suite), "--model", "cnn", "--runner", "tensorrt", "-o", str(out))
    assert bad.returncode == 2 and "--runner 'tensorrt' is not a registered runner" in bad.stderr


def test_a_fragile_layer_stays_in_higher_precision_in_the_plan(tmp_path):
    """The advisor on a model whose fc0 is fragile (outlier input channel): uniform int8 misses the floor,
    every int8 candidate that meets it keeps fc0 in FP32, and the plan never runs fc0 in int8."""
    from effbench.analysis.advisor import advise
    x = _inputs(outlier=True)
    model = _mlp(tmp_path / "m.onnx", fragile=True)
    ranking = [r["layer"] for r in analyse(model, {"x": x}, None, "static", {"x": x}, samples=128, profile_runs=3)["rows"]]
    budget = {"warmup_s": 0.02, "min_time_s": 0.1, "max_time_s": 0.3, "min_warmup_calls": 3, "min_n": 16}
    plan = advise(model, {"x": x}, None, "static", {"x": x}, ranking, ["fc0", "fc1", "fc2"], str(tmp_path / "o"),
                  floor=0.999, batch_size=8, budget=budget, samples=128)
    cands = plan["candidates"]
    assert not cands["int8"]["meets_floor"] and cands["int8, 1 layer kept FP32"]["meets_floor"]
    assert all(c["layers"]["fc0"] == "fp32" for n, c in cands.items() if n.startswith("int8") and c["meets_floor"])
    assert plan["meets_floor"] and plan["layers"]["fc0"] != "int8" and plan["relative_quality"] >= 0.999
    # int4 weight-only: each Gemm rewritten as MatMul becomes MatMulNBits (block 32; fc0's 16 inputs are padded
    # to one block), and each is named back to its layer
    assert cands["int4"]["layers"] == {"fc0": "int4", "fc1": "int4", "fc2": "int4"} and "int4" not in plan["not_built"]


def test_only_candidates_inside_each_others_cis_tie():
    """A slower candidate whose CI a noisy moment made wide does not tie with the fastest one."""
    from effbench.analysis.advisor import _tied
    sp = lambda v, lo, hi: {"speedup_vs_fp32": {"value": v, "ci": [lo, hi]}}  # noqa: E731
    meeting = {"int8, 6 kept": sp(1.41, 0.79, 1.49), "fp16": sp(0.87, 0.25, 1.03), "int8, 5 kept": sp(1.38, 1.2, 1.5)}
    assert _tied(meeting, "int8, 6 kept") == ["int8, 6 kept", "int8, 5 kept"]


def test_layers_of_a_graph_without_node_names_are_told_apart(tmp_path):
    """A graph whose nodes have no names: each layer is its own row (index and op type), quantizing it alone
    or keeping it alone in FP32 builds another model each time, and the advisor's candidates keep 0, 1, 2 ...
    layers in FP32 (each a bigger graph than the last), not the whole model FP32."""
    from effbench.analysis.advisor import advise
    model = unnamed_cnn(tmp_path / "cnn.onnx")
    x = np.random.default_rng(1).random((64, 1, 8, 8)).astype(np.float32)
    res = analyse(model, {"x": x}, None, "static", {"x": x}, samples=64, profile_runs=3)
    rows = {r["layer"]: r for r in res["rows"]}
    assert sorted(rows) == ["Conv_0", "Conv_2", "Gemm_5", "Gemm_7"]
    assert [rows[k]["op_type"] for k in sorted(rows)] == ["Conv", "Conv", "Gemm", "Gemm"]
    alone = [r["only_this"]["sqnr_db"] for r in rows.values()]
    kept = [r["all_but_this"]["sqnr_db"] for r in rows.values()]
    # one layer int8 is closer to FP32 than all of them; the four are four different models
    assert all(s > res["uniform_int8"]["sqnr_db"] + 0.5 for s in alone) and len({round(s, 4) for s in alone}) == 4
    # "kept FP32" quantizes the other three: never FP32 itself (SQNR None), never four times the same model
    assert None not in kept and len({round(s, 4) for s in kept}) == 4
    assert all(r["time_share"] for r in rows.values())  # the profiler's kernels found their layers
    ranking = [r["layer"] for r in res["rows"]]
    budget = {"warmup_s": 0.01, "min_time_s": 0.05, "max_time_s": 0.2, "min_warmup_calls": 3, "min_n": 16}
    plan = advise(model, {"x": x}, None, "static", {"x": x}, ranking, sorted(ranking), str(tmp_path / "o"),
                  floor=0.5, batch_size=8, budget=budget, samples=64)
    cands = plan["candidates"]
    names = ["int8"] + [f"int8, {k} layer{'s' if k > 1 else ''} kept FP32" for k in range(1, 5)]
    assert [sorted(n for n, p in cands[c]["layers"].items() if p == "fp32") for c in names] == \
        [sorted(ranking[:k]) for k in range(5)]
    sizes = [cands[c]["size_bytes"] for c in names]
    # five different graphs (keeping the big Gemm_5 in FP32 keeps its 32 k weights in 4 bytes each)
    assert len(set(sizes)) == 5 and sizes[0] < min(sizes[1:]) and max(sizes) < Path(model).stat().st_size + 4096
    assert len({round(cands[c]["sqnr_db"] or 999, 4) for c in names}) == 5
