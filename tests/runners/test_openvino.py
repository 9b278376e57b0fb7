"""The OpenVINO runner on tiny models, with the real runtime and NNCF (no mocks)."""
import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ebtest import require

require("openvino", "openvino")
require("nncf", "openvino")

from effbench.runners.base import Unsupported
from effbench.runners.openvino import OpenVinoOptions, OpenVinoRunner
from effbench.variants import Variant, build_variant

HERE = Path(__file__).parent
# FP32 vs FP32 on the same graph: convolutions of up to 16 x 3 x 3 = 144 products summed in another order
# differ by a few float32 ulps (about 1e-7 on outputs of order 0.1; 1.5e-8 measured here). A silent bf16
# run (8-bit mantissa) is 3e-4 off on this CNN, so this tolerance also tells the two apart.
FP32_ATOL = 1e-5


def _prepare(name: str, shape: list, cache: Path):
    from effbench.config.suite import ModelSpec
    from effbench.models.sources import prepare
    spec = ModelSpec.model_validate({"id": f"ov-{name}", "source": {"torch": f"deploynets:{name}"},
                                     "inputs": {"x": {"shape": shape, "dtype": "float32"}}})
    return prepare(spec, 0, base_dir=HERE, suite_file="t.yaml", cache_dir=cache)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(scope="module")
def cnn(cache):
    return _prepare("cnn2", ["batch", 3, 16, 16], cache)


@pytest.fixture(scope="module")
def mlp(cache):
    return _prepare("mlp", ["batch", 64], cache)


