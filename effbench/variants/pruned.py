"""A pruned FP32 model, shared by the pruning methods (`prune`, `channels`, `sparsity`): what pruning did on
each side, the torch factory that rebuilds the pruned module (layers resized, pruned weights loaded), and
torch's 2:4 semi-structured kernels.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effbench.models.sources import ModelArtifact
from effbench.variants import first_line, save_torch_state

PRUNED_FACTORY = "effbench.variants.pruned:pruned_module"
NO_TORCH = "an onnx: model has no torch module to run"


@dataclass
class Pruned:
    """The pruned FP32 model and what pruning did on each side (None: that side could not be pruned)."""

    artifact: ModelArtifact
    onnx: dict[str, Any] | None
    onnx_reason: str | None
    torch: dict[str, Any] | None
    torch_reason: str | None
    semi_structured: list[str] | None = None   # 2:4: the torch Linear layers the sparse kernels would take


def pruned_module(factory: str, args: list, state_path: str, resized: dict):
    """The torch factory of a pruned model: the original module, its layers resized as pruning left them,
    and the pruned weights (skipped on the meta device: the runner's skeleton loads a variant's own)."""
    import torch

    from effbench.models.sources import import_factory
    from effbench.variants import TORCH_STATE_LOADERS
    module = import_factory(factory, None)(*args)
    resize_modules(module, resized)
    if any(t.is_meta for t in list(module.parameters()) + list(module.buffers())):
        return module.eval()
    saved = TORCH_STATE_LOADERS["load"](state_path)
    module.load_state_dict(saved["state"], strict=True)
    for name, value in saved.get("extra_buffers", {}).items():
        owner, _, leaf = name.rpartition(".")
        (module.get_submodule(owner) if owner else module)._buffers[leaf] = value
    return module.eval() if isinstance(module, torch.nn.Module) else module


def torch_artifact(artifact: ModelArtifact, module, folder: Path, resized: dict, prune: dict) -> ModelArtifact:
    """The artifact whose torch factory rebuilds `module` (pruned) from the original factory."""
    path = save_torch_state(module, folder / "pruned-fp32.pt", {"prune": prune, "resized": resized})
    return dataclasses.replace(artifact, torch_factory=PRUNED_FACTORY,
                               torch_factory_args=(artifact.torch_factory, list(artifact.torch_factory_args),
                                                   str(path), resized))


def resize_modules(module, resized: dict[str, dict]) -> None:
    """Replace each listed layer by one of its own type with the new sizes (on the layer's device: the
    torch runner's skeleton is built on the meta device)."""
    from torch import nn
    for name, spec in resized.items():
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        old = getattr(parent, child)
        p = next(iter(old.parameters()), None)
        p = next(iter(old.buffers()), None) if p is None else p
        kw = {"device": p.device, "dtype": p.dtype} if p is not None else {}
        if spec["kind"] == "linear":
            new = nn.Linear(spec["in"], spec["out"], bias=old.bias is not None, **kw)
        elif spec["kind"] == "conv":
            new = type(old)(spec["in"], spec["out"], old.kernel_size, stride=old.stride, padding=old.padding,
                            dilation=old.dilation, groups=spec["groups"], bias=old.bias is not None,
                            padding_mode=old.padding_mode, **kw)
        else:
            kw.pop("dtype", None)
            new = type(old)(spec["features"], eps=old.eps, momentum=old.momentum, affine=old.affine,
                            track_running_stats=old.track_running_stats, **kw)
        new.train(old.training)
        setattr(parent, child, new)


def semi_structured(module, names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Swap the listed Linear layers' weights for torch's 2:4 sparse tensors (CUDA only): (layers swapped,
    layers left dense with torch's reason)."""
    import torch
    from torch.sparse import to_sparse_semi_structured
    done, dense = [], {}
    for name in names:
        lin = module.get_submodule(name)
        try:
            lin.weight = torch.nn.Parameter(to_sparse_semi_structured(lin.weight.detach()), requires_grad=False)
            done.append(name)
        except Exception as e:  # shape or dtype outside the kernels' constraints
            dense[name] = first_line(e)
    return done, dense


def semi_structured_cpu_reason() -> str:
    """torch's own words for 2:4 sparse weights on the CPU."""
    import torch
    try:
        from torch.sparse import to_sparse_semi_structured
        w = torch.zeros(64, 64)
        w[:, ::2] = 1.0
        to_sparse_semi_structured(w)
    except Exception as e:
        return f"torch {torch.__version__} runs 2:4 semi-structured sparsity on CUDA only: {first_line(e)}"
    return f"torch {torch.__version__} converted a CPU tensor to 2:4 but effbench runs its kernels on cuda only"
