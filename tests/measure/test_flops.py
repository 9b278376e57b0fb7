"""Work counter: exact counts on hand-built graphs, quantized variants, and the torch cross-check."""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from effbench.errors import UserError
from effbench.measure.flops import count_work, crosscheck, format_work, torch_flops

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    m.ir_version = 10  # ORT 1.31 rejects helper's default IR
    return m


def _w(name, *shape, seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def _vi(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_grouped_dilated_conv_with_symbolic_batch():
    # X [N,4,10,10], W [8, 4/2, 3,3], dilation 2 -> out 10-2*(3-1)=6: MACs = N*8*6*6 * 2*3*3
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=2, dilations=[2, 2])
    m = _model([node], [_vi("x", ["batch", 4, 10, 10])], [_vi("y", None)], [_w("w", 8, 2, 3, 3), _w("b", 8)])
    w = count_work(m, batch_size=3)
    assert w.macs == 3 * 8 * 36 * 18 == 15552
    assert w.elementwise_ops == 3 * 8 * 36  # the bias add
    assert w.flops == 2 * w.macs + w.elementwise_ops
    assert w.bops == w.macs * 32 * 32
    assert w.params == 8 * 2 * 9 + 8
    assert w.weight_bytes == 4 * w.params
    assert w.activation_bytes == 4 * (3 * 4 * 100 + 3 * 8 * 36)
    assert w.bytes_moved == w.weight_bytes + w.activation_bytes
    assert w.uncounted_ops == {}


def test_conv_1d_strided_padded_and_3d():
    c1 = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2], pads=[1, 1])   # (16+2-4)/2+1 = 8
    m1 = _model([c1], [_vi("x", [1, 3, 16])], [_vi("y", None)], [_w("w", 5, 3, 4)])
    assert count_work(m1).macs == 5 * 8 * 3 * 4
    c3 = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2, 2])          # out 2x2x2
    m3 = _model([c3], [_vi("x", [1, 2, 4, 4, 4])], [_vi("y", None)], [_w("w", 3, 2, 2, 2, 2)])
    assert count_work(m3).macs == 3 * 8 * 2 * 8


def test_conv_transpose_matches_hand_count_and_torch():
    import torch
    # every input pixel (5x5) of 4 channels scatters into 3 output channels through a 3x3 kernel
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])
    m = _model([node], [_vi("x", [1, 4, 5, 5])], [_vi("y", None)], [_w("w", 4, 3, 3, 3)])
    assert count_work(m).macs == 25 * 4 * 3 * 9
    mod = torch.nn.ConvTranspose2d(4, 3, 3, stride=2, bias=False)
    assert torch_flops(mod, (torch.randn(1, 4, 5, 5),)) == 2 * 25 * 4 * 3 * 9


def test_batched_matmul_with_broadcast():
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    m = _model([node], [_vi("a", [2, 1, 3, 4]), _vi("b", [5, 4, 6])], [_vi("y", None)])
    w = count_work(m)
    assert w.macs == 2 * 5 * 3 * 6 * 4
    assert w.activation_bytes == 4 * (2 * 3 * 4 + 5 * 4 * 6 + 2 * 5 * 3 * 6)


def test_gemm_trans_b_and_trans_a():
    gb = helper.make_node("Gemm", ["a", "w", "c"], ["y"], transB=1)
    m = _model([gb], [_vi("a", ["batch", 4])], [_vi("y", None)], [_w("w", 5, 4), _w("c", 5)])
    w = count_work(m, batch_size=3)
    assert (w.macs, w.elementwise_ops) == (3 * 5 * 4, 3 * 5)
    ga = helper.make_node("Gemm", ["a", "w"], ["y"], transA=1)
    m = _model([ga], [_vi("a", [4, 3])], [_vi("y", None)], [_w("w", 4, 7)])
    assert count_work(m).macs == 3 * 7 * 4


def test_einsum_and_standard_attention():
    e = helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik")
    m = _model([e], [_vi("a", [2, 3, 4]), _vi("b", [2, 4, 5])], [_vi("y", None)], opset=17)
    assert count_work(m).macs == 2 * 3 * 4 * 5
    e = helper.make_node("Einsum", ["a", "b"], ["y"], equation="...ij,...jk")
    m = _model([e], [_vi("a", [2, 3, 4]), _vi("b", [2, 4, 5])], [_vi("y", None)], opset=17)
    assert count_work(m).macs == 2 * 3 * 4 * 5
    # ONNX Attention (opset 23): QK^T is B*H*S*L*D MACs, scores x V is B*H*S*L*Dv
    att = helper.make_node("Attention", ["q", "k", "v"], ["y"])
    m = _model([att], [_vi("q", [1, 2, 3, 4]), _vi("k", [1, 2, 5, 4]), _vi("v", [1, 2, 5, 6])],
               [_vi("y", None)], opset=23)
    assert count_work(m).macs == 2 * 3 * 5 * (4 + 6)


