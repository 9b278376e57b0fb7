"""Work per inference counted from an ONNX graph: MACs, FLOPs, BOPs, params, bytes moved.

Also the torch-side count (FlopCounterMode with CPU attention registered) and the cross-check of the two.
"""
from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from effbench.errors import UserError
from effbench.units import fmt_si

# Stated in every report (to_json()["conventions"]).
CONVENTIONS = {
    "macs": "multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul/Einsum/attention and their quantized "
            "forms; bias adds are elementwise ops, not MACs",
    "flops": "2 x MACs + elementwise ops",
    "bops": "sum over nodes of MACs x weight bits x activation bits (binary layers: 1 x 1)",
    "elementwise_ops": "1 per output element for arithmetic and activations; reductions and global pools 1 per "
                       "input element; windowed pools 1 per output element x kernel size; see ELEMENTWISE_COST "
                       "for normalisation, softmax and (de)quantize; data movement (Reshape, Transpose, Gather, "
                       "Cast, ...) is 0",
    "weight_bits": "MAC-weighted mean bit width of constant (weight) operands; through DequantizeLinear the "
                   "stored integer width counts",
    "bytes_moved": "estimate: every initializer once at its storage width (incl. scales and zero points) + "
                   "graph inputs and outputs for this batch; intermediate activations are not counted",
    "node_work": "per node: class of op (conv, matmul, other), MACs, bytes of its constant inputs, bytes of its "
                 "other inputs and outputs (what a node-by-node roofline moves); equal nodes grouped with a count",
    "params": "elements of weight initializers; scales, zero points and int64 shape constants excluded; "
              "MatMulNBits counts N x K",
    "effective_macs": "MACs whose constant weight is not zero: each node's MACs x the non-zero fraction of its "
                      "weight (through DequantizeLinear: the stored integers against their zero point); MACs "
                      "on activations and packed MatMulNBits weights count in full. The dense kernels that "
                      "ran still did every MAC",
}

BATCH_NAMES = frozenset({"batch", "batch_size", "batchsize", "bs"})

# Bits per element of each ONNX element type (storage width).
_BITS_BY_NAME = {
    "FLOAT": 32, "UINT8": 8, "INT8": 8, "UINT16": 16, "INT16": 16, "INT32": 32, "INT64": 64, "BOOL": 8,
    "FLOAT16": 16, "DOUBLE": 64, "UINT32": 32, "UINT64": 64, "COMPLEX64": 64, "COMPLEX128": 128,
    "BFLOAT16": 16, "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8, "FLOAT8E5M2": 8, "FLOAT8E5M2FNUZ": 8,
    "FLOAT8E8M0": 8, "UINT4": 4, "INT4": 4, "FLOAT4E2M1": 4, "UINT2": 2, "INT2": 2,
}
DTYPE_BITS: dict[int, int] = {getattr(TensorProto, n): b for n, b in _BITS_BY_NAME.items() if hasattr(TensorProto, n)}

# Elementwise ops per output element (unless noted in _REDUCE_INPUT) for ops that do arithmetic but no MACs.
_UNARY_BINARY = """Add Sub Mul Div Pow Sqrt Exp Log Relu Sigmoid Tanh Erf Neg Abs Reciprocal Max Min Mean Clip
LeakyRelu PRelu Elu Selu Celu HardSigmoid HardSwish Gelu Softplus Softsign Mish Where Equal Less LessOrEqual
Greater GreaterOrEqual Not And Or Xor Floor Ceil Round Sign Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh
Atanh IsNaN IsInf Mod BitShift BitwiseAnd BitwiseOr BitwiseXor BitwiseNot ThresholdedRelu Shrink Swish
FastGelu QuickGelu BiasGelu Resize Upsample QLinearAdd QLinearMul QLinearSigmoid QLinearLeakyRelu
""".split()
ELEMENTWISE_COST: dict[str, float] = {op: 1 for op in _UNARY_BINARY}
ELEMENTWISE_COST.update({
    "Softmax": 4, "LogSoftmax": 5, "QLinearSoftmax": 4, "Hardmax": 2,      # max, exp, sum, divide
    "LayerNormalization": 5, "InstanceNormalization": 5, "GroupNormalization": 5,  # mean, var, norm, scale, shift
    "SkipLayerNormalization": 6, "SimplifiedLayerNormalization": 4, "SkipSimplifiedLayerNormalization": 5,
    "RMSNormalization": 4, "LpNormalization": 3, "MeanVarianceNormalization": 4,
    "BatchNormalization": 2,                                                   # inference: folded scale + shift
    "QuantizeLinear": 2, "DequantizeLinear": 2,                                # scale, round/shift
})
# Ops whose cost is per *input* element (reductions, global pools, dynamic quantization).
_REDUCE_INPUT: dict[str, float] = {op: 1 for op in """ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1
ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare ArgMax ArgMin GlobalAveragePool GlobalMaxPool GlobalLpPool
CumSum TopK QLinearGlobalAveragePool""".split()}
_REDUCE_INPUT["DynamicQuantizeLinear"] = 4                                  # min, max, scale, round
_WINDOW_POOLS = {"MaxPool", "AveragePool", "LpPool", "QLinearAveragePool"}
# Data movement and bookkeeping: counted, deliberately zero arithmetic.
MOVEMENT_OPS = frozenset("""Reshape Transpose Shape Size Gather GatherElements GatherND Concat Slice Squeeze Unsqueeze
Flatten Identity Cast CastLike Constant ConstantOfShape Expand Split Pad Dropout Tile Range ScatterND
ScatterElements Scatter DepthToSpace SpaceToDepth Trilu EyeLike OneHot NonZero Compress SplitToSequence
SequenceConstruct SequenceAt ConcatFromSequence Optional OptionalGetElement OptionalHasElement ReverseSequence
QLinearConcat""".split())
_PASS_THROUGH = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
_MAC_OPS = frozenset({"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "Gemm", "QGemm", "MatMul", "MatMulInteger",
                      "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "FusedMatMul", "MatMulNBits",
                      "Einsum"})
