"""One square matrix product per precision as an ONNX graph: what a graph runtime achieves on this
machine's kernels for that precision (the local profile's per-runtime peak, not torch's).

Each builder returns (model bytes, feeds, what the kernel is). n x n x n MACs; 2 ops per MAC.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17, ms_opset: bool = False) -> bytes:
    from onnx import helper
    graph = helper.make_graph(nodes, "microgemm", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms_opset else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model.SerializeToString()


def matmul(elem: str, n: int) -> tuple[bytes, dict[str, Any], str]:
    """The n x n x n product for `elem`: "int8" (MatMulInteger), else MatMul on "float", "float16" or
    "bfloat16" inputs."""
    if elem == "int8":
        return int8_matmul(n)
    from onnx import TensorProto, helper
    t = {"float": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}[elem]
    rng = np.random.default_rng(0)
    dtype = {"float": np.float32, "float16": np.float16}.get(elem)
    if dtype is None:
        import ml_dtypes  # numpy has no bfloat16; onnx depends on ml_dtypes
        dtype = ml_dtypes.bfloat16
    a = rng.standard_normal((n, n)).astype(np.float32).astype(dtype)
    b = rng.standard_normal((n, n)).astype(np.float32).astype(dtype)
    vi = [helper.make_tensor_value_info(x, t, [n, n]) for x in ("a", "b")]
    model = _model([helper.make_node("MatMul", ["a", "b"], ["y"])], vi,
                   [helper.make_tensor_value_info("y", t, [n, n])])
    return model, {"a": a, "b": b}, f"MatMul ({elem})"


def int8_matmul(n: int) -> tuple[bytes, dict[str, Any], str]:
    """MatMulInteger: uint8 activations x int8 weights -> int32, as dynamic quantization runs it."""
    from onnx import TensorProto, helper
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (n, n), dtype=np.uint8)
    b = rng.integers(-127, 127, (n, n), dtype=np.int8)
    model = _model([helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
                   [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
                    helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
                   [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], opset=17)
    return model, {"a": a, "b": b}, "MatMulInteger (uint8 x int8 -> int32)"


# A 3x3 convolution, 64 -> 64 channels on 56x56 with padding (a ResNet stage's shape): what a graph
# runtime achieves on its convolution kernels, which differ from its matrix products (ORT's int8
# QLinearConv reached a fifth of its MatMulInteger rate here).
CONV_SHAPE = (1, 64, 56, 56)
CONV_KERNEL = (64, 64, 3, 3)


def conv_macs() -> int:
    n, c, h, w = CONV_SHAPE
    k, _, r, s = CONV_KERNEL
    return n * k * h * w * c * r * s


def conv(elem: str) -> tuple[bytes, dict[str, Any], str]:
    """The 3x3 convolution for `elem`: "int8" (QLinearConv, uint8 activations x int8 weights, as static
    QDQ int8 runs after fusion), else Conv on "float" or "float16" tensors."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    out_shape = [CONV_SHAPE[0], CONV_KERNEL[0], CONV_SHAPE[2], CONV_SHAPE[3]]
    if elem == "int8":
        x = rng.integers(0, 255, CONV_SHAPE, dtype=np.uint8)
        w = rng.integers(-127, 127, CONV_KERNEL, dtype=np.int8)
        consts = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
                  numpy_helper.from_array(np.array(128, np.uint8), "xz"),
                  numpy_helper.from_array(np.full(CONV_KERNEL[0], 0.01, np.float32), "ws"),
                  numpy_helper.from_array(np.zeros(CONV_KERNEL[0], np.int8), "wz"),
                  numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
                  numpy_helper.from_array(np.array(128, np.uint8), "yz")]
        node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], **attrs)
        model = _model([node], [helper.make_tensor_value_info("x", TensorProto.UINT8, list(CONV_SHAPE))],
                       [helper.make_tensor_value_info("y", TensorProto.UINT8, out_shape)], consts)
        return model, {"x": x}, "QLinearConv 3x3 (uint8 x int8)"
    t = {"float": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[elem]
    dtype = {"float": np.float32, "float16": np.float16}[elem]
    x = rng.standard_normal(CONV_SHAPE).astype(dtype)
    w = (rng.standard_normal(CONV_KERNEL) * 0.05).astype(dtype)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], **attrs)],
                   [helper.make_tensor_value_info("x", t, list(CONV_SHAPE))],
                   [helper.make_tensor_value_info("y", t, out_shape)], [numpy_helper.from_array(w, "w")])
    return model, {"x": x}, f"Conv 3x3 ({elem})"
