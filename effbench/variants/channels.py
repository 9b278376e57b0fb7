"""Structured channel pruning (`prune: {method: channel}`): whole output channels of a Conv, Gemm or MatMul
removed by the L1 or L2 norm of their weights, with everything that reads them cut alike (bias,
BatchNormalization, per-channel constants of element-wise ops, a flatten, the next weight layer's input), so
the graph and the module really shrink.

The plan is made on the ONNX graph: a chain is a weight layer, then element-wise ops, BatchNormalization,
pooling or a flatten, ending in weight layers only. Anything else (a residual join, a reshape into attention
heads, the graph's output) leaves that layer whole, and the variant says why. A torch module gets the same
plan: each cut tensor is found among its parameters by value (and name), the layers resized, and the pruned
module checked against the pruned graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNARY = frozenset("""Relu LeakyRelu Sigmoid Tanh Erf Gelu FastGelu QuickGelu HardSigmoid HardSwish Elu Selu Celu
Softplus Softsign Mish Swish Identity Dropout Neg Abs Exp Sqrt Reciprocal Clip ThresholdedRelu Cast""".split())
BINARY = frozenset("Add Sub Mul Div Pow Max Min PRelu".split())
POOLS = frozenset("MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool".split())
PASSES = "element-wise ops, BatchNormalization, pooling and a flatten"


@dataclass
class Chain:
    """One prunable weight layer and everything its output channels reach."""

    producer: str                       # node name
    weight: str
    out_axis: int
    channels: int
    cuts: dict[str, tuple[int, int]] = field(default_factory=dict)     # initializer -> (axis, block)
    reshapes: dict[str, tuple[int, int]] = field(default_factory=dict)  # Reshape shape constant -> (index, block)
    depthwise: list[str] = field(default_factory=list)  # depthwise Conv nodes whose group follows the channels
    consumers: list[str] = field(default_factory=list)
    reason: str | None = None
    keep: list[int] | None = None
    torch_cuts: dict[str, tuple[int, int]] = field(default_factory=dict)  # state-dict key -> (axis, block)
    norms: list[tuple[str, ...]] = field(default_factory=list)  # BatchNormalization (scale, B, mean, var)
    torch_keys: dict[str, str] = field(default_factory=dict)    # initializer -> its torch state-dict key


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def expand(keep: list[int], block: int) -> np.ndarray:
    """Indices along an axis that holds `block` consecutive elements per channel (after a flatten)."""
    k = np.asarray(keep, dtype=np.int64)
    return (k[:, None] * block + np.arange(block)[None, :]).reshape(-1)


class _Graph:
    def __init__(self, model) -> None:
        import onnx
        from onnx import numpy_helper
        g = model.graph
        self.model = model
        self.inits = {t.name: t for t in g.initializer}
        self.arrays: dict[str, np.ndarray] = {}
        self.consumers: dict[str, list] = {}
        self.uses: dict[str, int] = {}
        for n in g.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
                    self.uses[i] = self.uses.get(i, 0) + 1
        self.const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
        self.outputs = {o.name for o in g.output}
        self.numpy_helper = numpy_helper
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
            vis = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
        except Exception:  # shapes are only needed to see through a flatten
            vis = []
        self.shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                       for v in vis}

    def array(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            if name not in self.arrays:
                self.arrays[name] = self.numpy_helper.to_array(self.inits[name])
            return self.arrays[name]
        node = self.const_nodes.get(name)
        if node is not None:
            a = _attrs(node).get("value")
            return self.numpy_helper.to_array(a) if a is not None and hasattr(a, "dims") else None
        return None


def _const_cut(gr: _Graph, ch: Chain, name: str, layout: tuple, node) -> str | None:
    """Record the cut of a constant operand of an element-wise node; the reason when it cannot be cut."""
    a = gr.array(name)
    if a is None:
        return f"{node.op_type} node '{node.name}' joins it with another branch ('{name}'), as a residual connection does"
    shape, n = list(a.shape), ch.channels
    if layout[0] == "nc":
        i = 1 - (layout[1] - len(shape))
        if len(shape) > layout[1]:
            return f"{node.op_type} node '{node.name}' broadcasts it to a higher rank"
        if i < 0 or shape[i] == 1:
            return None
        if shape[i] != n:
            return f"{node.op_type} node '{node.name}' has a constant of shape {shape} that is not per-channel"
        cut = (i, 1)
    else:
        block = layout[1]
        if not shape or shape[-1] == 1:
            return None
        if shape[-1] != n * block:
            return f"{node.op_type} node '{node.name}' has a constant of shape {shape} that is not per-channel"
        cut = (len(shape) - 1, block)
    if name not in gr.inits:
        return f"{node.op_type} node '{node.name}' takes per-channel values from a Constant node"
    ch.cuts[name] = cut
    return None


def _flatten_block(gr: _Graph, node, t: str, layout: tuple, ch: Chain) -> tuple[int | None, str | None]:
    """The block (spatial elements per channel) when `node` flattens an NCHW tensor to [N, C x H x W]."""
    shape = gr.shapes.get(t)
    if not shape or len(shape) != layout[1] or any(d is None for d in shape[2:]):
        return None, f"the shape into {node.op_type} node '{node.name}' is unknown"
    block = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    op = node.op_type
    if op == "Flatten":
        return (block, None) if _attrs(node).get("axis", 1) == 1 else (None, f"Flatten node '{node.name}' is not on axis 1")
    if op == "Squeeze":
        return (1, None) if block == 1 else (None, f"Squeeze node '{node.name}' keeps spatial dimensions")
    target = gr.array(node.input[1]) if len(node.input) > 1 else None
    if target is None or target.ndim != 1 or len(target) != 2:
        return None, f"Reshape node '{node.name}' does not flatten to two dimensions"
    a, b = (int(x) for x in target)
    if b == ch.channels * block and a >= -1:
        if node.input[1] not in gr.inits or gr.uses.get(node.input[1], 0) > 1:
            return None, f"Reshape node '{node.name}' takes its shape from a shared or computed tensor"
        ch.reshapes[node.input[1]] = (1, block)
        return block, None
    if b == -1 and a == 0:
        return block, None
    return None, f"Reshape node '{node.name}' reshapes to {[a, b]}, not [N, C x H x W]"


# Over 80 lines on purpose: one walk down the graph whose cases share the walk's state.
def _trace(gr: _Graph, node, wname: str, out_axis: int) -> Chain:
    w = gr.array(wname)
    ch = Chain(producer=node.name, weight=wname, out_axis=out_axis, channels=int(w.shape[out_axis]))
    ch.cuts[wname] = (out_axis, 1)
    ins = list(node.input)

    def fail(reason: str) -> Chain:
        ch.reason = reason
        return ch

    if node.op_type == "Conv":
        if _attrs(node).get("group", 1) != 1:
            return fail("a grouped convolution's output channels are tied to its input groups")
        layout: tuple = ("nc", w.ndim)
        if len(ins) > 2 and ins[2]:
            if ins[2] not in gr.inits:
                return fail("its bias is computed, not a constant")
            ch.cuts[ins[2]] = (0, 1)
    else:
        if node.op_type == "Gemm":
            if _attrs(node).get("transA", 0):
                return fail("Gemm with transA is not rewritten")
            if len(ins) > 2 and ins[2]:
                why = _const_cut(gr, ch, ins[2], ("last", 1), node)
                if why:
                    return fail(why)
        layout = ("last", 1)
    tracked = {node.output[0]: layout}
    queue, seen, joins = [node.output[0]], {node.name}, []
    while queue:
        t = queue.pop(0)
        if t in gr.outputs:
            return fail(f"its output channels reach the graph output '{t}'")
        lay = tracked[t]
        for c in gr.consumers.get(t, []):
            op, cins = c.op_type, list(c.input)
            if c.name in seen:
                continue
            seen.add(c.name)
            out = lay
            if op in ("Conv", "Gemm", "MatMul") and cins[0] == t and len(cins) > 1 and cins[1] in gr.inits:
                cw, a = gr.array(cins[1]), _attrs(c)
                if op == "Conv" and lay[0] == "nc" and a.get("group", 1) == 1:
                    ch.cuts[cins[1]] = (1, 1)
                elif op == "Conv" and lay[0] == "nc" and a.get("group", 1) == ch.channels == cw.shape[0] \
                        and cw.shape[1] == 1:
                    ch.cuts[cins[1]] = (0, 1)  # depthwise: its channels are ours; it passes them on
                    if len(cins) > 2 and cins[2]:
                        ch.cuts[cins[2]] = (0, 1)
                    ch.depthwise.append(c.name)
                    tracked[c.output[0]] = lay
                    queue.append(c.output[0])
                    continue
                elif op == "Gemm" and lay[0] == "last" and not a.get("transA", 0):
                    ch.cuts[cins[1]] = (1 if a.get("transB", 0) else 0, lay[1])
                elif op == "MatMul" and lay[0] == "last" and cw.ndim == 2:
                    ch.cuts[cins[1]] = (0, lay[1])
                else:
                    return fail(f"{op} node '{c.name}' reads it in a form the rewrite does not handle")
                ch.consumers.append(c.name)
                continue
            if op in UNARY:
                if op == "Clip" and any(gr.array(i) is None or gr.array(i).size != 1 for i in cins[1:] if i):
                    return fail(f"Clip node '{c.name}' has bounds that are not constants")
            elif op in BINARY:
                joins.append((c, t))
            elif op == "BatchNormalization" and lay[0] == "nc" and cins[0] == t:
                if any(i not in gr.inits for i in cins[1:5]):
                    return fail(f"BatchNormalization node '{c.name}' has computed parameters")
                ch.cuts.update({i: (0, 1) for i in cins[1:5]})
                ch.norms.append(tuple(cins[1:5]))
            elif op in POOLS and lay[0] == "nc" and cins[0] == t:
                if len(c.output) > 1 and c.output[1]:
                    return fail(f"{op} node '{c.name}' returns indices")
            elif op in ("Flatten", "Reshape", "Squeeze") and lay[0] == "nc" and cins[0] == t:
                block, why = _flatten_block(gr, c, t, lay, ch)
                if why:
                    return fail(why)
                out = ("last", block)
            else:
                return fail(f"{op} node '{c.name}' reads its output (channel pruning passes only {PASSES})")
            if len(c.output) != 1 and op not in POOLS and op != "Dropout":
                return fail(f"{op} node '{c.name}' has several outputs")
            tracked[c.output[0]] = out
            queue.append(c.output[0])
    for c, t in joins:
        for i in c.input:
            if not i or i == t:
                continue
            if i in tracked:
                if tracked[i] != tracked[t]:
                    return fail(f"{c.op_type} node '{c.name}' joins two layouts of its channels")
                continue
            why = _const_cut(gr, ch, i, tracked[t], c)
            if why:
                return fail(why)
    if not ch.consumers:
        return fail("no weight layer reads its output channels")
    for name in ch.cuts:
        if gr.uses.get(name, 0) > 1:
            return fail(f"its tensor '{name}' is shared by {gr.uses[name]} nodes")
    return ch


def plan(model) -> tuple[list[Chain], _Graph]:
    """Every Conv/Gemm/MatMul with a constant weight, traced: a chain to prune, or the reason it stays whole."""
    from effbench.variants.packed import name_nodes, weight_nodes
    name_nodes(model)
    gr = _Graph(model)
    chains = []
    for node, wname, axis in weight_nodes(model):
        if node.op_type == "MatMul" and list(node.input).index(wname) != 1:
            continue
        chains.append(_trace(gr, node, wname, axis))
    # two chains that cut one tensor on one axis cannot both be applied (never seen in an exported graph)
    owners: dict[tuple[str, int], str] = {}
    for ch in chains:
        if ch.reason:
            continue
        for name, (axis, _) in ch.cuts.items():
            if (name, axis) in owners:
                ch.reason = f"its tensor '{name}' is also cut by the chain of '{owners[(name, axis)]}'"
                break
            owners[(name, axis)] = ch.producer
    return chains, gr


def choose(chains: list[Chain], gr: _Graph, amount: float, norm: str, round_to: int = 1) -> None:
    """Each chain's kept channels: the largest by the L1 or L2 norm of the producer's weights, in order;
    their count rounded up to a multiple of `round_to` (at most all of them)."""
    for ch in chains:
        if ch.reason:
            continue
        w = np.moveaxis(gr.array(ch.weight), ch.out_axis, 0).reshape(ch.channels, -1).astype(np.float64)
        score = np.abs(w).sum(1) if norm == "l1" else np.sqrt((w * w).sum(1))
        n_keep = max(1, ch.channels - int(round(amount * ch.channels)))
        n_keep = min(ch.channels, -(-n_keep // round_to) * round_to)
        ch.keep = sorted(int(i) for i in np.argsort(-score, kind="stable")[:n_keep])


def apply_onnx(model, chains: list[Chain], gr: _Graph) -> None:
    """Cut every planned chain out of the graph, in place."""
    from onnx import helper
    arrays: dict[str, np.ndarray] = {}
    for ch in chains:
        if ch.reason or ch.keep is None:
            continue
        for name, (axis, block) in ch.cuts.items():
            a = arrays.get(name, gr.array(name))
            arrays[name] = np.take(a, expand(ch.keep, block), axis=axis)
        for name, (index, block) in ch.reshapes.items():
            a = arrays.get(name, gr.array(name)).copy()
            a[index] = len(ch.keep) * block
            arrays[name] = a
        for node in model.graph.node:
            if node.name in ch.depthwise:
                for a in node.attribute:
                    if a.name == "group":
                        a.CopyFrom(helper.make_attribute("group", len(ch.keep)))
    for name, a in arrays.items():
        gr.inits[name].CopyFrom(gr.numpy_helper.from_array(np.ascontiguousarray(a), name))
    del model.graph.value_info[:]  # shapes changed along the chains: the runtime infers them again


# ---------------------------------------------------------------------------------------------- torch
def _scope(gr: _Graph, init: str) -> str | None:
    """The torch module path the dynamo exporter recorded on the node that reads `init`."""
    import ast
    for node in gr.consumers.get(init, []):
        for p in node.metadata_props:
            if p.key == "pkg.torch.onnx.name_scopes":
                try:
                    scopes = ast.literal_eval(p.value)
                except (ValueError, SyntaxError):
                    continue
                if len(scopes) >= 2:
                    return scopes[-2]
    return None


def _find(sd_np: dict[str, np.ndarray], a: np.ndarray, name: str, scope: str | None) -> tuple[str, bool] | str:
    """(state-dict key, transposed) of the tensor equal to ONNX tensor `a`, or the reason it is not found."""
    hits = []
    for key, t in sd_np.items():
        if t.size != a.size:
            continue
        if t.shape == a.shape and np.array_equal(t, a):
            hits.append((key, False))
        elif t.ndim == 2 and a.ndim == 2 and t.shape == a.shape[::-1] and np.array_equal(t.T, a):
            hits.append((key, True))
    if not hits:
        return f"no tensor of the torch module equals the graph's '{name}'"
    for h in hits:
        if h[0] == name:
            return h
    if len(hits) > 1 and scope:
        hits = [h for h in hits if h[0].startswith(scope + ".")] or hits
    if len(hits) > 1:
        return f"{len(hits)} tensors of the torch module equal the graph's '{name}' ({', '.join(h[0] for h in hits[:3])})"
    return hits[0]


def map_torch(chains: list[Chain], gr: _Graph, module) -> None:
    """Give each chain its cuts as torch state-dict keys; a chain whose tensors the module does not hold
    (or holds in a layer type this rewrite cannot resize) gets its reason and is left whole."""
    from torch import nn
    sd = module.state_dict()
    sd_np = {k: v.detach().cpu().numpy() for k, v in sd.items() if v.is_floating_point()}
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    norms = [n for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    roles = ("weight", "bias", "running_mean", "running_var")
    for ch in chains:
        if ch.reason:
            continue
        found_norms: dict[str, str] = {}
        for names in ch.norms:  # a BatchNormalization's four tensors are one torch layer's: matched together
            hits = [n for n in norms if all(f"{n}.{r}" in sd_np and sd_np[f"{n}.{r}"].shape == gr.array(i).shape
                                            and np.array_equal(sd_np[f"{n}.{r}"], gr.array(i))
                                            for r, i in zip(roles, names))]
            scope = _scope(gr, names[0])
            if len(hits) > 1 and scope:
                hits = [n for n in hits if n == scope] or hits
            if len(hits) != 1:
                ch.reason = (f"{len(hits)} BatchNorm layers of the torch module match the graph's normalisation "
                             f"of '{names[0]}'")
                break
            found_norms.update({i: f"{hits[0]}.{r}" for r, i in zip(roles, names)})
        for name, (axis, block) in ch.cuts.items():
            if ch.reason:
                break
            if name in found_norms:
                ch.torch_cuts[found_norms[name]] = (axis, block)
                ch.torch_keys[name] = found_norms[name]
                continue
            found = _find(sd_np, gr.array(name), name, _scope(gr, name))
            if isinstance(found, str):
                ch.reason = found
                break
            key, transposed = found
            owner = key.rpartition(".")[0]
            if not isinstance(module.get_submodule(owner) if owner else module, kinds):
                ch.reason = f"the torch tensor '{key}' belongs to a {type(module.get_submodule(owner)).__name__}"
                break
            ch.torch_cuts[key] = ((1 - axis) if transposed else axis, block)
            ch.torch_keys[name] = key
        if not ch.reason:
            owners = {k.rpartition(".")[0] for k in ch.torch_cuts}
            for o in owners:  # a resized module's other per-channel tensors must be cut too
                m = module.get_submodule(o)
                if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and f"{o}.weight" in ch.torch_cuts \
                        and ch.torch_cuts[f"{o}.weight"][0] == 0 and m.bias is not None and f"{o}.bias" not in ch.torch_cuts:
                    ch.reason = f"the bias of torch layer '{o}' is not in the graph's chain"


def apply_torch(module, chains: list[Chain]) -> dict[str, dict]:
    """Cut the planned tensors out of the module's state and resize its layers, in place; returns the new
    sizes by layer (what `resize_modules` needs to rebuild the pruned module's skeleton)."""
    import torch
    from torch import nn
    sd = {k: v.detach().clone() for k, v in module.state_dict().items()}
    touched: set[str] = set()
    for ch in chains:
        if ch.reason or ch.keep is None:
            continue
        for key, (axis, block) in ch.torch_cuts.items():
            sd[key] = sd[key].index_select(axis, torch.from_numpy(expand(ch.keep, block))).contiguous()
            touched.add(key.rpartition(".")[0])
    resized: dict[str, dict] = {}
    for o in sorted(touched):
        m = module.get_submodule(o)
        w = sd.get(f"{o}.weight")
        if isinstance(m, nn.Linear):
            resized[o] = {"kind": "linear", "in": int(w.shape[1]), "out": int(w.shape[0])}
        elif isinstance(m, nn.modules.conv._ConvNd):
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            groups = int(w.shape[0]) if depthwise else m.groups
            resized[o] = {"kind": "conv", "in": int(w.shape[1]) * groups, "out": int(w.shape[0]), "groups": groups}
        else:
            n = sd[f"{o}.running_mean"].shape[0] if w is None else w.shape[0]
            resized[o] = {"kind": "bn", "features": int(n)}
    from effbench.variants.pruned import resize_modules
    resize_modules(module, resized)
    module.load_state_dict(sd, strict=True)
    return resized


# ------------------------------------------------------------------------------------------ the variant
def _params(model) -> int:
    import onnx
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def _section(prune: dict, chains: list[Chain], names: dict[str, str], params_fp32: int, params: int) -> dict:
    cut = [ch for ch in chains if ch.keep is not None and not ch.reason]
    whole = [ch for ch in chains if ch.reason]
    return {"method": "channel", "amount": prune["amount"], "norm": prune["norm"], "round_to": prune.get("round_to", 1),
            "layers": {names.get(ch.producer, ch.producer): {"channels": ch.channels, "kept": len(ch.keep)}
                       for ch in cut},
            "left_whole": {names.get(ch.producer, ch.producer): ch.reason for ch in whole[:12]},
            "left_whole_count": len(whole), "params_fp32": int(params_fp32), "params": int(params),
            "params_removed": round(1 - params / params_fp32, 4) if params_fp32 else None,
            "fine_tuned": False}


def _max_diff(artifact, graph: str, module) -> float:
    """The largest difference between the pruned graph's and the pruned module's first output on seeded inputs."""
    import onnxruntime as ort
    import torch
    feeds = artifact.feeds(2, None, seed=0)
    sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)[0]
    with torch.inference_mode():
        got = module(*[torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()])
    got = (got[0] if isinstance(got, (tuple, list)) else got).float().numpy()
    return float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max())))


