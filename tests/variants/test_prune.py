"""Issue 16: pruning (magnitude, channel, 2:4) as an option of any precision, and ternary weights."""
import numpy as np
import pytest

from effbench.runners import Unsupported, get_runner
from effbench.variants import build_variant, validate_options
from effbench.variants.specs import check_prune, prune_suffix, split_label


def _build(art, precision, cache, calibration=None, **options):
    opts = validate_options(precision, options)
    label = precision + prune_suffix(opts.get("prune"))
    return build_variant(art, label, precision, None, options, cache, calibration=calibration)


def _run(art, v, runner, feeds):
    r = get_runner(runner)
    assert r.supports(v).ok, r.supports(v).reason
    return r.load(v, 1, {"artifact": art.to_json(), "compile": False}).run(feeds)[0]


# ------------------------------------------------------------------------------------------- grammar
@pytest.mark.parametrize("value,msg", [
    ({"method": "magnitude"}, r"needs amount with method magnitude; write prune: \{method: magnitude, amount: 0.5\}"),
    ({"method": "magnitude", "amount": 1.5}, r"'prune.amount' for fp32 must be a fraction between 0 and 1"),
    ({"method": "magnitude", "amount": True}, "must be a fraction"),
    ({"method": "magnitud", "amount": 0.5}, r"must be one of magnitude, channel, 2:4, got 'magnitud' \(did you mean"),
    ({"method": 124}, r"YAML reads an unquoted 2:4 as a number; write method: '2:4' in quotes"),
    ({"method": "channel", "amount": 0.3, "scope": "global"}, r"'prune.scope' is not a channel pruning option"),
    ({"method": "magnitude", "amount": 0.5, "scope": "model"}, r"must be one of layer, global, got 'model'"),
    ({"method": "2:4", "amount": 0.5}, r"'prune.amount' is not a 2:4 pruning option; 2:4 takes method$"),
    ("magnitude", r"must be a mapping, got 'magnitude'; write prune:"),
])
def test_bad_prune_options_are_one_line_with_the_field_and_the_fix(value, msg):
    with pytest.raises(ValueError, match=msg) as e:
        validate_options("fp32", {"prune": value})
    assert "\n" not in str(e.value)


def test_prune_defaults_labels_and_where_it_applies():
    assert validate_options("int8", {"prune": {"method": "channel", "amount": 0.3}})["prune"] == \
        {"method": "channel", "amount": 0.3, "norm": "l1", "round_to": 1}
    assert check_prune("fp32", {"method": "magnitude", "amount": 0.5}) == \
        {"method": "magnitude", "amount": 0.5, "scope": "layer"}
    assert prune_suffix(check_prune("fp32", {"method": "magnitude", "amount": 0.5, "scope": "global"})) == \
        "+magnitude50-global"
    assert prune_suffix(check_prune("fp32", {"method": "2:4"})) == "+2:4"
    assert split_label("int8-static+channel30") == ("int8", "static", "channel30")
    with pytest.raises(ValueError, match="not available for mixed"):
        validate_options("mixed", {"plan": "p.json", "prune": {"method": "2:4"}})


def test_suite_labels_pruned_variants_and_refuses_bad_ones(tmp_path):
    from effbench.config.suite import load_suite
    from effbench.errors import UserError
    p = tmp_path / "s.yaml"
    p.write_text("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\n"
                 "precisions: [fp32, ternary, {fp32: {prune: {method: magnitude, amount: 0.5}}},\n"
                 "             {int8: {method: static, prune: {method: channel, amount: 0.3}}},\n"
                 "             {fp32: {prune: {method: '2:4'}}}]\n")
    suite = load_suite(p)
    labels = [(c.label, c.precision, c.method) for c in suite.precision_choices]
    assert labels == [("fp32", "fp32", None), ("ternary", "ternary", None), ("fp32+magnitude50", "fp32", None),
                      ("int8-static+channel30", "int8", "static"), ("fp32+2:4", "fp32", None)]
    assert {c.cell_id.split("/")[1] for c in suite.cells()} == {lab for lab, _, _ in labels}
    p.write_text("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\n"
                 "precisions: [fp32,\n  {fp32: {prune: {method: channel, amount: 2}}}]\n")
    with pytest.raises(UserError) as e:
        load_suite(p)
    line = e.value.one_line()
    assert "s.yaml:4: precisions[1]" in line and "prune.amount" in line and "write amount: 0.5" in line


