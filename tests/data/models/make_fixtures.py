"""Regenerates the small fixture files beside this script (committed; run by hand if they change)."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "tiny",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [w])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 10  # ORT 1.31 rejects make_model's default IR
onnx.checker.check_model(model)
onnx.save(model, "tiny.onnx")
open("not_onnx.onnx", "w").write("this is a text file, not a protobuf\n")
np.savez("wrong_arrays.npz", features=rng.random((10, 16), dtype=np.float32))
np.savez("label_mismatch.npz", inputs=rng.random((10, 16), dtype=np.float32), labels=np.arange(7))
np.savez("shape_mismatch.npz", inputs=rng.random((10, 15), dtype=np.float32), labels=np.arange(10))
np.savez("good.npz", inputs=rng.random((40, 16), dtype=np.float32), labels=rng.integers(0, 8, 40))
