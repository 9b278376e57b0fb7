import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from effbench.execution.tasks import quality_pass
from effbench.measure.quality import fidelity, top1
from effbench.results.record import Cell


def test_sqnr_of_a_known_noise_is_exact():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 8))
    noise = rng.normal(size=ref.shape)
    noise *= math.sqrt((ref ** 2).sum() / 100.0 / (noise ** 2).sum())  # noise power = signal / 100
    f = fidelity(ref + noise, ref, logits=True)
    assert f["sqnr_db"] == pytest.approx(20.0, abs=1e-9)
    assert f["max_abs_err"] == pytest.approx(np.abs(noise).max())


def test_cosine_top1_agreement_and_identity():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    out = np.array([[0.0, 1.0], [0.0, 2.0], [3.0, 4.0]])  # orthogonal, parallel, identical
    f = fidelity(out, ref, logits=True)
    assert f["cosine"] == pytest.approx((0.0 + 1.0 + 1.0) / 3)
    assert f["cosine_min"] == pytest.approx(0.0)
    assert f["top1_agreement"] == pytest.approx(2 / 3)
    same = fidelity(ref, ref, logits=False)
    assert same["sqnr_db"] is None and same["identical"] and same["cosine"] == 1.0 and same["top1_agreement"] is None
    with pytest.raises(ValueError, match="differs from the FP32 reference"):
        fidelity(ref[:2], ref, logits=False)


def test_top1():
    assert top1(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, 1])) == pytest.approx(2 / 3)


def _artifact(tmp_path, w, name):
    from effbench.models.sources import InputDesc, ModelArtifact
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "t",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
                          [numpy_helper.from_array(w.astype(np.float32), "w")])
    p = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(p))
    art = ModelArtifact(model_id="m", source_kind="onnx", onnx_path=str(p), onnx_sha256=name,
                        inputs=(InputDesc("x", ["batch", 4], "float32"),), output_names=("y",))
    return art


def test_quality_pass_writes_and_uses_the_reference(tmp_path):
    from effbench.variants import Variant
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3))
    x = rng.normal(size=(100, 4)).astype(np.float32)
    labels = (x @ w).argmax(1)
    labels[:10] = (labels[:10] + 1) % 3  # fp32 top1 = 0.9 exactly
    art = _artifact(tmp_path, w, "fp32")
    cell = Cell(model="m", variant="fp32", precision="fp32", runner="onnxruntime", runner_label="onnxruntime",
                threads=1, batch_size=7)
    ref = tmp_path / "ref" / "m-onnxruntime.npz"
    fp32 = Variant(model_id="m", label="fp32", precision="fp32", method=None, onnx_path=art.onnx_path)
    q = quality_pass(cell, fp32, art.to_json(), {"x": x}, labels, None, str(ref), 0.99, batch_size=7)
    assert q["metric"] == "top1" and q["value"] == pytest.approx(0.9) and q["relative"] == 1.0
    assert q["samples"] == 100 and q["fidelity"]["identical"] and not q["below_floor"]
    assert ref.is_file()
    # a "variant" that flips the sign of one weight column: worse top-1, measurable fidelity
    w2 = w.copy()
    w2[:, 2] *= -1
    bad = _artifact(tmp_path, w2, "bad")
    v = Variant(model_id="m", label="int8", precision="int8", method="dynamic", onnx_path=bad.onnx_path)
    q2 = quality_pass(cell, v, bad.to_json(), {"x": x}, labels, None, str(ref), 0.99, fp32_value=q["value"])
    out, want = x @ w2, x @ w
    assert q2["value"] == pytest.approx(float((out.argmax(1) == labels).mean()))
    assert q2["relative"] == pytest.approx(q2["value"] / 0.9) and q2["below_floor"] is True
    assert q2["fidelity"]["max_abs_err"] == pytest.approx(np.abs(out - want).max(), rel=1e-5)
    assert q2["fidelity"]["top1_agreement"] == pytest.approx(float((out.argmax(1) == want.argmax(1)).mean()))
    # embedding metric without labels: cosine to FP32; no reference -> None with the reason
    q3 = quality_pass(cell, v, bad.to_json(), {"x": x}, None, None, str(tmp_path / "none.npz"), 0.99)
    assert q3["metric"] == "cosine" and q3["value"] is None and q3["fidelity"] is None
    assert "no FP32 reference" in q3["fidelity_reason"]