# ------------------------------------------------------------------------------------------ magnitude
def test_magnitude_zeros_half_of_every_layer_on_both_sides(cnn_artifact, cache, calib_cnn):
    from effbench.measure.flops import count_work
    v = _build(cnn_artifact, "fp32", cache, prune={"method": "magnitude", "amount": 0.5})
    assert v.label == "fp32+magnitude50" and not v.emulated
    for side in ("onnx", "torch"):
        sp = v.stats[side]["sparsity"]
        assert sp["sparse_kernels"] is False and "dense kernels ran" in sp["kernels"]
        assert abs(sp["overall"] - 0.5) <= 0.01 and len(sp["layers"]) == 4
        assert all(abs(f - 0.5) <= 0.01 for f in sp["layers"].values()), sp["layers"]
        st = sp["storage"]  # bitmask at 50%: half the values + one bit each, well under the dense file
        assert st["sparse_bytes"] < 0.6 * st["dense_bytes"] and st["tensors_stored_sparse"]
    dense = count_work(cnn_artifact.onnx_path, batch_size=1)
    work = count_work(v.onnx_path, batch_size=1)
    assert work.macs == dense.macs and dense.effective_macs == dense.macs
    assert work.effective_macs == pytest.approx(dense.macs / 2, rel=0.01)
    x = {"x": calib_cnn["x"][:8]}
    onnx_out, torch_out = _run(cnn_artifact, v, "onnxruntime", x), _run(cnn_artifact, v, "torch", x)
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-5)  # the same pruning on both sides
    assert v.record_section("torch").sparsity["overall"] == v.stats["torch"]["sparsity"]["overall"]


def test_global_magnitude_and_int8_after_pruning(mlp_artifact, cache, calib_mlp):
    v = _build(mlp_artifact, "fp32", cache, prune={"method": "magnitude", "amount": 0.5, "scope": "global"})
    sp = v.stats["onnx"]["sparsity"]
    assert abs(sp["overall"] - 0.5) <= 0.01 and len(set(sp["layers"].values())) > 1  # layers differ, the total is half
    q = _build(mlp_artifact, "int8", cache, calib_mlp, prune={"method": "magnitude", "amount": 0.5})
    assert q.precision == "int8" and q.method == "dynamic"
    assert q.build["onnx"]["prune"]["method"] == "magnitude" and q.build["onnx"]["prune"]["fine_tuned"] is False
    # symmetric int8 keeps the zeros: the int8 graph's MACs are half effective too
    from effbench.measure.flops import count_work
    work = count_work(q.onnx_path, batch_size=1)
    assert work.effective_macs == pytest.approx(work.macs / 2, rel=0.02)
    assert q.stats["onnx"]["compression_vs_fp32"] > 3