def _x(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def _load(art, cache, label, **kw):
    precision, _, method = label.partition("-")
    v = build_variant(art, label, precision, method or None, {}, cache)
    opts = {"artifact": art.to_json(), "cache_dir": str(cache), **kw}
    return OpenVinoRunner().load(v, 2, opts)


def _ort(art, x):
    import onnxruntime as ort
    return ort.InferenceSession(art.onnx_path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def test_fp32_matches_onnxruntime_and_the_plugin_ran_f32(cnn, cache):
    x = _x((4, 3, 16, 16))
    sess = _load(cnn, cache, "fp32")
    np.testing.assert_allclose(sess.run({"x": x})[0], _ort(cnn, x), atol=FP32_ATOL, rtol=0)
    info = sess.info
    assert info["inference_precision"] == "f32" and info["inference_precision_requested"] == "f32"
    assert set(info["mac_nodes_precision"]) == {"f32"}, info["runtime_precision_by_type"]
    assert info["threads"] == 2 and info["performance_hint"] == "LATENCY"
    assert info["compiled_for"] == {"x": [4, 3, 16, 16]}
    out = sess.timed_call({"x": x})()
    np.testing.assert_allclose(next(iter(out.values())), _ort(cnn, x), atol=FP32_ATOL, rtol=0)


@pytest.mark.skipif(not _has_avx512_bf16(), reason="the CPU plugin picks bf16 by itself only on AVX512_BF16 CPUs")
def test_without_the_hint_the_plugin_runs_bf16_on_this_cpu(cnn, cache):
    """Why the fp32 cell forces f32: left to itself the plugin reads back bf16 and is off by more than FP32_ATOL."""
    x = _x((4, 3, 16, 16))
    sess = _load(cnn, cache, "fp32", runner_options=OpenVinoOptions(inference_precision="default"))
    assert sess.info["inference_precision"] == "bf16" and "INFERENCE_PRECISION_HINT" not in sess.info["config"]
    assert set(sess.info["mac_nodes_precision"]) == {"bf16"}
    assert np.abs(sess.run({"x": x})[0] - _ort(cnn, x)).max() > FP32_ATOL


def test_fp16_records_what_the_plugin_ran(cnn, cache):
    sess = _load(cnn, cache, "fp16")
    info = sess.info
    assert info["inference_precision_requested"] == "f16"
    if "FP16" not in info["cpu_capabilities"]:  # this host: no FP16 arithmetic, the plugin says bf16 or f32
        assert info["inference_precision"] != "f16" and "precision_note" in info
        assert info["inference_precision"] in info["precision_note"]


def test_int8_builds_with_nncf_runs_in_u8_and_is_cached(cnn, cache):
    calib = {"x": _x((64, 3, 16, 16), seed=1)}
    x = _x((4, 3, 16, 16))
    sess = _load(cnn, cache, "int8", calibration=calib)
    built = sess.info["built"]
    assert built["tool"] == "nncf.quantize" and built["calibration_inputs"].startswith("the model's calibration")
    assert built["cache"].startswith("built in this worker")
    assert set(sess.info["mac_nodes_precision"]) <= {"u8", "i8"}, sess.info["runtime_precision_by_type"]
    out, want = sess.run({"x": x})[0], _ort(cnn, x)
    cos = float((out * want).sum() / np.linalg.norm(out) / np.linalg.norm(want))
    assert cos > 0.99, cos
    again = _load(cnn, cache, "int8", calibration=calib)
    assert again.info["built"]["cache"].startswith("read from")
    np.testing.assert_array_equal(again.run({"x": x})[0], out)


def test_int8_calibrates_on_the_split_kept_with_the_variant(cnn, cache):
    """The run hands the build worker the model's calibration split; the variant keeps it beside itself and
    NNCF calibrates on those same inputs (not the input spec's random ones, not the evaluation part)."""
    calib = {"x": _x((48, 3, 16, 16), seed=7)}
    v = build_variant(cnn, "int8", "int8", None, {}, cache, calibration=calib)
    assert v.calibration["samples"] == 48 and v.calibration["source"].startswith("the model's calibration split")
    kept, _ = v.calibration_inputs()
    np.testing.assert_array_equal(kept["x"], calib["x"])
    sess = OpenVinoRunner().load(v, 2, {"artifact": cnn.to_json(), "cache_dir": str(cache)})
    given = OpenVinoRunner().load(v, 2, {"artifact": cnn.to_json(), "cache_dir": str(cache), "calibration": calib})
    assert sess.info["built"]["calibration_inputs"] == v.calibration["source"]
    x = _x((4, 3, 16, 16))
    np.testing.assert_array_equal(sess.run({"x": x})[0], given.run({"x": x})[0])   # the same build (cache key)
    assert Variant.from_json(v.to_json()) == v


def test_int8_static_needs_calibration_inputs(cnn, cache):
    fp32 = build_variant(cnn, "fp32", "fp32", None, {}, cache)
    static = dataclasses.replace(fp32, label="int8-static", precision="int8", method="static-qdq")
    with pytest.raises(Unsupported, match="calibration"):
        OpenVinoRunner().load(static, 2, {"artifact": cnn.to_json(), "cache_dir": str(cache)})


def test_weight_compression_int4_and_int8_dynamic(mlp, cache):
    x = _x((4, 64))
    want = _ort(mlp, x)
    for label, kind in (("int4", "i4"), ("int8-dynamic", "u8")):
        sess = _load(mlp, cache, label)
        assert sess.info["built"]["tool"] == "nncf.compress_weights", label
        assert sess.info["built"]["weight_elements_by_type"].get(kind), (label, sess.info["built"])
        out = sess.run({"x": x})[0]
        assert np.abs(out - want).max() < 0.1 * np.abs(want).max(), label
    assert sess.info["dynamic_quantization_group_size"] is not None


def test_a_graph_the_runtime_cannot_read_is_unsupported_with_its_reason(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.custom")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("example.custom", 1)])
    model.ir_version = 8
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    v = Variant(model_id="bad", label="fp32", precision="fp32", method=None, onnx_path=str(path))
    with pytest.raises(Unsupported, match="NoSuchOp") as e:
        OpenVinoRunner().load(v, 1, {})
    assert str(e.value).startswith("openvino ")


def test_precisions_it_does_not_build_are_unsupported_with_a_reason():
    v = Variant(model_id="m", label="binary", precision="binary", method=None, onnx_path="x.onnx")
    s = OpenVinoRunner().supports(v)
    assert not s.ok and "binary" in s.reason


def test_throughput_hint_is_read_back(mlp, cache):
    sess = _load(mlp, cache, "fp32", runner_options=OpenVinoOptions(performance_hint="THROUGHPUT", num_streams=2))
    assert sess.info["performance_hint"] == "THROUGHPUT" and sess.info["num_streams"] == 2
    assert "note" in sess.info


def test_options_are_validated():
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        OpenVinoOptions(performance_hint="FAST")
    with pytest.raises(ValidationError):
        OpenVinoOptions(num_streams=0)
    with pytest.raises(ValidationError):
        OpenVinoOptions.model_validate({"performance_hnt": "LATENCY"})
    assert OpenVinoOptions(performance_hint="THROUGHPUT").changed() == {"performance_hint": "THROUGHPUT"}


@pytest.mark.spawns
def test_telemetry_is_declined_without_touching_home(tmp_path):
    """In a fresh process (NNCF stubs its telemetry under pytest) whose HOME has no consent file, which both
    OpenVINO and NNCF take as consent: after our imports both hold none, and nothing was written to HOME."""
    code = ("from effbench.runners.openvino_runtime import import_quietly, telemetry_state\n"
            "import_quietly('nncf')\nprint(telemetry_state())\n")
    env = {**os.environ, "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=300,
                         cwd=str(HERE.parents[1]))
    assert out.returncode == 0, out.stderr[-2000:]
    state = ast.literal_eval(out.stdout.strip().splitlines()[-1])  # the dict the child printed
    assert state["openvino"].startswith("off (consent file says 0)"), state
    assert state["nncf"].startswith("off (consent file says 0)"), state
    assert not (tmp_path / "intel").exists()