_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})
# (op_type) -> input indices that are quantization parameters (scales, zero points), not weights.
_QPARAM_INPUTS: dict[str, tuple[int, ...]] = {
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "MatMulInteger": (2, 3), "ConvInteger": (2, 3),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7), "QLinearConv": (1, 2, 4, 5, 6, 7), "MatMulNBits": (2, 3, 4),
    "QLinearAdd": (1, 2, 4, 5, 6, 7), "QLinearMul": (1, 2, 4, 5, 6, 7), "QLinearSigmoid": (1, 2, 3, 4),
    "QLinearLeakyRelu": (1, 2, 3, 4), "QLinearSoftmax": (1, 2, 3, 4), "QLinearGlobalAveragePool": (1, 2, 3, 4),
    "QLinearAveragePool": (1, 2, 3, 4), "MatMulIntegerToFloat": (2, 3, 4, 5), "DynamicQuantizeMatMul": (2, 3),
}
_SMALL_CONST_ELEMS = 4096


@dataclass(frozen=True)
class WorkCount:
    """Static work of one inference at a given batch size, counted from the graph."""

    macs: int
    flops: int
    bops: int
    elementwise_ops: int
    params: int
    weight_bytes: int
    activation_bytes: int
    bytes_moved: int
    nodes: int
    weight_bits: float
    by_op: dict[str, dict] = field(default_factory=dict)
    by_node: list[dict] = field(default_factory=list)
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    batch_size: int = 1
    # [[class, macs, weight bytes, activation bytes, count], ...]: the node-by-node roofline's input
    node_work: list[list] = field(default_factory=list)
    effective_macs: int | None = None    # MACs on non-zero weights (pruned graphs: fewer than macs)

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte moved (the roofline x-axis)."""
        return self.flops / self.bytes_moved if self.bytes_moved else math.inf

    def to_json(self) -> dict:
        return {
            "macs": self.macs, "flops": self.flops, "bops": self.bops, "elementwise_ops": self.elementwise_ops,
            "params": self.params, "weight_bytes": self.weight_bytes, "activation_bytes": self.activation_bytes,
            "bytes_moved": self.bytes_moved, "nodes": self.nodes, "weight_bits": self.weight_bits,
            "batch_size": self.batch_size, "by_op": self.by_op, "uncounted_ops": self.uncounted_ops,
            "node_work": self.node_work, "conventions": CONVENTIONS, "effective_macs": self.effective_macs,
        }


# ---------------------------------------------------------------------------------------------- loading

def _load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise UserError(f"no ONNX model at '{path}'", file=path, fix="check the path")
    try:
        # Weights are not needed to count work: dims and dtypes are in the TensorProto headers.
        proto = onnx.load(str(path), load_external_data=False)
        # Small integer tensors saved externally may be Reshape targets: shape inference needs their values.
        from onnx.external_data_helper import load_external_data_for_tensor
        for t in proto.graph.initializer:
            if t.data_location == TensorProto.EXTERNAL and t.data_type in (TensorProto.INT64, TensorProto.INT32) \
                    and math.prod(t.dims) <= _SMALL_CONST_ELEMS:
                load_external_data_for_tensor(t, str(path.parent))
                t.data_location = TensorProto.DEFAULT
                del t.external_data[:]
        return proto
    except Exception as exc:  # noqa: BLE001 - a corrupt file is the user's to fix
        raise UserError(f"cannot read ONNX model: {exc}", file=path, fix="re-export the model") from exc


def _bind_dims(model: onnx.ModelProto, batch_size: int, dims: dict[str, int]) -> dict[str, list[int]]:
    """Concrete shape of every graph input (not initializers), or UserError naming the unresolved dim."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    batch_params = set(BATCH_NAMES)
    if inputs and inputs[0].type.tensor_type.shape.dim:
        d0 = inputs[0].type.tensor_type.shape.dim[0]
        if not d0.HasField("dim_value") and d0.dim_param and d0.dim_param not in dims:
            batch_params.add(d0.dim_param)
    bound: dict[str, list[int]] = {}
    for vi in inputs:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            raise UserError(f"input '{vi.name}' has no shape in the graph", field=f"inputs.{vi.name}",
                            fix="give its shape in the suite's input shapes or re-export with shapes")
        shape = []
        for axis, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            elif d.dim_param and d.dim_param in dims:
                shape.append(int(dims[d.dim_param]))
            elif d.dim_param in batch_params or (axis == 0 and not d.dim_param):
                shape.append(int(batch_size))
            else:
                name = d.dim_param or f"axis {axis}"
                raise UserError(f"input '{vi.name}' dimension {axis} ('{name}') is symbolic and not bound",
                                field=f"inputs.{vi.name}.shape[{axis}]",
                                fix=f"bind it, e.g. dims={{'{d.dim_param or 'name'}': N}}, or give the size in "
                                    "the suite's input shapes")
        bound[vi.name] = shape
    return bound


