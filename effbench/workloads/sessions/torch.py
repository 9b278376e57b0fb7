"""torch: a decode loop effbench owns over LlamaForCausalLM and its DynamicCache (`generate()` hides too much).

The precisions as torch runs them (effbench.variants.generative): a float model in its dtype; int8 as
torch's dynamic quantization of every nn.Linear; int4 weight-only through aten's int4 CPU kernel.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np

from effbench.models.llm import offline
from effbench.runners.torch import TorchRunner
from effbench.variants.generative import TORCH_DYNAMIC_INT8, TORCH_INT4_WEIGHT_ONLY
from effbench.workloads.session import GenerationSession, Kernel, TokenClock, Unsupported, register

TORCH_INT4_GROUP = 32


@register
class TorchSession(GenerationSession):
    """LlamaForCausalLM with its DynamicCache: one forward for the prefill, then one token per forward.

    fp32/bf16/fp16: the model in that dtype. int8: torch's dynamic quantization of every nn.Linear
    (int8 weights per channel, activations quantized per tensor at run time: weight-and-activation).
    int4: weight-only int4, asymmetric per group of 32, bf16 activations (the model in bf16), through
    aten's `_weight_int4pack_mm_for_cpu` (the CPU kernel torchao's Int4CPULayout and gpt-fast call).
    """

    runtime = TorchRunner.name
    modules = (TorchRunner.runtime_module, "transformers")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        import torch
        from transformers import LlamaForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch.set_num_threads(self.threads)   # process-wide: the worker runs one runtime's threads at a time
        spec = self.spec
        with offline():
            model = LlamaForCausalLM.from_pretrained(self.model.hf_dir, dtype=getattr(torch, spec.torch_dtype),
                                                     local_files_only=True)
        if spec.torch_mode == TORCH_DYNAMIC_INT8:
            model = _torch_dynamic_int8(model)
            self.kernel = Kernel(self.runtime, spec.name, weights="int8 per output channel (symmetric)",
                                 quantization="weight-and-activation",
                                 compute="int8 x int8 GEMM (fbgemm/onednn), activations quantized per tensor at run time",
                                 kv_cache="float32", kv_bytes_per_element=4,
                                 detail={"api": "torch.ao.quantization.quantize_dynamic", "layers": "every nn.Linear incl. lm_head",
                                         "engine": torch.backends.quantized.engine},
                                 compute_precision=spec.torch_compute)
        elif spec.torch_mode == TORCH_INT4_WEIGHT_ONLY:
            # bf16 activations, as torchao's Int4CPULayout: with fp32 activations the same op takes a
            # reference path, 29x slower at one token and 76x at 64 here (576x1536, one thread)
            model = model.to(torch.bfloat16)
            n = _torch_int4_weight_only(model, TORCH_INT4_GROUP)
            self.kernel = Kernel(self.runtime, spec.name, weights=f"int4 asymmetric, group {TORCH_INT4_GROUP} along K",
                                 quantization="weight-only",
                                 compute="bf16 activations x int4 weights (dequantised to bf16 in the kernel)",
                                 kv_cache="bfloat16", kv_bytes_per_element=2,
                                 detail={"api": "torch.ops.aten._weight_int4pack_mm_for_cpu", "layers_quantized": n,
                                         "layers": "every nn.Linear incl. lm_head"},
                                 compute_precision=spec.torch_compute)
        else:
            self.kernel = Kernel(self.runtime, spec.name, weights=spec.name, quantization="none", compute=spec.name,
                                 kv_cache=spec.name, kv_bytes_per_element=spec.element_bytes or 4,
                                 detail={"cpu_capability": torch.backends.cpu.get_cpu_capability()},
                                 compute_precision=spec.torch_compute)
        self._model = model.eval()
        # transformers 5.x renamed forward's `past_key_values` to `cache` (the old name warns)
        self._cache_kw = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
        self.weight_bytes, self.decode_weight_bytes = _torch_weight_bytes(model)
        self.info.update({self.runtime: torch.__version__, "torch_threads": torch.get_num_threads()})

    def _decode(self, prompt_ids: Sequence[int], new_tokens: int, clock: TokenClock) -> tuple[int | None, str]:
        import torch
        from transformers import DynamicCache

        model = self._model
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            kw = {self._cache_kw: cache}
            clock.start()
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **kw)
            tok = int(out.logits[0, -1].argmax())
            clock.token(tok)
            for _ in range(new_tokens - 1):
                out = model(input_ids=torch.tensor([[tok]], dtype=torch.long), use_cache=True, **kw)
                tok = int(out.logits[0, -1].argmax())
                clock.token(tok)
        kv = _cache_bytes(cache)
        return kv, "DynamicCache key/value tensors' bytes" if kv is not None else "not visible"

    batching = None    # prompts of one length stack into [batch, prompt]: no padding, no attention mask

    def _decode_batch(self, prompts: list[list[int]], new_tokens: int,
                      clocks: list[TokenClock]) -> tuple[int | None, str]:
        import time

        import torch
        from transformers import DynamicCache

        model = self._model
        ids = torch.tensor(prompts, dtype=torch.long)
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            kw = {self._cache_kw: cache}
            t0 = time.perf_counter_ns()
            for c in clocks:
                c.start_ns = t0
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **kw)
            toks = out.logits[:, -1].argmax(-1)
            for c, t in zip(clocks, toks.tolist()):
                c.token(int(t))
            for _ in range(new_tokens - 1):
                out = model(input_ids=toks.view(-1, 1), use_cache=True, **kw)
                toks = out.logits[:, -1].argmax(-1)
                for c, t in zip(clocks, toks.tolist()):
                    c.token(int(t))
        kv = _cache_bytes(cache)
        return kv, "DynamicCache key/value tensors' bytes" if kv is not None else "not visible"

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        import torch
        with torch.inference_mode():
            out = self._model(input_ids=torch.tensor([list(ids)], dtype=torch.long), use_cache=False)
        return out.logits[0].float().numpy()


def _torch_dynamic_int8(model):
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    model = model.float()
    # A tied lm_head shares its weight with the embedding: quantize_dynamic makes the head its own copy.
    return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def _int4_linear_class():
    """Made on first use, so importing this module does not import torch."""
    import torch

    class Int4WeightOnlyLinear(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear, group: int) -> None:
            super().__init__()
            w = linear.weight.detach().float()
            n, k = w.shape
            wg = w.reshape(n, k // group, group)
            hi, lo = wg.amax(-1, keepdim=True), wg.amin(-1, keepdim=True)
            scale = ((hi - lo) / 15).clamp(min=1e-8)
            q = ((wg - lo) / scale).round().clamp(0, 15)
            zero = lo + scale * 8     # the kernel computes (q - 8) * scale + zero
            self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(q.reshape(n, k).to(torch.int32), 1))
            dtype = linear.weight.dtype        # activations, scales and zeros share it (bf16 or fp32)
            self.register_buffer("scales_and_zeros",
                                 torch.stack([scale.squeeze(-1), zero.squeeze(-1)], -1).transpose(0, 1).contiguous().to(dtype))
            self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)
            self.group, self.out_features, self.in_features = group, n, k

        def forward(self, x):
            shape = x.shape
            y = torch._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).to(self.scales_and_zeros.dtype).contiguous(),
                                                  self.packed, self.group, self.scales_and_zeros)
            y = y.reshape(*shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias

    return Int4WeightOnlyLinear


def _torch_int4_weight_only(model, group: int) -> int:
    import torch

    cls = _int4_linear_class()
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    bad = [f"{name} ({m.out_features}x{m.in_features})" for name, m in targets
           if m.in_features % group or m.out_features % 16]
    if bad:
        raise Unsupported(f"torch int4 (_weight_int4pack_mm_for_cpu) needs in_features % {group} == 0 and "
                          f"out_features % 16 == 0; not so for {', '.join(bad[:3])}")
    for name, m in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, cls(m, group))
    return len(targets)


def _torch_weight_bytes(model) -> tuple[int, int]:
    """(all weight bytes as loaded, bytes one decode step reads): storages counted once; an embedding
    table that is not also the LM head is read one row per token."""
    import torch

    seen: dict[int, int] = {}
    embed_ptr, embed_row = None, 0
    for name, t in _flat_state(model.state_dict()):
        if not isinstance(t, torch.Tensor):
            continue
        ptr = t.untyped_storage().data_ptr() if not t.is_quantized else id(t)
        nbytes = t.numel() * t.element_size()
        seen[ptr] = max(seen.get(ptr, 0), nbytes)
        if name.endswith("embed_tokens.weight"):
            embed_ptr, embed_row = ptr, t.shape[1] * t.element_size()
    total = sum(seen.values())
    head = getattr(model, "lm_head", None)
    head_w = getattr(head, "weight", None)
    tied = (isinstance(head_w, torch.Tensor) and embed_ptr is not None and not head_w.is_quantized
            and head_w.untyped_storage().data_ptr() == embed_ptr)
    decode = total if tied or embed_ptr is None else total - seen[embed_ptr] + embed_row
    return total, decode


def _flat_state(state: dict):
    for k, v in state.items():
        if isinstance(v, (tuple, list)):       # dynamic-quantized Linear packs (weight, bias)
            for i, x in enumerate(v):
                yield f"{k}.{i}", x
        else:
            yield k, v


def _cache_bytes(cache) -> int | None:
    layers = getattr(cache, "layers", None)
    tensors = []
    if layers is not None:
        for layer in layers:
            tensors += [getattr(layer, "keys", None), getattr(layer, "values", None)]
    else:  # transformers before 4.56 kept lists
        tensors = list(getattr(cache, "key_cache", [])) + list(getattr(cache, "value_cache", []))
    tensors = [t for t in tensors if t is not None and hasattr(t, "element_size")]
    return sum(t.numel() * t.element_size() for t in tensors) if tensors else None