def test_unresolved_dimension_names_input_and_dim():
    node = helper.make_node("Relu", ["x"], ["y"])
    m = _model([node], [_vi("x", ["batch", "seq", 8])], [_vi("y", None)])
    with pytest.raises(UserError, match=r"input 'x' dimension 1 \('seq'\)"):
        count_work(m, batch_size=2)
    assert count_work(m, batch_size=2, dims={"seq": 5}).elementwise_ops == 2 * 5 * 8


def test_unknown_ops_are_listed_not_zero():
    nodes = [helper.make_node("Foo", ["x"], ["h"], domain="my.ops"), helper.make_node("Relu", ["h"], ["y"]),
             helper.make_node("MatMul", ["x", "w"], ["z"])]
    m = _model(nodes, [_vi("x", [2, 4])], [_vi("y", None), _vi("z", None)], [_w("w", 4, 3)],
               extra_opsets=[helper.make_opsetid("my.ops", 1)])
    w = count_work(m)
    assert w.uncounted_ops["Foo"] == 1
    assert w.uncounted_ops["Relu"] == 1          # its input shape is unknown after Foo
    assert w.macs == 2 * 3 * 4
    text = format_work(w)
    assert "Foo x1" in text and "uncounted" in text
    assert [r["reason"] for r in w.by_node if r["op_type"] == "Foo"] == ["op not known to the counter"]


def test_binary_nodes_count_one_bit_macs():
    node = helper.make_node("Gemm", ["a", "w"], ["y"], name="fc")
    m = _model([node], [_vi("a", [2, 8])], [_vi("y", None)], [_w("w", 8, 4)])
    w = count_work(m, binary_nodes={"fc"})
    assert w.bops == w.macs == 2 * 8 * 4
    assert w.weight_bits == 1


def test_json_and_node_table():
    node = helper.make_node("MatMul", ["a", "w"], ["y"], name="mm")
    w = count_work(_model([node], [_vi("a", [2, 8])], [_vi("y", None)], [_w("w", 8, 4)]))
    data = json.loads(json.dumps(w.to_json()))
    for key in ("macs", "flops", "bops", "params", "weight_bytes", "by_op", "uncounted_ops", "bytes_moved",
                "nodes", "weight_bits", "conventions"):
        assert key in data
    assert data["by_op"]["MatMul"] == {"count": 1, "macs": 64, "elementwise_ops": 0, "share": 1.0}
    assert "mm" in format_work(w, by="node")
    with pytest.raises(UserError):
        format_work(w, by="layer")


def test_external_data_is_not_loaded_but_counted(tmp_path):
    node = helper.make_node("MatMul", ["a", "w"], ["y"])
    m = _model([node], [_vi("a", ["batch", 256])], [_vi("y", None)], [_w("w", 256, 128)])
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.bin", size_threshold=0)
    w = count_work(path, batch_size=4)
    assert (w.macs, w.params, w.weight_bytes) == (4 * 256 * 128, 256 * 128, 4 * 256 * 128)
    with pytest.raises(UserError, match="no ONNX model"):
        count_work(tmp_path / "missing.onnx")


# ------------------------------------------------------------------------------------- quantized ops

