"""The ExecuTorch runner (XNNPACK delegate) on tiny models, with the real exporter, quantizer and runtime."""
from pathlib import Path

import numpy as np
import pytest
from ebtest import require

require("executorch", "executorch")

from effbench.runners.base import Unsupported
from effbench.runners.executorch import ExecuTorchOptions, ExecuTorchRunner
from effbench.variants import Variant, build_variant

HERE = Path(__file__).parent
# XNNPACK's f32 GEMM blocks and sums the 64- and 128-long dot products in another order than torch's
# oneDNN/MKL: a few float32 ulps on outputs of order 0.1-1 (6e-8 measured here), far below 1e-5.
FP32_ATOL = 1e-5
# lowering to XNNPACK serializes through ExecuTorch's bundled `flatc` binary, run as a subprocess
SPAWNS = pytest.mark.spawns


def _prepare(name: str, shape: list, cache: Path):
    from effbench.config.suite import ModelSpec
    from effbench.models.sources import prepare
    spec = ModelSpec.model_validate({"id": f"et-{name}", "source": {"torch": f"deploynets:{name}"},
                                     "inputs": {"x": {"shape": shape, "dtype": "float32"}}})
    return prepare(spec, 0, base_dir=HERE, suite_file="t.yaml", cache_dir=cache)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("executorch-cache")


@pytest.fixture(scope="module")
def mlp(cache):
    return _prepare("mlp", ["batch", 64], cache)


@pytest.fixture(scope="module")
def cnn(cache):
    return _prepare("cnn2", ["batch", 3, 16, 16], cache)


