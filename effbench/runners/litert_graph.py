"""Reading a LiteRT model and its interpreter (the litert runner's, `runners/litert.py`): which operators the
delegate took, what each multiply-accumulate operator computes in, and the inputs and outputs in the torch
module's order, quantized where the graph's are. Imports `ai_edge_litert` only inside `graph_types`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# operators whose multiply-accumulates dominate: `info["compute"]` gives their input x weight types
_MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV")


def delegation_summary(interpreter) -> dict[str, Any]:
    """Which of the graph's operators the delegate took. The interpreter lists the original nodes and one
    DELEGATE node per partition (`_get_ops_details`, private: the Python API has no public node list); a
    partition's nodes are those between its DELEGATE node's inputs and outputs, found by walking back from
    the outputs through their producers and stopping at the inputs."""
    ops = interpreter._get_ops_details()
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    original = {o["index"]: o for o in ops if o["op_name"] != "DELEGATE"}
    producer = {int(t): i for i, o in original.items() for t in o["outputs"]}
    taken: set[int] = set()
    for d in delegates:
        stop, stack, seen = {int(t) for t in d["inputs"]}, [int(t) for t in d["outputs"]], set()
        while stack:
            t = stack.pop()
            if t < 0 or t in stop or t in seen:
                continue
            seen.add(t)
            if t in producer and producer[t] not in taken:
                taken.add(producer[t])
                stack.extend(int(x) for x in original[producer[t]]["inputs"])
    by_op: dict[str, dict[str, int]] = {}
    for i, o in original.items():
        c = by_op.setdefault(o["op_name"], {"delegated": 0, "not_delegated": 0})
        c["delegated" if i in taken else "not_delegated"] += 1
    total = len(original)
    return {"fraction": round(len(taken) / total, 4) if total else 0.0, "delegated_ops": len(taken),
            "total_ops": total,
            "not_delegated": {k: v["not_delegated"] for k, v in by_op.items() if v["not_delegated"]},
            "by_operator": by_op, "subgraphs": len(delegates),
            "counted": "the .tflite's operators; a DELEGATE node's partition read from its inputs and outputs"}


def graph_types(path: Path) -> dict[str, Any]:
    """From the flatbuffer itself (the interpreter's tensor details show int4 as int8): elements of the
    constant tensors by stored type, and what each multiply-accumulate operator consumes (its first two
    operands' types, and the type a DEQUANTIZE made them from)."""
    from collections import Counter

    from ai_edge_litert import schema_py_generated as schema
    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    g = model.Subgraphs(0)
    tensors = [g.Tensors(i) for i in range(g.TensorsLength())]
    weights: Counter[str] = Counter()
    for t in tensors:
        if model.Buffers(t.Buffer()).DataLength() > 0 and t.ShapeLength():
            weights[types[t.Type()]] += int(np.prod(t.ShapeAsNumpy()))
    dequantized = {}   # a DEQUANTIZE's output -> the type it was dequantized from (a weight as stored)
    compute: Counter[str] = Counter()

    def operand(t: int) -> str:
        return types[tensors[t].Type()] + (f" (dequantized from {dequantized[t]})" if t in dequantized else "")

    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = codes.get(max(model.OperatorCodes(op.OpcodeIndex()).BuiltinCode(),
                             model.OperatorCodes(op.OpcodeIndex()).DeprecatedBuiltinCode()), "CUSTOM")
        ins = [int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else []
        if code == "DEQUANTIZE" and ins:
            dequantized[int(op.Outputs(0))] = types[tensors[ins[0]].Type()]
        elif code in _MAC_OPS and len(ins) >= 2:
            compute[f"{code}: {operand(ins[0])} x {operand(ins[1])}"] += 1
    return {"weight_elements_by_type": dict(weights), "compute": dict(compute)}


def signature_order(interp) -> tuple[list[dict], list[dict]]:
    """Input and output details in the torch module's order: the signature's args_0, args_1 ... and
    output_0, output_1 ... (the subgraph's own order need not be the module's)."""
    ins, outs = interp.get_input_details(), interp.get_output_details()
    sigs = interp._get_full_signature_list()   # private: the public list gives names without tensor indices
    if len(sigs) != 1:
        return ins, outs
    sig = next(iter(sigs.values()))

    def ordered(details: list[dict], named: dict[str, int]) -> list[dict]:
        by_index = {d["index"]: d for d in details}
        keyed = sorted(named.items(), key=lambda kv: int(kv[0].rpartition("_")[2]) if kv[0].rpartition("_")[2].isdigit()
                       else 1 << 30)
        out = [by_index[i] for _, i in keyed if i in by_index]
        return out if len(out) == len(details) else details
    return ordered(ins, sig.get("inputs", {})), ordered(outs, sig.get("outputs", {}))


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    num, den = (a * b).sum(1), np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(np.where(den > 0, num / np.where(den > 0, den, 1), np.where(num == 0, 1.0, 0.0))))


def io_text(d: dict) -> str:
    scale, zero = d.get("quantization") or (0.0, 0)
    dtype = np.dtype(d["dtype"]).name
    if scale:
        return f"{dtype} (scale {scale:.6g}, zero point {zero}): quantized/dequantized outside the timed calls"
    return dtype


def set_inputs(interp, details: dict, feeds: dict[str, np.ndarray]) -> None:
    for d, value in zip(details["inputs"], feeds.values()):
        scale, zero = d.get("quantization") or (0.0, 0)
        if scale:
            info = np.iinfo(d["dtype"])
            value = np.clip(np.round(np.asarray(value, np.float32) / scale) + zero, info.min, info.max)
        interp.set_tensor(d["index"], np.ascontiguousarray(value, dtype=d["dtype"]))


def invoke(interp, details: dict, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    set_inputs(interp, details, feeds)
    interp.invoke()
    out = []
    for d in details["outputs"]:
        a = interp.get_tensor(d["index"])
        scale, zero = d.get("quantization") or (0.0, 0)
        out.append((a.astype(np.float32) - zero) * scale if scale else np.array(a))
    return out
