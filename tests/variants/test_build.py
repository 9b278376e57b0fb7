import json
from pathlib import Path

import numpy as np
import pytest

from effbench.errors import UserError
from effbench.runners import Unsupported, get_runner
from effbench.variants import build_variant, cache_key, validate_options

LABELS = ["fp32", "fp16", "bf16", "int8", "int8-dynamic", "int8-static", "int4", "binary"]


def _build(art, label, cache, calibration=None, **options):
    prec, _, method = label.partition("-")
    return build_variant(art, label, prec, method or None, validate_options(prec, options), cache, calibration=calibration)


def _run(art, v, runner, x):
    r = get_runner(runner)
    assert r.supports(v).ok, r.supports(v).reason
    return r.load(v, 1, {"artifact": art.to_json(), "compile": False}).run({"x": x})[0]


@pytest.fixture(scope="module")
def mlp_variants(mlp_artifact, cache, calib_mlp):
    return {label: _build(mlp_artifact, label, cache, calib_mlp) for label in LABELS}


def test_every_precision_builds_or_says_why(mlp_variants, mlp_artifact, calib_mlp):
    x = calib_mlp["x"][:8]
    ref = {rn: _run(mlp_artifact, mlp_variants["fp32"], rn, x) for rn in ("onnxruntime", "torch")}
    np.testing.assert_allclose(ref["onnxruntime"], ref["torch"], atol=1e-4)
    tol = {"fp16": 0.02, "bf16": 0.1, "int8": 0.15, "int8-dynamic": 0.15, "int8-static": 0.3, "int4": 0.6}
    for label, v in mlp_variants.items():
        assert v.precision == label.split("-")[0]
        for side, runner in (("onnx_path", "onnxruntime"), ("torch", "torch")):
            present = getattr(v, side) is not None
            reason = v.onnx_reason if side == "onnx_path" else v.torch_reason
            assert present != bool(reason), (label, side, reason)
            cpu_loads = side != "onnx_path" or v.build["onnx"].get("cpu_provider", "loads") == "loads"
            if present and label in tol and cpu_loads:
                out = _run(mlp_artifact, v, runner, x)
                err = float(np.abs(out - ref[runner]).max())
                assert err < tol[label] * float(np.abs(ref[runner]).max()), (label, runner, err)
                assert err > 0, (label, runner)  # really a different precision
    # what this machine can and cannot do (docs/runtime-notes.md), with the runtime's own words
    # bf16: the graph is kept for providers that run it (CUDA); this CPU provider says at load why it cannot
    bf16 = mlp_variants["bf16"]
    assert bf16.onnx_path is not None and bf16.onnx_reason is None
    note = bf16.build["onnx"]["cpu_provider"]
    assert "NOT_IMPLEMENTED" in note or "INVALID" in note, note
    with pytest.raises(Unsupported, match="NOT_IMPLEMENTED|INVALID"):
        _run(mlp_artifact, bf16, "onnxruntime", x)
    assert mlp_variants["int8-static"].torch is None and "QuantStub" in mlp_variants["int8-static"].torch_reason
    assert mlp_variants["int8-static"].method == "static-qdq"
    assert mlp_variants["int8-dynamic"].method == "dynamic"
    assert mlp_variants["binary"].emulated and not mlp_variants["int8"].emulated


def test_int8_sizes_about_4x(mlp_variants):
    fp, q = mlp_variants["fp32"].stats, mlp_variants["int8-dynamic"].stats
    for side in ("onnx", "torch"):
        ratio = fp[side]["weight_bytes"] / q[side]["weight_bytes"]
        assert 3.3 < ratio < 4.05, (side, ratio)
        assert 8 <= q[side]["weight_bits"] < 9.7
        assert q[side]["params"] == fp[side]["params"]


def test_int4_cuts_matmul_weights_more_than_4x(mlp_variants):
    s = mlp_variants["int4"].stats["onnx"]["matmul_weight_bytes"]
    assert s["fp32"] / s["int4"] >= 4.0
    assert mlp_variants["int4"].build["onnx"]["gemm_rewritten_as_matmul"] == 3
    # the torch side: the 10-wide output layer does not fit aten's int4 kernel (N % 16) and stays FP32
    t = mlp_variants["int4"].build["torch"]
    assert t["layers"] == 2 and len(t["kept_fp32"]) == 1 and t["kept_fp32"][0].startswith("4 ")


def test_binary_is_bit_packed_and_lists_its_nodes(mlp_variants):
    v = mlp_variants["binary"]
    layers = v.stats["onnx"]["binarized_layers"]
    # the middle Linear(128 -> 64): 8192 weights -> 1024 bytes of signs + 64 float32 scales
    assert layers["fp32_bytes"] == 4 * 8192 and layers["packed_bytes"] == 1024 + 4 * 64
    assert layers["ratio"] == pytest.approx(32768 / 1280, abs=1e-3)
    assert len(v.binary_nodes) == 1  # 3 weight layers, first and last kept in FP32
    assert v.build["onnx"]["kept_fp32"] and v.binary_nodes[0] not in v.build["onnx"]["kept_fp32"]
    assert v.stats["torch"]["binarized_layers"]["ratio"] == layers["ratio"]
    from pathlib import Path
    assert Path(v.stats["onnx"]["packed_path"]).stat().st_size == v.stats["onnx"]["size_bytes"]