# -------------------------------------------------------------------------------------------- channel
def test_channel_pruning_shrinks_graph_and_module_alike(cnn_artifact, cache, calib_cnn):
    from effbench.measure.flops import count_work
    amount = 0.5
    v = _build(cnn_artifact, "fp32", cache, prune={"method": "channel", "amount": amount})
    pr = v.stats["onnx"]["pruning"]
    assert set(pr["layers"]) == {"node_conv2d", "node_conv2d_1", "node_linear"}
    assert "graph output" in pr["left_whole"]["node_linear_1"]
    assert all(lay["kept"] == lay["channels"] // 2 for lay in pr["layers"].values())
    dense, work = count_work(cnn_artifact.onnx_path, batch_size=1), count_work(v.onnx_path, batch_size=1)
    assert work.params < dense.params and pr["params"] < pr["params_fp32"]
    # every layer here is pruned (the last one on its input side): at most (1 - amount) + 10% of FP32's MACs
    assert work.macs <= (1 - amount + 0.10) * dense.macs
    assert v.stats["torch"]["pruning"]["params"] == pr["params"]
    assert v.stats["torch"]["pruning"]["checked_against_graph"]["max_relative_diff"] < 1e-5
    x = {"x": calib_cnn["x"][:8]}
    np.testing.assert_allclose(_run(cnn_artifact, v, "onnxruntime", x), _run(cnn_artifact, v, "torch", x), atol=1e-5)
    assert v.base_graph == v.onnx_path  # the torch side's work is counted on the pruned graph


def test_int8_builds_from_the_channel_pruned_model(cnn_artifact, cache, calib_cnn):
    v = _build(cnn_artifact, "int8", cache, calib_cnn, prune={"method": "channel", "amount": 0.3})
    assert v.label == "int8+channel30" and v.method == "static-qdq" and v.onnx_path and v.torch
    assert v.stats["onnx"]["params"] < v.stats["onnx"]["pruning"]["params_fp32"]
    x = {"x": calib_cnn["x"][:4]}
    assert _run(cnn_artifact, v, "onnxruntime", x).shape == (4, 10)
    assert _run(cnn_artifact, v, "torch", x).shape == (4, 10)  # skeleton resized, int8 layers swapped in


# ------------------------------------------------------------------------------------------------ 2:4
def test_two_four_is_unsupported_on_cpu_with_the_runtimes_reasons(mlp_artifact, cache, calib_mlp):
    from effbench.variants.prune import two_four_mask
    mask = two_four_mask(np.random.default_rng(0).standard_normal((8, 16)), 1)
    assert (mask.reshape(-1, 4).sum(1) == 2).all()
    v = _build(mlp_artifact, "fp32", cache, prune={"method": "2:4"})
    assert v.onnx_path is None and "no kernel that skips 2:4" in v.onnx_reason
    assert v.stats["onnx"]["sparsity"]["overall"] == 0.5
    assert v.torch["semi_structured"] and "CUDA" in v.torch["cpu_reason"]
    with pytest.raises(Unsupported, match="CUDA"):
        _run(mlp_artifact, v, "torch", {"x": calib_mlp["x"][:2]})


# -------------------------------------------------------------------------------------------- ternary
def test_ternarize_follows_twn_and_packs_at_two_bits():
    from effbench.variants.ternary import pack2, ternarize, unpack2
    w = np.array([[1.0, -0.1, 0.5, -2.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    codes, scale = ternarize(w, 0)
    # row 0: mean|w| = 0.9, threshold 0.63: 1.0 and -2.0 survive, a = 1.5; row 1 all zero: a = 0
    assert codes.tolist() == [[1, 0, 0, -1], [0, 0, 0, 0]] and scale.tolist() == [1.5, 0.0]
    c = np.random.default_rng(0).integers(-1, 2, 37).astype(np.int8)
    packed = pack2(c)
    assert packed.nbytes == 10 and (unpack2(packed, 37) == c).all()


def test_ternary_variant_is_emulated_packed_and_counts_two_bit_bops(mlp_artifact, cache, calib_mlp):
    from effbench.measure.flops import count_work
    v = _build(mlp_artifact, "ternary", cache)
    assert v.emulated and v.method == "twn-threshold" and len(v.node_bits) == 1
    layers = v.stats["onnx"]["ternarized_layers"]  # the middle Linear(128 -> 64): 8192 weights at 2 bits
    assert layers["packed_bytes"] == 8192 // 4 + 4 * 64 and layers["fp32_bytes"] == 4 * 8192
    assert v.model_bytes("onnx") == v.stats["onnx"]["size_bytes"]  # the packed file, not the graph run
    assert v.stats["onnx"]["compression_vs_fp32"] > 1.5  # first and last layers kept FP32
    plain = count_work(v.onnx_path, batch_size=1)
    two_bit = count_work(v.onnx_path, batch_size=1, node_bits=v.node_bits)
    node = next(n for n in plain.by_node if n["name"] in v.node_bits)
    assert plain.bops - two_bit.bops == node["macs"] * (32 - 2) * 32
    x = {"x": calib_mlp["x"][:4]}
    np.testing.assert_allclose(_run(mlp_artifact, v, "onnxruntime", x), _run(mlp_artifact, v, "torch", x), atol=1e-4)


def test_effective_macs_see_zeros_through_dequantize_linear():
    from onnx import TensorProto, helper, numpy_helper

    from effbench.measure.flops import count_work
    w = np.arange(1, 65, dtype=np.float32).reshape(8, 8)
    w[:, :2] = 0                                    # a quarter of the float weight is zero
    q = np.arange(1, 65).reshape(8, 8).astype(np.int8)
    q[:4] = 3                                       # half of the int8 weight sits on its zero point (3)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(q, "q"),
             numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(3, np.int8), "z")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["wq"], name="dq"),
             helper.make_node("MatMul", ["h", "wq"], ["g"], name="mm2"),
             helper.make_node("MatMul", ["g", "g2"], ["y"], name="act")]  # activation x activation: in full
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]),
                                           helper.make_tensor_value_info("g2", TensorProto.FLOAT, [8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    work = count_work(model, batch_size=2)
    assert work.macs == 3 * 2 * 8 * 8
    assert work.effective_macs == 128 * 0.75 + 128 * 0.5 + 128


def test_round_to_keeps_kernel_friendly_channel_counts(cnn_artifact, cache):
    v = _build(cnn_artifact, "fp32", cache, prune={"method": "channel", "amount": 0.3, "round_to": 8})
    assert v.label == "fp32+channel30-x8"
    # 8 -> 6 -> 8 (whole), 16 -> 11 -> 16 (whole), 32 -> 22 -> 24
    assert [lay["kept"] for lay in v.stats["onnx"]["pruning"]["layers"].values()] == [8, 16, 24]
    with pytest.raises(ValueError, match="'prune.round_to' for fp32 must be a whole number"):
        validate_options("fp32", {"prune": {"method": "channel", "amount": 0.3, "round_to": 0.5}})


@pytest.mark.parametrize("name", ["pruning.yaml", "minilm-pruning.yaml"])
def test_the_shipped_pruning_suites_validate(name):
    from pathlib import Path

    from effbench.config.suite import load_suite
    suite = load_suite(Path(__file__).resolve().parents[2] / "suites" / name)
    labels = [c.label for c in suite.precision_choices]
    assert {"fp32", "ternary", "fp32+magnitude50", "fp32+channel30", "fp32+channel50"} <= set(labels)
