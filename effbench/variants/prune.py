"""Pruning (`prune:` on a precision): the FP32 model is pruned first, then the precision builds from it.

Methods: `magnitude` (the smallest |w| of each Conv/Gemm/MatMul weight set to zero, per layer or globally;
zeros in place, so dense kernels still do every MAC), `channel` (whole output channels removed:
variants.channels) and `2:4` (two zeros in every four weights along the input; torch's sparse kernels for
it are CUDA-only). The pruned model becomes a `ModelArtifact` of its own (its ONNX graph, and a torch
factory that rebuilds the pruned module), so every precision builds from it unchanged. Post-training only:
nothing is fine-tuned after pruning.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from effbench.models.sources import ModelArtifact, sha256_file
from effbench.variants import Variant, first_line, precision_spec, torch_module

# pruned_module: the torch factory path `effbench.variants.prune:pruned_module` of variants cached before the
# move to variants.pruned
from effbench.variants.pruned import NO_TORCH, Pruned, pruned_module, torch_artifact  # noqa: F401

DENSE_KERNELS = ("the dense kernels ran: no CPU runtime here skips zero weights, so a speedup needs a sparse "
                 "runtime (latency is measured as it is)")


class Nothing(Exception):
    """Nothing to prune on this side: the variant says why instead of failing."""


# ------------------------------------------------------------------------------------------- masks
def magnitude_masks(arrays: dict[str, np.ndarray], amount: float, scope: str) -> dict[str, np.ndarray]:
    """name -> bool mask of the weights kept: the round(amount x n) smallest |w| zeroed per tensor
    ("layer") or over all of them together ("global")."""
    if scope == "layer":
        out = {}
        for name, a in arrays.items():
            k = int(round(amount * a.size))
            keep = np.ones(a.size, bool)
            if k:
                keep[np.argpartition(np.abs(a).reshape(-1), k - 1)[:k]] = False
            out[name] = keep.reshape(a.shape)
        return out
    flat = np.concatenate([np.abs(a).reshape(-1) for a in arrays.values()])
    k = int(round(amount * flat.size))
    keep = np.ones(flat.size, bool)
    if k:
        keep[np.argpartition(flat, k - 1)[:k]] = False
    out, at = {}, 0
    for name, a in arrays.items():
        out[name] = keep[at:at + a.size].reshape(a.shape)
        at += a.size
    return out


def two_four_mask(a: np.ndarray, reduce_axis: int) -> np.ndarray | None:
    """The 2:4 mask (the two largest |w| of every four consecutive weights along the reduction axis kept),
    or None when that axis is not a multiple of 4."""
    if a.shape[reduce_axis] % 4:
        return None
    moved = np.moveaxis(np.abs(a), reduce_axis, -1)
    groups = moved.reshape(-1, 4)
    keep = np.zeros(groups.shape, bool)
    np.put_along_axis(keep, np.argsort(-groups, axis=1, kind="stable")[:, :2], True, axis=1)
    return np.moveaxis(keep.reshape(moved.shape), -1, reduce_axis)


def sparsity_section(prune: dict, layers: dict[str, tuple[int, int]], all_params: int, note: str) -> dict:
    """The record's `variant.sparsity`: zeros per pruned layer and overall, over every parameter too."""
    zeros = sum(z for z, _ in layers.values())
    total = sum(n for _, n in layers.values())
    return {"method": prune["method"], **{k: v for k, v in prune.items() if k != "method"},
            "layers": {name: round(z / n, 4) for name, (z, n) in layers.items() if n},
            "overall": round(zeros / total, 4) if total else None, "pruned_weights": int(total), "zeros": int(zeros),
            "all_params": round(zeros / all_params, 4) if all_params else None, "params": int(all_params),
            "nonzero_params": int(all_params - zeros), "sparse_kernels": False, "kernels": note}


# -------------------------------------------------------------------------------------------- ONNX
def _onnx_zeros(src: str, prune: dict, out: Path) -> dict:
    import onnx
    from onnx import numpy_helper

    from effbench.variants.packed import name_nodes, weight_nodes
    model = onnx.load(src)
    name_nodes(model)
    inits = {t.name: t for t in model.graph.initializer}
    layers: dict[str, tuple[str, int]] = {}   # weight -> (node name, reduction axis)
    for node, wname, out_axis in weight_nodes(model):
        if prune["method"] == "2:4" and node.op_type == "Conv":
            continue  # torch's 2:4 kernels take matrix products (Linear) only
        if wname not in layers:
            layers[wname] = (node.name, 1 if node.op_type == "Conv" else 1 - out_axis)
    if not layers:
        raise Nothing("the graph has no Conv/Gemm/MatMul with a constant weight to prune")
    arrays = {w: numpy_helper.to_array(inits[w]) for w in layers}
    if prune["method"] == "2:4":
        masks, skipped = {}, []
        for w, a in arrays.items():
            m = two_four_mask(a, layers[w][1])
            if m is None:
                skipped.append(layers[w][0])
            else:
                masks[w] = m
        if not masks:
            raise Nothing("no weight of the graph has an input dimension that is a multiple of 4")
    else:
        masks, skipped = magnitude_masks(arrays, prune["amount"], prune["scope"]), []
    stats = {}
    for w, keep in masks.items():
        a = np.where(keep, arrays[w], 0).astype(arrays[w].dtype)
        inits[w].CopyFrom(numpy_helper.from_array(a, w))
        stats[layers[w][0]] = (int(a.size - np.count_nonzero(a)), int(a.size))
    onnx.save(model, str(out))
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    section = sparsity_section(prune, stats, params, DENSE_KERNELS)
    if skipped:
        section["left_dense"] = skipped
    return section