def test_binary_keep_fp32_option(mlp_artifact, cache):
    v = _build(mlp_artifact, "binary", cache, keep_fp32=[])
    assert len(v.binary_nodes) == 3
    with pytest.raises(UserError, match="not a weight layer"):
        _build(mlp_artifact, "binary", cache, keep_fp32=["nope"])


def test_binary_counts_one_bit_macs(mlp_variants):
    from effbench.measure.flops import count_work
    v = mlp_variants["binary"]
    plain = count_work(v.onnx_path, batch_size=1)
    binary = count_work(v.onnx_path, batch_size=1, binary_nodes=set(v.binary_nodes))
    assert binary.macs == plain.macs and binary.bops < plain.bops


def test_int8_auto_follows_graph_kind(cnn_artifact, cache, calib_cnn):
    v = _build(cnn_artifact, "int8", cache, calib_cnn)
    assert v.method == "static-qdq" and "CNN" in v.build["onnx"]["chosen_because"]
    assert v.build["onnx"]["calibration_inputs"] == "the model's dataset"
    v = _build(cnn_artifact, "int8", cache.parent / "other-cache", None)
    assert v.method == "dynamic" and "no dataset" in v.build["onnx"]["chosen_because"]


def test_int8_on_a_cnn_without_a_dataset_calibrates_on_generated_inputs(cnn_artifact, cache):
    """Dynamic ConvInteger ran a held-out CNN 7x slower than FP32: a run without a dataset calibrates
    static QDQ on inputs generated from the input spec instead, and the variant says so."""
    from effbench.variants import GeneratedCalibration
    gen = GeneratedCalibration(cnn_artifact.feeds(64, None, seed=1))
    v = _build(cnn_artifact, "int8", cache.parent / "generated-cache", gen)
    assert v.method == "static-qdq" and "generated" in v.build["onnx"]["chosen_because"]
    assert v.build["onnx"]["calibration_inputs"].startswith("generated")
    # the same model calibrated on its dataset is another variant (another cache entry)
    assert cache_key(cnn_artifact, "int8", {}, gen) != cache_key(cnn_artifact, "int8", {}, {"x": gen["x"]})
    dyn = _build(cnn_artifact, "int8-dynamic", cache.parent / "generated-cache", gen)
    assert dyn.method == "dynamic"      # asked for: no calibration


def test_static_without_dataset_is_a_user_error(mlp_artifact, tmp_path):
    with pytest.raises(UserError, match="needs calibration data") as e:
        _build(mlp_artifact, "int8-static", tmp_path, None)
    assert e.value.field == "precisions"


def test_cache_returns_the_same_variant(mlp_artifact, cache, mlp_variants, calib_mlp):
    again = _build(mlp_artifact, "int8", cache, calib_mlp)  # the same calibration: the cached build returns
    assert json.dumps(again.to_json(), sort_keys=True) == json.dumps(mlp_variants["int8"].to_json(), sort_keys=True)


def test_other_calibration_data_is_another_variant(mlp_artifact, calib_mlp):
    """A cached static build must not come back for another calibration split (it once did: the key held only
    the model, label and options, so a variant calibrated on other samples was returned as is)."""
    other = {"x": calib_mlp["x"][::-1].copy()}
    assert cache_key(mlp_artifact, "int8-static", {}, calib_mlp) != cache_key(mlp_artifact, "int8-static", {}, other)
    assert cache_key(mlp_artifact, "int8-static", {}, calib_mlp) == cache_key(mlp_artifact, "int8-static", {},
                                                                              {"x": calib_mlp["x"].copy()})


def test_record_section_per_side(mlp_variants):
    v = mlp_variants["int8-static"]
    sec = v.record_section("onnx")
    assert sec.method == "static-qdq" and sec.weight_bits == v.stats["onnx"]["weight_bits"]
    sec = mlp_variants["int8"].record_section("torch")
    assert sec.method == "dynamic" and sec.size_bytes == mlp_variants["int8"].stats["torch"]["size_bytes"]


def test_cached_fp32_of_a_moved_onnx_file_points_at_where_it_is_now(tmp_path):
    """The variant cache is keyed by the source's content. A suite run on a/net.onnx, a/ deleted, then the
    same file as b/net.onnx: the fp32 variant used to keep a/'s path and its cells came out unsupported
    (NO_SUCHFILE)."""
    import shutil

    from effbench.config.suite import ModelSpec
    from effbench.models.sources import prepare
    from effbench.variants import build_variant
    cache = tmp_path / "cache"
    src = Path(__file__).resolve().parents[1] / "data" / "models" / "tiny.onnx"
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(src, tmp_path / folder / "net.onnx")
        spec = ModelSpec.model_validate({"id": "net", "source": {"onnx": "net.onnx"}})
        art = prepare(spec, 0, base_dir=tmp_path / folder, suite_file="s.yaml", cache_dir=cache)
        v = build_variant(art, "fp32", "fp32", None, {}, cache)
        assert v.onnx_path == art.onnx_path and Path(v.onnx_path).is_file()
        shutil.rmtree(tmp_path / folder)  # the first folder is gone before the second run
    assert len(list((cache / "variants").iterdir())) == 1  # the second build came from the cache