def _value_info(name: str, elem_type: int, shape: list[int] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def _contrib_proxy(node: onnx.NodeProto, consts: dict[str, onnx.TensorProto], k: int) -> list[onnx.NodeProto] | None:
    """Standard nodes with the same output shapes/types as a com.microsoft node, for onnx shape inference only."""
    op, ins, outs = node.op_type, list(node.input), list(node.output)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    pre = f"__effbench_proxy_{k}_"

    def const_i64(name: str, values: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64,
                                                                                [len(values)], values))

    def last_dim_to(n: int) -> list[onnx.NodeProto]:
        # Slice the last axis to 1 then Expand to n: keeps every leading dim and the element type.
        return [const_i64(pre + "s", [0]), const_i64(pre + "e", [1]), const_i64(pre + "a", [-1]),
                const_i64(pre + "n", [n]),
                helper.make_node("Slice", [ins[0], pre + "s", pre + "e", pre + "a"], [pre + "t"]),
                helper.make_node("Expand", [pre + "t", pre + "n"], [outs[0]])]

    if op == "MatMulNBits":
        return last_dim_to(int(attrs["N"]))
    if op in ("MatMulIntegerToFloat", "DynamicQuantizeMatMul"):
        return [helper.make_node("Cast", [ins[0]], [pre + "a"], to=TensorProto.FLOAT),
                helper.make_node("Cast", [ins[1]], [pre + "b"], to=TensorProto.FLOAT),
                helper.make_node("MatMul", [pre + "a", pre + "b"], [outs[0]])]
    if op in ("Gelu", "FastGelu", "QuickGelu", "BiasGelu", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax",
              "MultiHeadAttention", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"):
        return [helper.make_node("Identity", [ins[0]], [outs[0]])]
    if op == "SkipLayerNormalization":
        nodes = [helper.make_node("Identity", [ins[0]], [outs[0]])]
        if len(outs) > 3 and outs[3]:
            nodes.append(helper.make_node("Identity", [ins[0]], [outs[3]]))
        return nodes
    if op in ("QLinearAdd", "QLinearMul"):
        return [helper.make_node(op[7:], [ins[0], ins[3]], [outs[0]])]
    if op == "Attention" and len(ins) > 1 and ins[1] in consts:
        qkv = attrs.get("qkv_hidden_sizes")
        width = int(consts[ins[1]].dims[-1])
        return last_dim_to(int(qkv[2]) if qkv else width // 3)
    if op in ("QuantizeLinear", "DequantizeLinear"):
        if op == "QuantizeLinear":
            to = consts[ins[2]].data_type if len(ins) > 2 and ins[2] in consts else TensorProto.UINT8
        else:
            to = consts[ins[1]].data_type if len(ins) > 1 and ins[1] in consts else TensorProto.FLOAT
        return [helper.make_node("Cast", [ins[0]], [outs[0]], to=to)]
    return None


def _infer_once(proxy: onnx.ModelProto) -> dict[str, tuple[int, list[int] | None]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(proxy, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - an inconsistent graph is the model's problem
        raise UserError(f"ONNX shape inference failed: {exc}", field="model",
                        fix="check the model with onnx.checker and its input shapes") from exc
    shapes: dict[str, tuple[int, list[int] | None]] = {}
    ig = inferred.graph
    for vi in [*ig.input, *ig.value_info, *ig.output]:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            continue
        shape: list[int] | None = None
        if tt.HasField("shape"):
            dims_ = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            shape = None if any(d is None for d in dims_) else dims_
        shapes[vi.name] = (tt.elem_type, shape)
    for t in ig.initializer:
        shapes.setdefault(t.name, (t.data_type, list(t.dims)))
    return shapes


_FOLD_TYPES = {TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL}
_MAX_FOLD_PASSES = 6


def _fold_shape_math(proxy: onnx.ModelProto, shapes: dict[str, tuple[int, list[int] | None]],
                     values: dict[str, Any]) -> bool:
    """Replace small integer nodes whose inputs are known by constants; True when anything was folded."""
    import numpy as np
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = proxy.graph
    unknown = any(o and shapes.get(o, (0, None))[1] is None for n in g.node for o in n.output)
    if not unknown:
        return False
    for t in g.initializer:
        if t.name not in values and t.data_type in _FOLD_TYPES | {TensorProto.FLOAT} and math.prod(t.dims) <= 64:
            values[t.name] = numpy_helper.to_array(t)
    folded: list[onnx.NodeProto] = []
    for node in g.node:
        outs = [o for o in node.output if o]
        if not outs or node.domain not in ("", "ai.onnx") or any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            continue
        out_types = [shapes.get(o, (0, None)) for o in outs]
        if node.op_type == "Shape" and shapes.get(node.input[0], (0, None))[1] is not None:
            full = np.array(shapes[node.input[0]][1], dtype=np.int64)
            attrs = {a.name: a.i for a in node.attribute}
            start, end = attrs.get("start", 0), attrs.get("end", len(full))
            values[outs[0]] = full[start:end] if "end" in attrs else full[start:]
            folded.append(node)
            continue
        if not all(i in values for i in node.input if i):
            continue
        if not all(t in _FOLD_TYPES for t, _ in out_types) or any(
                values[i].size > _SMALL_CONST_ELEMS for i in node.input if i):
            continue
        sub = helper.make_model(helper.make_graph(
            [node], "fold", [helper.make_tensor_value_info(i, shapes.get(i, (TensorProto.INT64, None))[0], None)
                             for i in dict.fromkeys(i for i in node.input if i)],
            [helper.make_tensor_value_info(o, 0, None) for o in outs]), opset_imports=list(proxy.opset_import))
        sub.ir_version = proxy.ir_version
        try:
            results = ReferenceEvaluator(sub).run(None, {i: values[i] for i in node.input if i})
        except Exception:  # noqa: BLE001 - an op the evaluator lacks just stays unfolded
            continue
        if any(np.asarray(r).size > _SMALL_CONST_ELEMS for r in results):
            continue
        for o, r in zip(outs, results):
            values[o] = np.asarray(r)
        folded.append(node)
    if not folded:
        return False
    gone = {id(n) for n in folded}
    keep = [n for n in g.node if id(n) not in gone]
    del g.node[:]
    g.node.extend(keep)
    have = {t.name for t in g.initializer}
    for node in folded:
        for o in node.output:
            if o and o not in have:
                g.initializer.append(numpy_helper.from_array(np.asarray(values[o]), o))
    return True


def _topological(g: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes in an order where each comes after its producers. ONNX Runtime sorts a graph itself, so
    tools leave them out of order (onnxruntime's float16 converter appends its input Casts at the end),
    while shape inference walks the list once: without this, every shape after such a Cast is unknown
    and an fp16 CNN counted 0 MACs."""
    produced_by = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    order: list[int] = []
    state = [0] * len(g.node)  # 0 new, 1 on the stack, 2 placed
    for start in range(len(g.node)):
        stack = [(start, iter(g.node[start].input))]
        while stack:
            i, inputs = stack[-1]
            if state[i] == 2:
                stack.pop()
                continue
            state[i] = 1
            nxt = next((produced_by[x] for x in inputs if x in produced_by and state[produced_by[x]] == 0), None)
            if nxt is not None:
                stack.append((nxt, iter(g.node[nxt].input)))
                continue
            if not any(x in produced_by and state[produced_by[x]] == 0 for x in g.node[i].input):
                state[i] = 2
                order.append(i)
                stack.pop()
    return [g.node[i] for i in order]


def _infer(model: onnx.ModelProto, bound: dict[str, list[int]]) -> dict[str, tuple[int, list[int] | None]]:
    """name -> (elem_type, concrete shape or None) for every tensor onnx shape inference can resolve.

    Runs on a lightweight copy: large initializers become typed graph inputs (no data is serialised),
    com.microsoft nodes are replaced by standard proxies, and the exporter's own value_info is dropped
    (it may carry symbolic dims that conflict with the bound ones).
    """
    g = model.graph
    proxy = onnx.ModelProto()
    proxy.ir_version = model.ir_version
    proxy.opset_import.extend(model.opset_import)
    proxy.functions.extend(model.functions)
    pg = proxy.graph
    pg.name = g.name or "g"
    consts = {t.name: t for t in g.initializer}
    inits = set(consts)
    for vi in g.input:
        if vi.name in bound:
            pg.input.append(_value_info(vi.name, vi.type.tensor_type.elem_type, bound[vi.name]))
    for t in g.initializer:
        numel = math.prod(t.dims)
        external = t.data_location == TensorProto.EXTERNAL
        if numel <= _SMALL_CONST_ELEMS and not external and t.data_type in (TensorProto.INT64, TensorProto.INT32) \
                or numel <= 16 and not external:
            pg.initializer.append(t)
        else:
            pg.input.append(_value_info(t.name, t.data_type, list(t.dims)))
    for k, node in enumerate(_topological(g)):
        proxied = _contrib_proxy(node, consts, k) if node.domain == "com.microsoft" or (
            node.domain in ("", "ai.onnx") and node.op_type in ("SimplifiedLayerNormalization",
                                                                  "SkipSimplifiedLayerNormalization")) else None
        if proxied is None:
            pg.node.append(node)
        else:
            pg.node.extend(proxied)
    for vi in g.output:
        out = pg.output.add()
        out.name = vi.name
        out.type.tensor_type.elem_type = vi.type.tensor_type.elem_type
    # onnx data propagation stops at ops it has no rule for (Mod, Where, Range, ...), which legacy
    # exports use to build Reshape targets (docs/runtime-notes.md: all 48 MiniLM MatMul shapes unknown). Fold
    # those small integer subgraphs to constants with the reference evaluator and infer again.
    values: dict[str, Any] = {}
    for attempt in range(_MAX_FOLD_PASSES):
        shapes = _infer_once(proxy)
        if attempt == _MAX_FOLD_PASSES - 1 or not _fold_shape_math(proxy, shapes, values):
            break
    for name in inits:
        t = consts[name]
        shapes[name] = (t.data_type, list(t.dims))
    return shapes


# --------------------------------------------------------------------------------------------- counting

def _einsum_macs(equation: str, shapes: list[list[int]]) -> tuple[int, int]:
    """(macs, elementwise) of an Einsum: pairwise left-to-right contraction, single sums as reductions."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    ell_rank = max((len(s) - (len(t) - 3) for t, s in zip(terms, shapes) if "..." in t), default=0)
    ell = [chr(0x100 + i) for i in range(ell_rank)]
    size: dict[str, int] = {}
    expanded = []
    for t, s in zip(terms, shapes):
        if "..." in t:
            n = len(s) - (len(t) - 3)
            t = t.replace("...", "".join(ell[ell_rank - n:]))
        if len(t) != len(s):
            raise ValueError("einsum rank mismatch")
        for c, d in zip(t, s):
            size[c] = max(size.get(c, 1), d)
        expanded.append(t)
    if arrow:
        out = rhs.replace("...", "".join(ell))
    else:
        counts = Counter("".join(expanded))
        out = "".join(ell) + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    macs = elementwise = 0
    cur = expanded[0]
    rest = expanded[1:]
    if not rest:
        return 0, math.prod(size[c] for c in cur)
    for i, nxt in enumerate(rest):
        later = set(out).union(*rest[i + 1:])
        letters = set(cur) | set(nxt)
        keep = {c for c in letters if c in later}
        contracted = letters - keep
        shared = set(cur) & set(nxt)
        work = math.prod(size[c] for c in letters)
        if contracted & shared or (contracted and not shared):
            macs += work
        else:
            elementwise += work
        cur = "".join(sorted(keep))
    return macs, elementwise


class _Counter:
    def __init__(self, model: onnx.ModelProto, shapes: dict[str, tuple[int, list[int] | None]],
                 binary_nodes: set[str], node_bits: dict[str, int] | None = None) -> None:
        self.model = model
        self.shapes = shapes
        self.binary = binary_nodes
        self.node_bits = dict(node_bits or {})
        g = model.graph
        self.consts = {t.name for t in g.initializer}
        self.inits = {t.name: t for t in g.initializer}
        self._nonzero: dict[str, float] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        for n in g.node:
            for o in n.output:
                self.producer[o] = n
            if n.op_type == "Constant":
                self.consts.update(n.output)

    def shape(self, name: str) -> list[int] | None:
        return self.shapes.get(name, (0, None))[1] if name else None

    def bits(self, name: str) -> int:
        return DTYPE_BITS.get(self.shapes.get(name, (0, None))[0], 32)

    def effective_bits(self, name: str) -> int:
        """Storage bits of a tensor, seen through layout ops back to a DequantizeLinear's integer input."""
        seen = 0
        while name in self.producer and seen < 8:
            p = self.producer[name]
            if p.op_type == "DequantizeLinear":
                return self.bits(p.input[0])
            if p.op_type not in _PASS_THROUGH:
                break
            name, seen = p.input[0], seen + 1
        return self.bits(name)

    def is_const(self, name: str) -> bool:
        seen = 0
        while seen < 8:
            if name in self.consts:
                return True
            p = self.producer.get(name)
            if p is None or p.op_type not in _PASS_THROUGH | {"DequantizeLinear", "Cast"}:
                return False
            name, seen = p.input[0], seen + 1
        return False

    def count(self, node: onnx.NodeProto) -> dict:
        """{macs, elementwise, weight_bits, act_bits, weight_const} or {'reason': ...} when uncountable."""
        op = node.op_type
        row: dict[str, Any] = {"macs": 0, "elementwise": 0, "weight_bits": None, "act_bits": None,
                               "weight_const": False}
        if op in _SUBGRAPH_OPS or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                      for a in node.attribute):
            return {"reason": "subgraphs are not counted"}
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if op in _MAC_OPS or (op in ("Attention", "MultiHeadAttention")
                              and node.domain in ("", "ai.onnx", "com.microsoft")):
            why = self._count_macs(node, attrs, row)
        elif op in ELEMENTWISE_COST or op == "Sum" or op in _REDUCE_INPUT or op in _WINDOW_POOLS:
            why = self._count_elementwise(node, attrs, row)
        elif op in MOVEMENT_OPS:
            why = None
        else:
            why = {"reason": "op not known to the counter"}
        if why is not None:
            return why
        if node.name and node.name in self.binary and row["macs"]:
            row["weight_bits"], row["act_bits"] = 1, 1
        elif node.name and node.name in self.node_bits and row["macs"]:
            row["weight_bits"] = self.node_bits[node.name]
        return row

    def _shapes(self, *names: str) -> list[list[int]] | None:
        got = [self.shape(n) for n in names]
        return None if any(s is None for s in got) else got

    def _operands(self, row: dict[str, Any], a: str, w: str, w_bits: int | None = None) -> None:
        row["act_bits"] = self.effective_bits(a)
        row["weight_bits"] = w_bits if w_bits is not None else self.effective_bits(w)
        row["weight_const"] = self.is_const(w)

    def _bias_elems(self, ins: list[str], out: str, bias_index: int) -> int:
        return math.prod(self.shape(out) or [0]) if len(ins) > bias_index and ins[bias_index] else 0

    def _count_macs(self, node: onnx.NodeProto, attrs: dict, row: dict[str, Any]) -> dict | None:
        """A node with MACs (convolutions, matrix products, attention) into `row`; {'reason'} if it cannot."""
        op, ins = node.op_type, list(node.input)
        need, mac_operands = self._shapes, functools.partial(self._operands, row)
        bias_elems = functools.partial(self._bias_elems, ins)
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            xi, wi = (0, 3) if op == "QLinearConv" else (0, 1)
            got = need(ins[wi], node.output[0])
            if got is None:
                return {"reason": "shape unknown"}
            w, y = got
            row["macs"] = math.prod(y) * math.prod(w[1:])
            bias_index = {"Conv": 2, "QLinearConv": 8}.get(op)     # ConvInteger has no bias input
            row["elementwise"] = bias_elems(node.output[0], bias_index) if bias_index else 0
            mac_operands(ins[xi], ins[wi])
        elif op == "ConvTranspose":
            got = need(ins[0], ins[1])
            if got is None:
                return {"reason": "shape unknown"}
            x, w = got
            row["macs"] = math.prod(x) * math.prod(w[1:])
            row["elementwise"] = bias_elems(node.output[0], 2)
            mac_operands(ins[0], ins[1])
        elif op in ("Gemm", "QGemm"):
            ai, bi = (0, 3) if op == "QGemm" else (0, 1)
            got = need(ins[ai], ins[bi])
            if got is None:
                return {"reason": "shape unknown"}
            a, b = got
            m, k = (a[1], a[0]) if attrs.get("transA", 0) else (a[0], a[1])
            n = b[0] if attrs.get("transB", 0) else b[1]
            row["macs"] = m * n * k
            ci = 6 if op == "QGemm" else 2
            row["elementwise"] = m * n if len(ins) > ci and ins[ci] else 0
            mac_operands(ins[ai], ins[bi])
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
                    "FusedMatMul"):
            ai, bi = (0, 3) if op == "QLinearMatMul" else (0, 1)
            got = need(ins[ai], node.output[0])
            if got is None:
                return {"reason": "shape unknown"}
            a, y = got
            k = a[-2] if op == "FusedMatMul" and attrs.get("transA", 0) else a[-1]
            row["macs"] = math.prod(y) * k
            mac_operands(ins[ai], ins[bi])
            if op == "DynamicQuantizeMatMul":
                row["act_bits"] = 8
            if op in ("MatMulIntegerToFloat", "DynamicQuantizeMatMul") and len(ins) > 4 and ins[4]:
                row["elementwise"] = math.prod(y)
        elif op == "MatMulNBits":
            got = need(ins[0])
            if got is None:
                return {"reason": "shape unknown"}
            a = got[0]
            row["macs"] = math.prod(a[:-1]) * int(attrs["K"]) * int(attrs["N"])
            mac_operands(ins[0], ins[1], w_bits=int(attrs.get("bits", 4)))
            row["weight_const"] = True
            if len(ins) > 5 and ins[5]:
                row["elementwise"] = math.prod(a[:-1]) * int(attrs["N"])
        elif op == "Einsum":
            got = need(*ins)
            if got is None:
                return {"reason": "shape unknown"}
            try:
                row["macs"], row["elementwise"] = _einsum_macs(attrs["equation"].decode()
                                                               if isinstance(attrs["equation"], bytes)
                                                               else attrs["equation"], got)
            except (ValueError, KeyError):
                return {"reason": "einsum equation not understood"}
            if len(ins) == 2:
                mac_operands(ins[0], ins[1])
        else:  # Attention, MultiHeadAttention
            return self._attention(node, attrs, row)
        return None

    def _count_elementwise(self, node: onnx.NodeProto, attrs: dict, row: dict[str, Any]) -> dict | None:
        """An element-wise, reduction or pooling node into `row`; {'reason'} if its shape is unknown."""
        op, ins = node.op_type, list(node.input)
        if op in ELEMENTWISE_COST:
            y = self.shape(node.output[0])
            if y is None:
                return {"reason": "shape unknown"}
            extra = max(len([i for i in ins if i]) - 2, 0) if op in ("Max", "Min", "Mean", "Sum") else 0
            row["elementwise"] = int(ELEMENTWISE_COST[op] * math.prod(y) * (1 + extra))
        elif op == "Sum":
            y = self.shape(node.output[0])
            if y is None:
                return {"reason": "shape unknown"}
            row["elementwise"] = math.prod(y) * max(len(ins) - 1, 1)
        elif op in _REDUCE_INPUT:
            x = self.shape(ins[0])
            if x is None:
                return {"reason": "shape unknown"}
            row["elementwise"] = int(_REDUCE_INPUT[op] * math.prod(x))
        else:  # a windowed pool
            y = self.shape(node.output[0])
            if y is None:
                return {"reason": "shape unknown"}
            row["elementwise"] = math.prod(y) * math.prod(attrs.get("kernel_shape", [1]))
        return None

    def nonzero_fraction(self, node: onnx.NodeProto) -> float:
        """The fraction of a MAC node's constant weight that is not zero (1.0 when the weight is an
        activation, packed, or not found)."""
        wi = {"QLinearConv": 3, "QGemm": 3, "QLinearMatMul": 3}.get(node.op_type, 1)
        if node.op_type == "MatMulNBits" or len(node.input) <= wi:
            return 1.0
        name, seen, zero_point = node.input[wi], 0, None
        while name not in self.inits and seen < 8:
            p = self.producer.get(name)
            if p is None or p.op_type not in _PASS_THROUGH | {"DequantizeLinear", "Cast"}:
                return 1.0
            if p.op_type == "DequantizeLinear":
                zero_point = (p.input[2] if len(p.input) > 2 and p.input[2] else None,
                              next((a.i for a in p.attribute if a.name == "axis"), 1))
            name, seen = p.input[0], seen + 1
        if name not in self.inits or self.inits[name].data_location == TensorProto.EXTERNAL:
            return 1.0  # external data is never loaded to count: its MACs count in full
        key = f"{name}|{zero_point}"
        if key not in self._nonzero:
            from onnx import numpy_helper
            try:
                w = numpy_helper.to_array(self.inits[name])
                zp = 0
                if zero_point and zero_point[0] in self.inits:
                    zp = numpy_helper.to_array(self.inits[zero_point[0]])
                    if zp.ndim == 1 and w.ndim > 1 and zp.size == w.shape[zero_point[1]]:
                        shape = [1] * w.ndim
                        shape[zero_point[1]] = -1
                        zp = zp.reshape(shape)
                self._nonzero[key] = float(np.count_nonzero(w != zp)) / w.size if w.size else 1.0
            except Exception:  # a type numpy cannot hold (packed int4), unreadable data: counted in full
                self._nonzero[key] = 1.0
        return self._nonzero[key]

    def _attention(self, node: onnx.NodeProto, attrs: dict, row: dict) -> dict | None:
        ins = list(node.input)
        if node.domain == "com.microsoft" and node.op_type == "Attention":
            got = [self.shape(ins[0]), self.shape(ins[1])]
            if any(s is None for s in got):
                return {"reason": "shape unknown"}
            x, w = got
            b, s = x[0], x[1]
            qkv = attrs.get("qkv_hidden_sizes") or [w[1] // 3] * 3
            past = self.shape(ins[4]) if len(ins) > 4 and ins[4] else None
            total = s + (past[3] if past else 0)
            row["macs"] = b * s * x[2] * w[1] + b * s * total * (qkv[0] + qkv[2])
            row["weight_bits"], row["act_bits"] = self.effective_bits(ins[1]), self.effective_bits(ins[0])
            row["weight_const"] = self.is_const(ins[1])
            return None
        got = [self.shape(i) for i in ins[:3]] if len(ins) >= 3 and all(ins[:3]) else None
        if not got or any(s is None for s in got):
            return {"reason": "shape unknown or packed QKV not supported"}
        q, k, v = got
        if node.domain == "com.microsoft":  # MultiHeadAttention: Q [B,S,D]; K/V [B,L,D] or [B,H,L,d]
            h = int(attrs.get("num_heads", 1))
            if len(q) != 3:
                return {"reason": "packed QKV not supported"}
            b, s, dq = q
            seq_len = k[1] if len(k) == 3 else k[2]
            dv = v[2] if len(v) == 3 else v[1] * v[3]
            heads = h
        else:  # ONNX Attention (opset 23+): 4-D [B,H,S,D] or 3-D [B,S,H*D] with q/kv_num_heads
            if len(q) == 4:
                b, hq, s, d = q
                dq, heads = hq * d, hq
                seq_len = k[2]
                dv = hq * v[3]
            else:
                hq, hkv = int(attrs.get("q_num_heads", 0)), int(attrs.get("kv_num_heads", 0))
                if not hq or not hkv:
                    return {"reason": "3-D attention without head counts"}
                b, s, dq = q
                seq_len = k[1]
                dv, heads = hq * (v[2] // hkv), hq
            past = self.shape(ins[4]) if len(ins) > 4 and ins[4] else None
            seq_len += past[2] if past else 0
        row["macs"] = b * s * seq_len * (dq + dv)
        row["elementwise"] = (ELEMENTWISE_COST["Softmax"] + 1) * b * heads * s * seq_len  # scale + softmax
        row["act_bits"] = self.effective_bits(ins[0])
        row["weight_bits"] = self.effective_bits(ins[1])
        return None


def _params_and_bytes(model: onnx.ModelProto) -> tuple[int, int]:
    g = model.graph
    qparam: set[str] = set()
    nbits_weight: dict[str, int] = {}
    # Dynamic quantization multiplies the weight scale by the activation scale that
    # DynamicQuantizeLinear computes (output 1): that weight scale is a quantization parameter too.
    dynamic_scales = {n.output[1] for n in g.node if n.op_type == "DynamicQuantizeLinear" and len(n.output) > 1}
    for n in g.node:
        for i in _QPARAM_INPUTS.get(n.op_type, ()):
            if i < len(n.input) and n.input[i]:
                qparam.add(n.input[i])
        if n.op_type == "Mul" and len(n.input) == 2 and set(n.input) & dynamic_scales:
            qparam.update(n.input)
        if n.op_type == "MatMulNBits" and len(n.input) > 1:
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            nbits_weight[n.input[1]] = int(attrs["K"]) * int(attrs["N"])
    tensors = list(g.initializer) + [helper.get_attribute_value(a) for n in g.node if n.op_type == "Constant"
                                     for a in n.attribute if a.name == "value"]
    params = weight_bytes = 0
    for t in tensors:
        numel = math.prod(t.dims)
        weight_bytes += math.ceil(numel * DTYPE_BITS.get(t.data_type, 32) / 8)
        if t.name in nbits_weight:
            params += nbits_weight[t.name]
        elif t.name not in qparam and t.data_type not in (TensorProto.INT64, TensorProto.STRING):
            params += numel
    return params, weight_bytes


def layer_ids(nodes) -> list[str]:
    """Each node's identity as a layer: its name where it has one no earlier node took, else
    `<op type>_<index>`, which is what ONNX Runtime's profiler calls an unnamed node. Graphs built with
    onnx.helper (and by some converters) name no node: keyed by name, every layer would be ''."""
    ids: list[str] = []
    taken: set[str] = set()
    for i, node in enumerate(nodes):
        lid = node.name if node.name and node.name not in taken else f"{node.op_type}_{i}"
        while lid in taken:  # a node already named like another's fallback
            lid += "_"
        taken.add(lid)
        ids.append(lid)
    return ids


def name_layers(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every node named by its `layer_ids` (in place): tools that take node names (the
    quantizer's include/exclude lists) and the profiler then agree on which node is which layer."""
    for node, lid in zip(model.graph.node, layer_ids(model.graph.node)):
        node.name = lid
    return model


def count_work(model: str | Path | onnx.ModelProto, *, batch_size: int = 1, dims: dict[str, int] | None = None,
               binary_nodes: set[str] | None = None, node_bits: dict[str, int] | None = None) -> WorkCount:
    """Count the work of one inference of `model` at `batch_size` (see CONVENTIONS). `binary_nodes`: nodes
    whose weights are 1-bit (XNOR: 1 x 1-bit BOPs); `node_bits`: nodes whose weights are stored at that many
    bits though the graph holds them dequantized (an emulated variant)."""
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}", field="batch_size")
    proto = _load(model)
    bound = _bind_dims(proto, batch_size, dict(dims or {}))
    shapes = _infer(proto, bound)
    counter = _Counter(proto, shapes, set(binary_nodes or ()), node_bits)
    by_node: list[dict] = []
    by_op: dict[str, dict] = {}
    uncounted: Counter[str] = Counter()
    macs = elementwise = bops = 0
    effective = 0.0
    wbits_num = wbits_den = 0.0
    any_bits_num = any_bits_den = 0.0
    for node, lid in zip(proto.graph.node, layer_ids(proto.graph.node)):
        row = counter.count(node)
        entry = {"name": lid, "op_type": node.op_type}
        if "reason" in row:
            uncounted[node.op_type] += 1
            entry.update({"macs": None, "elementwise_ops": None, "weight_bits": None, "act_bits": None,
                          "reason": row["reason"]})
            by_node.append(entry)
            continue
        m, e = int(row["macs"]), int(row["elementwise"])
        macs += m
        elementwise += e
        if m:
            effective += m * (counter.nonzero_fraction(node) if row["weight_const"] else 1.0)
        if m:
            wb, ab = row["weight_bits"] or 32, row["act_bits"] or 32
            bops += m * wb * ab
            any_bits_num += m * wb
            any_bits_den += m
            if row["weight_const"]:
                wbits_num += m * wb
                wbits_den += m
        op = by_op.setdefault(node.op_type, {"count": 0, "macs": 0, "elementwise_ops": 0, "share": 0.0})
        op["count"] += 1
        op["macs"] += m
        op["elementwise_ops"] += e
        entry.update({"macs": m, "elementwise_ops": e, "weight_bits": row["weight_bits"],
                      "act_bits": row["act_bits"]})
        by_node.append(entry)
    node_work = _node_work(proto, shapes, by_node)
    for op in by_op.values():
        op["share"] = op["macs"] / macs if macs else 0.0
    for op_type, n in uncounted.items():
        by_op.setdefault(op_type, {"count": 0, "macs": 0, "elementwise_ops": 0, "share": 0.0,
                                   "uncounted": 0})
        by_op[op_type]["count"] += n
        by_op[op_type]["uncounted"] = n
    params, weight_bytes = _params_and_bytes(proto)
    inits = {t.name for t in proto.graph.initializer}
    act_bytes = 0
    for vi in [*proto.graph.input, *proto.graph.output]:
        if vi.name in inits:
            continue
        elem, shape = shapes.get(vi.name, (vi.type.tensor_type.elem_type, None))
        if vi.name in bound:
            shape = bound[vi.name]
        if shape is None:
            uncounted["<graph output shape>"] += 1
            continue
        act_bytes += math.ceil(math.prod(shape) * DTYPE_BITS.get(elem, 32) / 8)
    if wbits_den:
        weight_bits = wbits_num / wbits_den
    elif any_bits_den:
        weight_bits = any_bits_num / any_bits_den
    else:
        weight_bits = 0.0
    return WorkCount(macs=macs, flops=2 * macs + elementwise, bops=bops, elementwise_ops=elementwise, params=params,
                     weight_bytes=weight_bytes, activation_bytes=act_bytes, bytes_moved=weight_bytes + act_bytes,
                     nodes=len(proto.graph.node), weight_bits=round(weight_bits, 4),
                     by_op=dict(sorted(by_op.items(), key=lambda kv: -kv[1]["macs"])), by_node=by_node,
                     uncounted_ops=dict(uncounted), batch_size=batch_size, node_work=node_work,
                     effective_macs=int(round(effective)))


CONV_OPS = frozenset({"Conv", "ConvInteger", "QLinearConv", "ConvTranspose"})


def _node_work(proto: onnx.ModelProto, shapes: dict, by_node: list[dict]) -> list[list]:
    """Each counted node's class, MACs and bytes (constants apart from activations), equal ones grouped:
    [[class, macs, weight bytes, activation bytes, count], ...]. A node with an unknown shape is left out."""
    inits = {t.name for t in proto.graph.initializer}
    groups: Counter = Counter()
    for node, entry in zip(proto.graph.node, by_node):
        if entry.get("macs") is None:
            continue
        wbytes = abytes = 0
        known = True
        for name in [*node.input, *node.output]:
            if not name:
                continue
            elem, shape = shapes.get(name, (0, None))
            if shape is None:
                known = False
                break
            n = math.ceil(math.prod(shape) * DTYPE_BITS.get(elem, 32) / 8)
            if name in inits:
                wbytes += n
            else:
                abytes += n
        if not known:
            continue
        entry["bytes"] = wbytes + abytes
        m = entry["macs"]
        cls = "conv" if node.op_type in CONV_OPS else "matmul" if m else "other"
        groups[(cls, m, wbytes, abytes)] += 1
    return [[c, m, w, a, n] for (c, m, w, a), n in sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][0]))]


# ------------------------------------------------------------------------------------------- printing

def _si(n: float) -> str:
    if abs(n) < 1e3:  # small counts stay exact
        return f"{n:.4g}" if isinstance(n, float) else str(n)
    return fmt_si(n, sep="")


def format_work(work: WorkCount, by: str = "op") -> str:
    """The plain-text table `effbench flops` prints: per op type (or per node), totals, uncounted ops."""
    if by not in ("op", "node"):
        raise UserError(f"unknown grouping '{by}'", field="--by", fix="use op or node")
    lines = []
    if by == "op":
        lines.append(f"{'op_type':<24}{'count':>7}{'MACs':>20}{'share':>8}{'elementwise':>18}")
        for op, row in work.by_op.items():
            note = f"  ({row['uncounted']} uncounted)" if row.get("uncounted") else ""
            lines.append(f"{op[:23]:<24}{row['count']:>7}{row['macs']:>20,}{row['share']:>8.1%}"
                         f"{row['elementwise_ops']:>18,}{note}")
    else:
        lines.append(f"{'node':<40}{'op_type':<22}{'MACs':>20}{'w_bits':>8}{'a_bits':>8}")
        for row in work.by_node:
            macs = "uncounted" if row["macs"] is None else f"{row['macs']:,}"
            lines.append(f"{(row['name'] or '-')[:39]:<40}{row['op_type'][:21]:<22}{macs:>20}"
                         f"{row['weight_bits'] if row['weight_bits'] is not None else '-':>8}"
                         f"{row['act_bits'] if row['act_bits'] is not None else '-':>8}")
    lines += [
        "",
        f"batch size      {work.batch_size}",
        f"nodes           {work.nodes}",
        f"MACs            {work.macs:,} ({_si(work.macs)})",
        f"FLOPs           {work.flops:,} ({_si(work.flops)})  = 2 x MACs + elementwise ops",
        f"BOPs            {work.bops:,} ({_si(work.bops)})  = sum MACs x weight bits x activation bits",
        f"params          {work.params:,} ({_si(work.params)})",
        f"weight bytes    {work.weight_bytes:,} ({_si(work.weight_bytes)}B), mean weight bits {work.weight_bits:g}",
        f"bytes moved     {work.bytes_moved:,} (estimate: weights + graph inputs/outputs)",
        "uncounted ops   " + (", ".join(f"{k} x{v}" for k, v in work.uncounted_ops.items()) or "none"),
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- torch side

def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # aten._scaled_dot_product_flash_attention_for_cpu has no formula in torch: without this a
    # transformer's attention is silently missing from FlopCounterMode (docs/runtime-notes.md "Counting and memory").
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def torch_flops(module, example_inputs: tuple) -> int:
    """FlopCounterMode total (2 x MACs) of one forward pass, CPU attention included.

    The nn.MultiheadAttention/TransformerEncoderLayer fast path (a fused native kernel no formula
    covers) is switched off for the duration so every matmul is visible.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop}
    was_fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as fc:
            module(*example_inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(was_fast)
    return int(fc.get_total_flops())


def crosscheck(module, example_inputs: tuple, onnx_model: str | Path | onnx.ModelProto,
               *, dims: dict[str, int] | None = None) -> tuple[int, int]:
    """(MACs counted from the ONNX graph, FlopCounterMode total / 2) for the same module and inputs.

    The batch size is taken from the first example input; equal numbers mean the graph count is whole.
    """
    batch = int(example_inputs[0].shape[0]) if example_inputs and hasattr(example_inputs[0], "shape") else 1
    onnx_macs = count_work(onnx_model, batch_size=batch, dims=dims).macs
    return onnx_macs, torch_flops(module, example_inputs) // 2
