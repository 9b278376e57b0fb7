"""Time `count_work` on a BERT-base-sized encoder (~110M parameters) built on the fly with random weights.

Usage: python bench/flops_100m.py [--layers 12] [--seq 128] [--batch 1] [--repeat 3]
Prints the wall time of counting from the in-memory model, from a file with external weights, and from
a single self-contained file (the `effbench flops MODEL.onnx` case; includes parsing the protobuf).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from effbench.measure.flops import count_work, format_work  # noqa: E402

VOCAB, HIDDEN, HEADS, FFN = 30522, 768, 12, 3072


def build_encoder(layers: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, *shape: int) -> str:
        inits.append(numpy_helper.from_array((rng.random(shape, dtype=np.float32) - 0.5) * 0.04, name))
        return name

    def const(name: str, values: list[int]) -> str:
        inits.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        return name

    def linear(x: str, name: str, n_in: int, n_out: int) -> str:
        nodes.append(helper.make_node("MatMul", [x, weight(f"{name}.w", n_in, n_out)], [f"{name}.mm"]))
        nodes.append(helper.make_node("Add", [f"{name}.mm", weight(f"{name}.b", n_out)], [name]))
        return name

    def layer_norm(x: str, name: str) -> str:
        nodes.append(helper.make_node("LayerNormalization", [x, weight(f"{name}.g", HIDDEN),
                                                             weight(f"{name}.b", HIDDEN)], [name], axis=-1))
        return name

    head_dim = HIDDEN // HEADS
    split = const("split_heads", [0, 0, HEADS, head_dim])
    merge = const("merge_heads", [0, 0, HIDDEN])
    scale = numpy_helper.from_array(np.array(1 / np.sqrt(head_dim), dtype=np.float32), "scale")
    inits.append(scale)
    nodes.append(helper.make_node("Gather", [weight("embed", VOCAB, HIDDEN), "ids"], ["emb"]))
    h = layer_norm("emb", "emb_ln")
    for i in range(layers):
        p = f"l{i}"
        heads = {}
        for part in ("q", "k", "v"):
            t = linear(h, f"{p}.{part}", HIDDEN, HIDDEN)
            nodes.append(helper.make_node("Reshape", [t, split], [f"{t}.r"]))
            perm = [0, 2, 3, 1] if part == "k" else [0, 2, 1, 3]
            nodes.append(helper.make_node("Transpose", [f"{t}.r"], [f"{t}.t"], perm=perm))
            heads[part] = f"{t}.t"
        nodes += [helper.make_node("MatMul", [heads["q"], heads["k"]], [f"{p}.s"]),
                  helper.make_node("Mul", [f"{p}.s", "scale"], [f"{p}.ss"]),
                  helper.make_node("Softmax", [f"{p}.ss"], [f"{p}.p"], axis=-1),
                  helper.make_node("MatMul", [f"{p}.p", heads["v"]], [f"{p}.c"]),
                  helper.make_node("Transpose", [f"{p}.c"], [f"{p}.ct"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [f"{p}.ct", merge], [f"{p}.cm"])]
        o = linear(f"{p}.cm", f"{p}.o", HIDDEN, HIDDEN)
        nodes.append(helper.make_node("Add", [o, h], [f"{p}.res1"]))
        h1 = layer_norm(f"{p}.res1", f"{p}.ln1")
        f1 = linear(h1, f"{p}.ffn1", HIDDEN, FFN)
        nodes.append(helper.make_node("Gelu", [f1], [f"{p}.gelu"]))
        f2 = linear(f"{p}.gelu", f"{p}.ffn2", FFN, HIDDEN)
        nodes.append(helper.make_node("Add", [f2, h1], [f"{p}.res2"]))
        h = layer_norm(f"{p}.res2", f"{p}.ln2")
    graph = helper.make_graph(nodes, "bert_base_random",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return model


def expected_macs(layers: int, batch: int, seq: int) -> int:
    per_token = layers * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN)
    attention = layers * 2 * seq * HIDDEN                     # QK^T and PV per token
    return batch * seq * (per_token + attention)


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    dims = {"seq": args.seq}

    t0 = time.perf_counter()
    model = build_encoder(args.layers)
    print(f"built {len(model.graph.node)} nodes in {time.perf_counter() - t0:.1f} s")

    t_mem, work = best_of(lambda: count_work(model, batch_size=args.batch, dims=dims), args.repeat)
    print(format_work(work))
    want = expected_macs(args.layers, args.batch, args.seq)
    print(f"\nparams {work.params / 1e6:.1f} M; MACs {work.macs:,} (hand formula {want:,}: "
          f"{'equal' if work.macs == want else 'DIFFERENT'})")
    print(f"count_work, in-memory model:        {t_mem:.3f} s (best of {args.repeat})")
    with tempfile.TemporaryDirectory() as tmp:
        # Self-contained file first: saving with external data rewrites the in-memory tensors.
        one = Path(tmp) / "one.onnx"
        onnx.save_model(model, str(one))
        t_one, _ = best_of(lambda: count_work(one, batch_size=args.batch, dims=dims), args.repeat)
        print(f"count_work, one {one.stat().st_size / 1e6:.0f} MB file:        {t_one:.3f} s (target < 2 s)")
        ext = Path(tmp) / "ext.onnx"
        onnx.save_model(model, str(ext), save_as_external_data=True, location="ext.bin")
        t_ext, _ = best_of(lambda: count_work(ext, batch_size=args.batch, dims=dims), args.repeat)
        print(f"count_work, file + external data:   {t_ext:.3f} s")

if __name__ == "__main__":
    main()
