"""Tiny ONNX graphs shared by tests in several folders (a unique module name: several folders have a conftest.py)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def unnamed_cnn(path) -> str:
    """Conv, Relu, Conv, Relu, Flatten, Gemm, Relu, Gemm built with onnx.helper, no node named (as some
    converters write graphs): a layer is known by its index and op type only."""
    rng = np.random.default_rng(0)
    shapes = {"w0": (8, 1, 3, 3), "w1": (16, 8, 3, 3), "w2": (16 * 8 * 8, 32), "w3": (32, 10)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32), k)
             for k, s in shapes.items()]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Flatten", ["r1"], ["f"]), helper.make_node("Gemm", ["f", "w2"], ["g0"]),
             helper.make_node("Relu", ["g0"], ["r2"]), helper.make_node("Gemm", ["r2", "w3"], ["y"])]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    assert not any(n.name for n in m.graph.node)
    onnx.save(m, str(path))
    return str(path)