def _float_net(path):
    """x[batch,1,6,6] -> Conv(4,1,3,3) -> Flatten -> MatMul(64x32) + bias -> Relu."""
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[0, 0, 0, 0]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("MatMul", ["f", "mw"], ["m"]), helper.make_node("Add", ["m", "mb"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    m = _model(nodes, [_vi("x", ["batch", 1, 6, 6])], [_vi("y", ["batch", 32])],
               [_w("cw", 4, 1, 3, 3), _w("cb", 4, seed=1), _w("mw", 64, 32, seed=2), _w("mb", 32, seed=3)],
               opset=21)
    onnx.save(m, str(path))
    return path


FLOAT_MACS_B2 = 2 * (4 * 16 * 9 + 64 * 32)


class _Reader:
    def __init__(self):
        self.batches = iter([{"x": np.random.default_rng(i).standard_normal((2, 1, 6, 6)).astype(np.float32)}
                             for i in range(4)])

    def get_next(self):
        return next(self.batches, None)


def _ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_quantized_variants_keep_macs_and_change_bits(tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    src = _float_net(tmp_path / "f.onnx")
    base = count_work(src, batch_size=2)
    assert base.macs == FLOAT_MACS_B2 and base.weight_bits == 32

    dyn = tmp_path / "dyn.onnx"
    quantize_dynamic(src, dyn, weight_type=QuantType.QInt8)
    assert {"MatMulInteger", "DynamicQuantizeLinear", "ConvInteger"} <= _ops(dyn)
    w = count_work(dyn, batch_size=2)
    assert w.macs == base.macs and w.uncounted_ops == {}
    assert w.weight_bits == 8 and w.bops == w.macs * 8 * 8
    assert w.params == base.params                      # scales and zero points are not params
    assert w.weight_bytes < base.weight_bytes / 2

    qdq = tmp_path / "qdq.onnx"
    quantize_static(src, qdq, _Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(qdq)
    w = count_work(qdq, batch_size=2)
    assert w.macs == base.macs and w.uncounted_ops == {}
    assert w.weight_bits == 8 and w.bops == w.macs * 8 * 8

    qop = tmp_path / "qop.onnx"
    quantize_static(src, qop, _Reader(), quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    assert {"QLinearConv", "QLinearMatMul"} <= _ops(qop)
    w = count_work(qop, batch_size=2)
    assert w.macs == base.macs and w.bops == w.macs * 64

    q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=32, is_symmetric=True, accuracy_level=4)
    q.process()
    nb = q.model.model
    assert "MatMulNBits" in {n.op_type for n in nb.graph.node}
    w = count_work(nb, batch_size=2)
    assert w.macs == base.macs and w.uncounted_ops == {}
    row = next(r for r in w.by_node if r["op_type"] == "MatMulNBits")
    assert (row["macs"], row["weight_bits"], row["act_bits"]) == (2 * 64 * 32, 4, 32)
    assert w.params == base.params                       # N x K, not the packed bytes
    assert w.bops == 2 * 4 * 16 * 9 * 32 * 32 + 2 * 64 * 32 * 4 * 32


# ------------------------------------------------------------------------------------ torch cross-check

def _torch_net():
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1, stride=2)
            self.proj = nn.Linear(16, 32)
            self.enc = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            tokens = self.conv(x).flatten(2).transpose(1, 2)
            return self.head(self.enc(self.proj(tokens)).mean(1))

    torch.manual_seed(0)
    return Net().eval(), (torch.randn(2, 3, 8, 8),)


def test_torch_flops_counts_cpu_attention():
    import torch
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 6)

    class Sdpa(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    assert torch_flops(Sdpa(), (q, k, v)) == 2 * (2 * 3 * 5 * 4 + 2 * 3 * 5 * 6)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_onnx_macs_equal_flop_counter_mode(tmp_path, dynamo):
    import torch
    module, inputs = _torch_net()
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, inputs, str(path), dynamo=True, verbose=False,
                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
        else:
            torch.onnx.export(module, inputs, str(path), dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}})
    onnx_macs, torch_macs = crosscheck(module, inputs, path)
    # conv 2*16*16*27 + proj 2*16*16*32 + qkv/out 2*16*32*128 + attention 2*4*16*16*16 + ffn 2*16*2*32*64 + head
    assert onnx_macs == torch_macs == 325760
    w = count_work(path, batch_size=2)
    assert w.uncounted_ops == {}


def test_nodes_out_of_order_are_counted_like_sorted_ones():
    """onnxruntime's float16 converter appends the input Cast after the nodes that read it; ONNX Runtime
    sorts the graph, shape inference does not: an fp16 CNN once counted 0 MACs (issue 14's worst cell)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])
    relu = helper.make_node("Relu", ["c"], ["y"])
    m = _model([conv, relu], [_vi("x", ["batch", 3, 8, 8])], [_vi("y", None)], [_w("w", 4, 3, 3, 3), _w("b", 4)])
    fp32 = count_work(m, batch_size=2)
    fp16 = convert_float_to_float16(m, keep_io_types=True)
    assert [n.op_type for n in fp16.graph.node][0] != "Cast"   # the converter really leaves them out of order
    w = count_work(fp16, batch_size=2)
    assert w.macs == fp32.macs == 2 * 4 * 64 * 27 and w.uncounted_ops == {}
    shuffled = _model([relu, conv], [_vi("x", ["batch", 3, 8, 8])], [_vi("y", None)], [_w("w", 4, 3, 3, 3), _w("b", 4)])
    assert count_work(shuffled, batch_size=2).macs == fp32.macs
