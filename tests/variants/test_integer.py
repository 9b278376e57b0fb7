import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from effbench.variants.binary import binarize, dequantize
from effbench.variants.integer import gemm_to_matmul


def _gemm_model(trans_b: int):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 8) if trans_b else (8, 16)).astype(np.float32)
    b = rng.normal(size=(16,)).astype(np.float32)
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=trans_b, name="g")], "t",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _run(m, x):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_gemm_rewrite_keeps_the_numbers():
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    for tb in (0, 1):
        m = _gemm_model(tb)
        want = _run(m, x)
        assert gemm_to_matmul(m) == 1
        assert [n.op_type for n in m.graph.node] == ["MatMul", "Add"]
        np.testing.assert_allclose(_run(m, x), want, rtol=1e-5, atol=1e-5)


def test_binarize_known_values():
    w = np.array([[1.0, -3.0], [0.0, -2.0]], dtype=np.float32)  # out channels on axis 0
    signs, scale = binarize(w, 0)
    np.testing.assert_array_equal(signs, [[True, False], [True, False]])  # sign(0) -> +1
    np.testing.assert_allclose(scale, [2.0, 1.0])
    np.testing.assert_allclose(dequantize(signs, scale, 0), [[2.0, -2.0], [1.0, -1.0]])
    bits = np.packbits(signs.reshape(-1))
    assert bits.nbytes == 1 and np.array_equal(np.unpackbits(bits, count=4).astype(bool), signs.reshape(-1))