def prune_channels(artifact, prune: dict, folder):
    """The channel-pruned model (variants.prune.Pruned): the graph rewritten and, for torch sources, the
    module cut the same way and checked against it."""
    import dataclasses

    import onnx

    from effbench.models.sources import sha256_file
    from effbench.variants import first_line, torch_module
    from effbench.variants.pruned import NO_TORCH, Pruned, torch_artifact
    model = onnx.load(artifact.onnx_path)
    params_fp32 = _params(model)
    chains, gr = plan(model)
    module, torch_reason = None, NO_TORCH
    if artifact.torch_factory:
        try:
            module = torch_module(artifact)
            map_torch(chains, gr, module)  # a chain the module does not follow stays whole on both sides
        except Exception as e:
            module, torch_reason = None, f"matching the graph's layers to the torch module failed: {first_line(e)}"
    choose(chains, gr, prune["amount"], prune["norm"], prune.get("round_to", 1))
    if all(ch.reason for ch in chains):
        why = "; ".join(sorted({f"{ch.producer}: {ch.reason}" for ch in chains})[:3]) or "it has no weight layer"
        reason = f"no layer of the graph can be channel-pruned ({why})"
        return Pruned(artifact, None, reason, None, reason if module is not None else torch_reason)
    apply_onnx(model, chains, gr)
    path = folder / "pruned-fp32.onnx"
    onnx.save(model, str(path))
    art = dataclasses.replace(artifact, onnx_path=str(path), onnx_sha256=sha256_file(path))
    out = Pruned(art, _section(prune, chains, {}, params_fp32, _params(model)), None, None, torch_reason)
    if module is not None:
        try:
            before = sum(p.numel() for p in module.parameters())
            resized = apply_torch(module, chains)
            diff = _max_diff(art, str(path), module)
            if diff > 1e-4:
                raise ValueError(f"the pruned module's output differs from the pruned graph's by {diff:.2g} "
                                 "(relative): its forward does not follow the graph")
            names = {ch.producer: ch.torch_keys[ch.weight].rpartition(".")[0] for ch in chains
                     if ch.weight in ch.torch_keys}
            out.torch = _section(prune, chains, names, before, sum(p.numel() for p in module.parameters()))
            out.torch["checked_against_graph"] = {"max_relative_diff": diff}
            out.artifact = torch_artifact(art, module, folder, resized, prune)
            out.torch_reason = None
        except Exception as e:
            out.torch_reason = f"channel-pruning the torch module failed: {type(e).__name__}: {first_line(e)}"
    return out