# ------------------------------------------------------------------------------------------- torch
def _torch_zeros(module, prune: dict) -> tuple[dict, list[str]]:
    """Zero the module's Linear/Conv weights in place (torch.nn.utils.prune, then made permanent); returns the
    sparsity section and, for 2:4, the Linear layers torch's semi-structured kernels would take."""
    import torch
    from torch import nn
    from torch.nn.utils import prune as tprune
    kinds = (nn.Linear,) if prune["method"] == "2:4" else (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    layers = [(n, m) for n, m in module.named_modules() if isinstance(m, kinds)]
    if not layers:
        raise Nothing("the module has no Linear or Conv layer to prune")
    semi: list[str] = []
    with torch.no_grad():
        if prune["method"] == "magnitude" and prune["scope"] == "global":
            tprune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=tprune.L1Unstructured,
                                       amount=prune["amount"])
        for name, m in layers:
            if prune["method"] == "magnitude" and prune["scope"] == "layer":
                tprune.l1_unstructured(m, "weight", amount=prune["amount"])
            elif prune["method"] == "2:4":
                mask = two_four_mask(m.weight.detach().cpu().numpy(), 1)
                if mask is None:
                    continue
                tprune.custom_from_mask(m, "weight", torch.from_numpy(mask))
                semi.append(name)
            if tprune.is_pruned(m):
                tprune.remove(m, "weight")
    if prune["method"] == "2:4" and not semi:
        raise Nothing("no Linear layer of the module has an input size that is a multiple of 4")
    stats = {n: (int(m.weight.numel() - torch.count_nonzero(m.weight)), int(m.weight.numel())) for n, m in layers
             if prune["method"] != "2:4" or n in semi}
    params = sum(p.numel() for p in module.parameters())
    return sparsity_section(prune, stats, params, DENSE_KERNELS), semi


def prune_model(artifact: ModelArtifact, prune: dict, folder: Path) -> Pruned:
    if prune["method"] == "channel":
        from effbench.variants.channels import prune_channels
        return prune_channels(artifact, prune, folder)
    art, out = artifact, Pruned(artifact, None, None, None, NO_TORCH)
    path = folder / "pruned-fp32.onnx"
    try:
        out.onnx = _onnx_zeros(artifact.onnx_path, prune, path)
        art = dataclasses.replace(art, onnx_path=str(path), onnx_sha256=sha256_file(path))
    except Nothing as e:
        out.onnx_reason = str(e)
    except Exception as e:
        out.onnx_reason = f"pruning the ONNX graph failed: {type(e).__name__}: {first_line(e)}"
    if artifact.torch_factory:
        try:
            module = torch_module(artifact)
            out.torch, out.semi_structured = _torch_zeros(module, prune)
            art = torch_artifact(art, module, folder, {}, prune)
            out.torch_reason = None
        except Nothing as e:
            out.torch_reason = str(e)
        except Exception as e:
            out.torch_reason = f"pruning the torch module failed: {type(e).__name__}: {first_line(e)}"
    out.artifact = art
    return out


# ---------------------------------------------------------------------------------- the variant
def build_pruned(build, artifact: ModelArtifact, *, label: str, precision: str, method, options: dict,
                 prune: dict, folder: Path, calibration=None) -> Variant:
    """Prune, then run the precision's own builder on the pruned model, then say on each side what
    pruning did (the record's `variant.sparsity` and `variant.pruning`)."""
    pruned = prune_model(artifact, prune, folder)
    if pruned.onnx is None and pruned.torch is None:
        return Variant(model_id=artifact.model_id, label=label, precision=precision, method=method,
                       onnx_reason=pruned.onnx_reason, torch_reason=pruned.torch_reason)
    variant = build(pruned.artifact, label=label, method=method, options=options, folder=folder,
                    calibration=calibration)
    from effbench.variants.sparsity import finish
    return finish(variant, artifact, pruned, prune, precision_spec(precision).weight_bits >= 16)