def _x(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def _load(art, cache, label, **kw):
    precision, _, method = label.partition("-")
    v = build_variant(art, label, precision, method or None, {}, cache)
    return ExecuTorchRunner().load(v, 2, {"artifact": art.to_json(), "cache_dir": str(cache), **kw})


def _torch(name: str, x: np.ndarray) -> np.ndarray:
    import deploynets
    import torch
    with torch.inference_mode():
        return getattr(deploynets, name)()(torch.from_numpy(x)).numpy()


@SPAWNS
def test_fp32_mlp_matches_torch_and_is_fully_delegated(mlp, cache):
    x = _x((4, 64))
    sess = _load(mlp, cache, "fp32")
    np.testing.assert_allclose(sess.run({"x": x})[0], _torch("mlp", x), atol=FP32_ATOL, rtol=0)
    d = sess.info["delegation"]
    assert d["fraction"] == 1.0 and d["not_delegated"] == {} and d["subgraphs"] == 1
    assert d["delegated_ops"] == d["by_operator"]["aten_linear_default"]["delegated"] + \
        d["by_operator"]["aten_relu_default"]["delegated"] == 5
    assert sess.info["threads"] == 2 and sess.info["program_for"] == {"x": [4, 64]}
    out = sess.timed_call({"x": x})()
    np.testing.assert_allclose(out[0].numpy(), _torch("mlp", x), atol=FP32_ATOL, rtol=0)


@SPAWNS
def test_cnn_delegated_fraction_counts_what_xnnpack_left(cnn, cache):
    x = _x((4, 3, 16, 16))
    sess = _load(cnn, cache, "fp32")
    np.testing.assert_allclose(sess.run({"x": x})[0], _torch("cnn2", x), atol=FP32_ATOL, rtol=0)
    d = sess.info["delegation"]
    assert 0 < d["fraction"] <= 1 and d["fraction"] == round(d["delegated_ops"] / d["total_ops"], 4)
    assert d["by_operator"]["aten_convolution_default"] == {"delegated": 2, "not_delegated": 0}
    left = sum(d["not_delegated"].values())
    assert d["total_ops"] - d["delegated_ops"] == left


@SPAWNS
def test_int8_pt2e_runs_delegated_and_close_to_fp32(mlp, cache):
    calib = {"x": _x((64, 64), seed=1)}
    x = _x((4, 64))
    sess = _load(mlp, cache, "int8", calibration=calib)
    out, want = sess.run({"x": x})[0], _torch("mlp", x)   # the program is built for the first inputs' shapes
    built = sess.info["built"]
    assert built["quantized_by"] == "pt2e XNNPACKQuantizer"
    assert built["calibration_inputs"].startswith("the model's calibration inputs")
    assert built["max_rel_err_vs_torch"] < 0.05
    d = sess.info["delegation"]
    assert d["fraction"] == 1.0 and any(op.startswith("quantized_decomposed_quantize") for op in d["by_operator"])
    assert np.abs(out - want).max() < 0.05 * np.abs(want).max()
    again = _load(mlp, cache, "int8", calibration=calib)
    again.run({"x": x})
    assert again.info["built"]["cache"].startswith("read from")


@SPAWNS
def test_int8_calibrates_on_the_split_kept_with_the_variant(mlp, cache):
    calib = {"x": _x((40, 64), seed=7)}
    v = build_variant(mlp, "int8", "int8", None, {}, cache, calibration=calib)
    sess = ExecuTorchRunner().load(v, 2, {"artifact": mlp.to_json(), "cache_dir": str(cache)})
    given = ExecuTorchRunner().load(v, 2, {"artifact": mlp.to_json(), "cache_dir": str(cache), "calibration": calib})
    x = _x((4, 64))
    out = sess.run({"x": x})[0]
    assert sess.info["built"]["calibration_inputs"] == v.calibration["source"]
    np.testing.assert_array_equal(out, given.run({"x": x})[0])
    assert given.info["built"]["cache"].startswith("read from")   # the same calibration: the same program


def test_bf16_is_unsupported_with_the_partitioners_outcome(mlp, cache):
    sess = _load(mlp, cache, "bf16")
    with pytest.raises(Unsupported, match="XNNPACK's partitioner took none of the graph's"):
        sess.run({"x": _x((4, 64))})


@SPAWNS
def test_int4_weight_only_is_refused_when_the_program_disagrees_with_torch(mlp, cache):
    """executorch 1.5.1 + torchao 0.18.0: XNNPACK takes IntxWeightOnlyConfig's graph but its output is
    wrong by orders of magnitude, and the portable path lacks the op; the reason carries both."""
    sess = _load(mlp, cache, "int4")
    with pytest.raises(Unsupported) as e:
        sess.run({"x": _x((4, 64))})
    assert "differs from the same module in torch" in str(e.value)
    assert "Missing out variants" in str(e.value)  # ExecuTorch's own words for the undelegated program


@SPAWNS
def test_int4_8da4w_option_builds_and_runs(mlp, cache):
    x = _x((4, 64))
    sess = _load(mlp, cache, "int4", runner_options=ExecuTorchOptions(int4_scheme="8da4w", int4_group_size=32))
    out, want = sess.run({"x": x})[0], _torch("mlp", x)
    assert sess.info["plan"] == {"precision": "int4", "scheme": "8da4w", "group_size": 32}
    assert sess.info["delegation"]["fraction"] == 1.0
    assert np.abs(out - want).max() < 0.1 * np.abs(want).max()


def test_onnx_only_models_and_unknown_precisions_are_unsupported(mlp, cache):
    v = Variant(model_id="m", label="ternary", precision="ternary", method=None)
    s = ExecuTorchRunner().supports(v)
    assert not s.ok and "ternary" in s.reason
    from dataclasses import replace
    onnx_only = replace(mlp, source_kind="onnx", torch_factory=None, onnx_sha256="onnx-only")
    v = build_variant(onnx_only, "int8", "int8", None, {}, cache)
    with pytest.raises(Unsupported, match="no torch module"):
        ExecuTorchRunner().load(v, 1, {"artifact": onnx_only.to_json(), "cache_dir": str(cache)})


def test_options_are_validated():
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        ExecuTorchOptions(int4_scheme="4w")
    with pytest.raises(ValidationError):
        ExecuTorchOptions.model_validate({"int4_group": 32})
