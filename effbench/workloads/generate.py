"""One generative trial = one request: fixed prompt token ids, a forced output length (greedy, EOS
ignored, so every trial does the same work), a fresh KV cache, and a perf_counter_ns stamp per token.

A session per runtime (torch: a decode loop we own over DynamicCache; onnxruntime-genai: its builder,
offline, and og.Generator; llamacpp: llama-cpp-python on GGUF) loads one model at one precision with
pinned threads. A precision a runtime cannot run raises `Unsupported` with the runtime's reason.
"""
from __future__ import annotations

import contextlib
import ctypes
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from effbench.measure.generation import Quality, RequestTiming, held_text, quality_vs_reference
from effbench.models.llm import LlmModel, default_cache_dir, offline, write_gguf

try:  # the runner protocol's exception, so one `except Unsupported` serves every runtime
    from effbench.runners.base import Unsupported
except ImportError:  # before the layout by stage
    from effbench.runners import Unsupported

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
SESSIONS: dict[str, type[GenerationSession]] = {}


def register(cls):
    SESSIONS[cls.runtime] = cls
    return cls


@dataclass(frozen=True)
class Kernel:
    """What a precision really runs as on one runtime: stored weights, whether activations are
    quantized too, the arithmetic, and the KV cache's element type."""

    runtime: str
    precision: str
    weights: str
    quantization: str          # none | weight-only | weight-and-activation
    compute: str
    kv_cache: str
    kv_bytes_per_element: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TokenTrace:
    """One request as it ran: when it went in, when each output token was ready, what came out."""

    start_ns: int
    token_ns: tuple[int, ...]
    output_ids: tuple[int, ...]
    prompt_tokens: int
    kv_cache_bytes: int | None         # measured; see kv_measured for how
    kv_measured: str

    def timing(self) -> RequestTiming:
        return RequestTiming(self.start_ns, self.token_ns, self.prompt_tokens)


class GenerationSession:
    """One model at one precision on one runtime, threads pinned. Subclasses fill `kernel` and `info`."""

    runtime: ClassVar[str]
    packages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: LlmModel, precision: str, *, threads: int, cache_dir: Path,
                 max_context: int, options: dict[str, Any]) -> None:
        self.model = model
        self.precision = precision
        self.threads = threads
        self.cache_dir = cache_dir
        self.max_context = max_context
        self.options = options
        self.kernel: Kernel
        self.info: dict[str, Any] = {"threads": threads}
        self.weight_bytes = 0          # weights as loaded
        self.decode_weight_bytes = 0   # what one decode step reads (an untied embedding: one row)

    def generate(self, prompt_ids: Sequence[int], new_tokens: int) -> TokenTrace:
        raise NotImplementedError

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Teacher-forced next-token logits at every position of `ids`, [len(ids), vocab] float32."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _check(self, prompt_ids: Sequence[int], new_tokens: int) -> None:
        if new_tokens < 1 or not prompt_ids:
            raise ValueError("a request needs prompt tokens and at least one new token")
        if len(prompt_ids) + new_tokens > self.max_context:
            raise ValueError(f"prompt {len(prompt_ids)} + new {new_tokens} tokens exceed the session's "
                             f"max_context {self.max_context}")


def open_session(runtime: str, model: LlmModel, precision: str, *, threads: int,
                 cache_dir: str | Path | None = None, max_context: int = 1024,
                 options: dict[str, Any] | None = None) -> GenerationSession:
    if runtime not in SESSIONS:
        raise ValueError(f"unknown generative runtime '{runtime}'; expected one of {sorted(SESSIONS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; expected one of {PRECISIONS}")
    if threads < 1:
        raise ValueError("threads must be at least 1: say how many, decode speed depends on it")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    return SESSIONS[runtime](model, precision, threads=threads, cache_dir=cache, max_context=max_context,
                             options=dict(options or {}))


# ---- prompts and held text, as token ids ----

def _tokenizer(model: LlmModel):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(Path(model.hf_dir) / "tokenizer.json"))


def held_ids(model: LlmModel) -> list[int]:
    """The held prose tokenized with the model's own tokenizer (no special tokens)."""
    return _tokenizer(model).encode(held_text(), add_special_tokens=False).ids


def prompt_ids(model: LlmModel, prompt_tokens: int) -> tuple[int, ...]:
    """A fixed prompt: the first `prompt_tokens` tokens of the held prose. Same ids on every runtime."""
    ids = held_ids(model)
    if prompt_tokens > len(ids):
        raise ValueError(f"the held text has only {len(ids)} tokens")
    return tuple(ids[:prompt_tokens])


def quality_text_ids(model: LlmModel, positions: int) -> tuple[int, ...]:
    """Teacher-forcing text: the last `positions` tokens of the held prose (prompts come from its start)."""
    ids = held_ids(model)
    return tuple(ids[-positions:])


def evaluate_quality(reference: GenerationSession, candidate: GenerationSession, *, positions: int = 256,
                     prompt_tokens: int = 32, new_tokens: int = 32) -> Quality:
    """Teacher-forced agreement and KL against the reference session (FP32) on held text, perplexity for
    real weights only, and the first divergence of greedy continuations of one prompt."""
    model = candidate.model
    ids = quality_text_ids(model, positions)
    prompt = prompt_ids(model, prompt_tokens)
    ref_cont = reference.generate(prompt, new_tokens).output_ids
    cont = candidate.generate(prompt, new_tokens).output_ids
    return quality_vs_reference(reference.logits(ids), candidate.logits(ids), ids, real_weights=model.real_weights,
                                reference=f"{reference.runtime} {reference.precision}: {model.reference}",
                                ref_continuation=ref_cont, continuation=cont)


# ---- torch: a decode loop we own ----

TORCH_INT4_GROUP = 32


@register
class TorchSession(GenerationSession):
    """LlamaForCausalLM with its DynamicCache: one forward for the prefill, then one token per forward.

    fp32/bf16/fp16: the model in that dtype. int8: torch's dynamic quantization of every nn.Linear
    (int8 weights per channel, activations quantized per tensor at run time: weight-and-activation).
    int4: weight-only int4, asymmetric per group of 32, bf16 activations (the model in bf16), through
    aten's `_weight_int4pack_mm_for_cpu` (the CPU kernel torchao's Int4CPULayout and gpt-fast call).
    """

    runtime = "torch"
    packages = ("torch", "transformers")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        import torch
        from transformers import LlamaForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch.set_num_threads(self.threads)   # process-wide: the worker runs one runtime's threads at a time
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)
        with offline():
            model = LlamaForCausalLM.from_pretrained(self.model.hf_dir, dtype=dtype, local_files_only=True)
        if self.precision == "int8":
            model = _torch_dynamic_int8(model)
            self.kernel = Kernel("torch", "int8", weights="int8 per output channel (symmetric)",
                                 quantization="weight-and-activation",
                                 compute="int8 x int8 GEMM (fbgemm/onednn), activations quantized per tensor at run time",
                                 kv_cache="fp32", kv_bytes_per_element=4,
                                 detail={"api": "torch.ao.quantization.quantize_dynamic", "layers": "every nn.Linear incl. lm_head",
                                         "engine": torch.backends.quantized.engine})
        elif self.precision == "int4":
            # bf16 activations, as torchao's Int4CPULayout: with fp32 activations the same op takes a
            # reference path, 29x slower at one token and 76x at 64 here (576x1536, one thread)
            model = model.to(torch.bfloat16)
            n = _torch_int4_weight_only(model, TORCH_INT4_GROUP)
            self.kernel = Kernel("torch", "int4", weights=f"int4 asymmetric, group {TORCH_INT4_GROUP} along K",
                                 quantization="weight-only",
                                 compute="bf16 activations x int4 weights (dequantised to bf16 in the kernel)",
                                 kv_cache="bf16", kv_bytes_per_element=2,
                                 detail={"api": "torch.ops.aten._weight_int4pack_mm_for_cpu", "layers_quantized": n,
                                         "layers": "every nn.Linear incl. lm_head"})
        else:
            name = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}[self.precision]
            bpe = 4 if name == "fp32" else 2
            self.kernel = Kernel("torch", self.precision, weights=name, quantization="none", compute=name,
                                 kv_cache=name, kv_bytes_per_element=bpe,
                                 detail={"cpu_capability": torch.backends.cpu.get_cpu_capability()})
        self._model = model.eval()
        # transformers 5.x renamed forward's `past_key_values` to `cache` (the old name warns)
        self._cache_kw = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
        self.weight_bytes, self.decode_weight_bytes = _torch_weight_bytes(model)
        self.info.update({"torch": torch.__version__, "torch_threads": torch.get_num_threads()})

    def generate(self, prompt_ids: Sequence[int], new_tokens: int) -> TokenTrace:
        self._check(prompt_ids, new_tokens)
        import torch
        from transformers import DynamicCache

        model = self._model
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
        stamps: list[int] = []
        out_ids: list[int] = []
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            start = time.perf_counter_ns()
            kw = {self._cache_kw: cache}
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **kw)
            tok = int(out.logits[0, -1].argmax())
            stamps.append(time.perf_counter_ns())
            out_ids.append(tok)
            for _ in range(new_tokens - 1):
                out = model(input_ids=torch.tensor([[tok]], dtype=torch.long), use_cache=True, **kw)
                tok = int(out.logits[0, -1].argmax())
                stamps.append(time.perf_counter_ns())
                out_ids.append(tok)
        kv = _cache_bytes(cache)
        return TokenTrace(start, tuple(stamps), tuple(out_ids), len(prompt_ids), kv,
                          "DynamicCache key/value tensors' bytes" if kv is not None else "not visible")

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


# ---- ONNX Runtime GenAI: its builder, offline, and og.Generator ----

ORT_BUILDER_PRECISION = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8": "int8", "int4": "int4"}
ORT_DEFAULT_ACCURACY_LEVEL = 4      # int8 compute: what makes MatMulNBits fast on a CPU
ORT_DEFAULT_BLOCK_SIZE = 32


@register
class OrtGenAISession(GenerationSession):
    """The ORT GenAI model builder turns the HF folder into ONNX offline (cached); og.Generator decodes.

    int4/int8: MatMulNBits, weight-only in the graph (blockwise, block 32); with accuracy_level 4 the CPU
    kernel quantizes activations to int8 per block and computes in int8 (read back from the graph).
    """

    runtime = "onnxruntime-genai"
    packages = ("onnxruntime-genai", "onnxruntime", "onnx", "onnx-ir", "onnxscript")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        import onnxruntime_genai as og

        self._og = og
        built = self._build()
        view = self._thread_view(built)
        try:
            cfg = og.Config(str(view))
            cfg.clear_providers()          # CPU
            self._ogmodel = og.Model(cfg)
        except Exception as e:
            raise Unsupported(f"onnxruntime-genai cannot load the {self.precision} model on CPU: "
                              f"{_ort_message(e)}") from None
        graph = _matmulnbits_attrs(built / "model.onnx")
        gcfg = json.loads((view / "genai_config.json").read_text())
        kv = _ort_kv_dtype(built / "model.onnx")
        kv_bpe = {"float32": 4, "float16": 2, "bfloat16": 2}.get(kv, 4)
        if self.precision in ("int4", "int8"):
            levels = sorted({a.get("accuracy_level") for a in graph})
            bits = sorted({a.get("bits") for a in graph})
            blocks = sorted({a.get("block_size") for a in graph})
            compute = {4: "int8 (activations quantized per block inside MatMulNBits)", 3: "bf16", 2: "fp16",
                       1: "fp32", 0: "fp32 (unset)"}
            self.kernel = Kernel("onnxruntime-genai", self.precision,
                                 weights=f"int{'/'.join(map(str, bits))} blockwise (block {'/'.join(map(str, blocks))}), "
                                         "MatMulNBits",
                                 quantization="weight-only",
                                 compute="; ".join(compute.get(lv, str(lv)) for lv in levels),
                                 kv_cache=kv, kv_bytes_per_element=kv_bpe,
                                 detail={"op": "MatMulNBits", "nodes": len(graph), "accuracy_level": levels,
                                         "block_size": blocks, "bits": bits})
        else:
            self.kernel = Kernel("onnxruntime-genai", self.precision, weights=self.precision, quantization="none",
                                 compute=self.precision, kv_cache=kv, kv_bytes_per_element=kv_bpe, detail={})
        self.weight_bytes, self.decode_weight_bytes = _onnx_weight_bytes(built / "model.onnx")
        try:   # some builds load and then fail on their first decode step (fp16 on CPU): say so now
            self.generate(list(range(1, 9)), 3)
        except Exception as e:
            raise Unsupported(f"onnxruntime-genai {self.precision} fails on CPU at run time: "
                              f"{_ort_message(e)}") from None
        self.info.update({"onnxruntime_genai": og.__version__ if hasattr(og, "__version__") else None,
                          "model_dir": str(built), "session_options": gcfg["model"]["decoder"].get("session_options")})

    def _build(self) -> Path:
        prec = ORT_BUILDER_PRECISION[self.precision]
        extra = {"hf_token": "false"}
        if prec in ("int4", "int8"):
            extra["accuracy_level"] = str(int(self.options.get("accuracy_level", ORT_DEFAULT_ACCURACY_LEVEL)))
            extra["block_size"] = str(int(self.options.get("block_size", ORT_DEFAULT_BLOCK_SIZE)))
        key = "-".join(f"{k}{v}" for k, v in sorted(extra.items()) if k != "hf_token")
        out = self.cache_dir / "llm-ort" / f"{self.model.fingerprint}-{prec}{'-' + key if key else ''}"
        if (out / "genai_config.json").exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(out) + f".{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        work = Path(str(out) + f".{os.getpid()}.cache")
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", self.model.hf_dir, "-o", str(tmp),
               "-p", prec, "-e", "cpu", "-c", str(work), "--extra_options", *(f"{k}={v}" for k, v in extra.items())]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(self.threads)}
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
        shutil.rmtree(work, ignore_errors=True)
        if proc.returncode != 0 or not (tmp / "genai_config.json").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            lines = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
            reason = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
            raise Unsupported(f"the onnxruntime-genai builder cannot make {prec} for CPU: {reason.strip()[:300]}")
        try:
            os.rename(tmp, out)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)   # another worker finished first
        return out

    def _thread_view(self, built: Path) -> Path:
        """A sibling folder of links with its own genai_config.json: threads go in session_options, and
        workers with other thread counts share the built model without racing on one config file."""
        view = built.parent / f"{built.name}.threads{self.threads}"
        if (view / "genai_config.json").exists():
            return view
        tmp = Path(str(view) + f".{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in built.iterdir():
            if f.name != "genai_config.json":
                os.symlink(f.resolve(), tmp / f.name)
        cfg = json.loads((built / "genai_config.json").read_text())
        opts = cfg["model"]["decoder"].setdefault("session_options", {})
        opts["intra_op_num_threads"] = self.threads
        opts["inter_op_num_threads"] = 1
        (tmp / "genai_config.json").write_text(json.dumps(cfg, indent=2))
        try:
            os.rename(tmp, view)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        return view

    def generate(self, prompt_ids: Sequence[int], new_tokens: int) -> TokenTrace:
        self._check(prompt_ids, new_tokens)
        og = self._og
        length = len(prompt_ids) + new_tokens
        params = og.GeneratorParams(self._ogmodel)
        params.set_search_options(max_length=length, min_length=length, do_sample=False)
        ids = np.asarray(prompt_ids, dtype=np.int32)
        gen = og.Generator(self._ogmodel, params)      # fresh KV cache per request
        stamps: list[int] = []
        out_ids: list[int] = []
        start = time.perf_counter_ns()
        gen.append_tokens(ids)
        while not gen.is_done():
            gen.generate_next_token()
            tok = int(gen.get_next_tokens()[0])
            stamps.append(time.perf_counter_ns())
            out_ids.append(tok)
        kv = self._present_bytes(gen)
        del gen
        if len(out_ids) != new_tokens:
            raise RuntimeError(f"onnxruntime-genai produced {len(out_ids)} tokens, asked for {new_tokens}")
        return TokenTrace(start, tuple(stamps), tuple(out_ids), len(prompt_ids), kv,
                          "present.* tensors' bytes (allocated for prompt + new tokens: past/present share one buffer)")

    def _present_bytes(self, gen) -> int | None:
        total = 0
        try:
            for i in range(self.model.shape.layers):
                for kind in ("key", "value"):
                    total += gen.get_output(f"present.{i}.{kind}").nbytes
        except Exception:
            return None
        return total

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        og = self._og
        params = og.GeneratorParams(self._ogmodel)
        params.set_search_options(max_length=len(ids) + 1, do_sample=False)
        gen = og.Generator(self._ogmodel, params)
        gen.append_tokens(np.asarray(ids, dtype=np.int32))   # the prefill runs here, logits of every position
        out = np.array(gen.get_output("logits"), dtype=np.float32)[0]
        del gen
        if out.shape[0] != len(ids):
            raise RuntimeError(f"onnxruntime-genai returned logits for {out.shape[0]} of {len(ids)} positions")
        return out

    def close(self) -> None:
        self._ogmodel = None


def _ort_message(e: BaseException) -> str:
    text = " ".join(str(e).split())
    marker = "Status Message:"
    return (text.split(marker, 1)[1] if marker in text else text).strip()[:300]


def _onnx_graph(path: Path):
    import onnx
    return onnx.load(str(path), load_external_data=False)


def _matmulnbits_attrs(path: Path) -> list[dict]:
    import onnx
    g = _onnx_graph(path).graph
    return [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in g.node if n.op_type == "MatMulNBits"]


def _ort_kv_dtype(path: Path) -> str:
    import onnx
    for i in _onnx_graph(path).graph.input:
        if i.name.startswith("past_key_values"):
            name = onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type).lower()
            return "float32" if name == "float" else name
    return "unknown"


def _onnx_weight_bytes(path: Path) -> tuple[int, int]:
    """Initializer bytes (external data lengths read from the graph), and those one decode step reads:
    one row of each table looked up by position or token (the embedding's Gather, the rotary caches)."""
    import onnx
    model = _onnx_graph(path)
    total, embed, row = 0, 0, 0
    gathered = {n.input[0] for n in model.graph.node if n.op_type in ("Gather", "GatherBlockQuantized")}
    # a table some other node also reads (a tied LM head) is read whole every step
    gathered -= {i for n in model.graph.node if n.op_type not in ("Gather", "GatherBlockQuantized") for i in n.input}
    for init in model.graph.initializer:
        ext = {e.key: e.value for e in init.external_data}
        n = int(ext["length"]) if "length" in ext else len(init.raw_data) or onnx.numpy_helper.to_array(init).nbytes
        total += n
        table = init.name in gathered or init.name.endswith(("cos_cache", "sin_cache"))
        if table and len(init.dims) == 2 and init.dims[0] > 1:
            embed += n
            row += n // int(init.dims[0])
    return total, total - embed + row


# ---- llama.cpp: llama-cpp-python on GGUF ----

GGUF_TYPES = {"fp32": "F32", "fp16": "F16", "bf16": "BF16", "int8": "Q8_0", "int4": "Q4_0"}
LLAMA_FTYPE = {"F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K_M": 15, "BF16": 32}   # llama.h llama_ftype
GGUF_BITS = {"F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8, "Q4_0": 4, "Q4_1": 4, "Q4_K": 4, "Q4_K_M": 4}


@register
class LlamaCppSession(GenerationSession):
    """llama-cpp-python's low-level eval on a GGUF: the prompt in one batch, then one token per eval,
    greedy argmax on the last logits. Quantized types store weights in blocks of 32 (Q8_0, Q4_0) and the
    CPU dot products quantize activations to Q8 blocks on the fly; the KV cache is F16 by default.
    """

    runtime = "llamacpp"
    packages = ("llama-cpp-python", "gguf")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        try:
            import llama_cpp
        except ImportError:
            raise Unsupported("llama-cpp-python is not installed (the [llm] extra compiles it once, ~5-10 min)") from None
        self._lc = llama_cpp
        path, gtype, origin = self._gguf()
        from effbench.models.llm import check_gguf
        meta = check_gguf(path)
        with _quiet_fds():
            self._llm = llama_cpp.Llama(model_path=str(path), n_ctx=self.max_context, n_batch=self.max_context,
                                        n_ubatch=self.max_context, n_threads=self.threads,
                                        n_threads_batch=self.threads, logits_all=False, verbose=False)
        self._n_vocab = self._llm.n_vocab()
        quantized = gtype not in ("F32", "F16", "BF16")
        weights = gtype
        if gtype.removesuffix("_M") not in meta["tensor_types"]:
            # llama.cpp falls back per tensor (K-quants need rows of 256): name what the file really holds
            weights = f"{gtype} file, tensors {'/'.join(sorted(meta['tensor_types']))}"
        self.kernel = Kernel("llamacpp", self.precision, weights=weights,
                             quantization="weight-only" if quantized else "none",
                             compute=("integer dot products with activations quantized to Q8 blocks on the fly"
                                      if quantized else gtype.lower()),
                             kv_cache="f16", kv_bytes_per_element=2,
                             detail={"gguf": str(path), "origin": origin, "tensor_types": meta["tensor_types"]})
        self.weight_bytes, self.decode_weight_bytes = _gguf_weight_bytes(path)
        self.info.update({"llama_cpp_python": getattr(llama_cpp, "__version__", None), "gguf_type": gtype,
                          "n_threads": self.threads, "n_ctx": self.max_context})

    def _gguf(self) -> tuple[Path, str, str]:
        model = self.model
        gtype = str(self.options.get("gguf_type") or GGUF_TYPES[self.precision]).upper()
        if gtype not in GGUF_BITS:
            raise Unsupported(f"llama.cpp GGUF type {gtype} is not one effbench builds; use one of {sorted(GGUF_BITS)}")
        bits = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8, "int4": 4}[self.precision]
        if GGUF_BITS[gtype] != bits:
            raise Unsupported(f"GGUF type {gtype} is not {self.precision}")
        # A GGUF-sourced model runs as it is at its own precision (SmolLM2: Q4_1 for int4).
        if model.gguf_path and model.gguf_type and GGUF_BITS.get(model.gguf_type) == bits \
                and not self.options.get("gguf_type"):
            return Path(model.gguf_path), model.gguf_type, "the source GGUF as it is"
        folder = self.cache_dir / "llm-gguf" / model.fingerprint
        folder.mkdir(parents=True, exist_ok=True)
        f32 = folder / "F32.gguf"
        origin = "written from the HF folder by effbench.models.llm.write_gguf"
        if model.gguf_path:
            origin += f" ({model.reference})"
        if not f32.exists():
            write_gguf(model, f32, ftype="f32")
        if gtype == "F32":
            return f32, gtype, origin
        out = folder / f"{gtype}.gguf"
        if not out.exists():
            if gtype == "F16":
                write_gguf(model, out, ftype="f16")
            else:
                self._quantize(f32, out, gtype)
        return out, gtype, origin + ("" if gtype == "F16" else f", then llama_model_quantize to {gtype}")

    def _quantize(self, src: Path, dst: Path, gtype: str) -> None:
        lc = self._lc
        params = lc.llama_model_quantize_default_params()
        params.ftype = LLAMA_FTYPE[gtype]
        params.nthread = self.threads
        tmp = dst.with_name(dst.name + f".{os.getpid()}.tmp")
        with _quiet_fds():
            rc = lc.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0 or not tmp.exists():
            tmp.unlink(missing_ok=True)
            raise Unsupported(f"llama.cpp's quantizer could not make {gtype} (llama_model_quantize returned {rc})")
        os.replace(tmp, dst)

    def _last_logits(self) -> np.ndarray:
        ptr = self._lc.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))

    def _clear(self) -> None:
        self._llm._ctx.kv_cache_clear()     # a fresh KV cache per request
        self._llm.n_tokens = 0

    def generate(self, prompt_ids: Sequence[int], new_tokens: int) -> TokenTrace:
        self._check(prompt_ids, new_tokens)
        llm = self._llm
        self._clear()
        stamps: list[int] = []
        out_ids: list[int] = []
        start = time.perf_counter_ns()
        llm.eval(list(prompt_ids))
        tok = int(self._last_logits().argmax())
        stamps.append(time.perf_counter_ns())
        out_ids.append(tok)
        for _ in range(new_tokens - 1):
            llm.eval([tok])
            tok = int(self._last_logits().argmax())
            stamps.append(time.perf_counter_ns())
            out_ids.append(tok)
        kv = int(self._lc.llama_state_seq_get_size(llm._ctx.ctx, 0))
        return TokenTrace(start, tuple(stamps), tuple(out_ids), len(prompt_ids), kv,
                          "llama_state_seq_get_size: the sequence's KV rows in use (plus a small header)")

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        if len(ids) > self.max_context:
            raise ValueError("more positions than the session's context")
        llm = self._llm
        self._clear()
        llm._batch.set_batch(batch=list(ids), n_past=0, logits_all=True)
        llm._ctx.decode(llm._batch)
        ptr = self._lc.llama_get_logits(llm._ctx.ctx)
        out = np.ctypeslib.as_array(ptr, shape=(len(ids) * self._n_vocab,)).reshape(len(ids), self._n_vocab).copy()
        self._clear()
        return out

    def close(self) -> None:
        if getattr(self, "_llm", None) is not None:
            self._llm.close()
            self._llm = None


def _gguf_weight_bytes(path: Path) -> tuple[int, int]:
    import gguf
    reader = gguf.GGUFReader(str(path))
    sizes = {t.name: int(t.n_bytes) for t in reader.tensors}
    total = sum(sizes.values())
    embed = reader.tensors[[t.name for t in reader.tensors].index("token_embd.weight")] if "token_embd.weight" in sizes else None
    if embed is None or "output.weight" not in sizes:      # tied: the table is the LM head, read whole
        return total, total
    rows = int(embed.shape[-1]) if len(embed.shape) == 2 else 1   # GGUF lists dims fastest-first
    return total, total - sizes["token_embd.weight"] + sizes["token_embd.weight"] // max(rows, 1)


@contextlib.contextmanager
def _quiet_fds():
    """llama.cpp logs to the C-level stderr; keep a test's or worker's output readable."""
    try:
        from llama_cpp._utils import suppress_stdout_stderr
    except ImportError:
        yield
        return
    with suppress_stdout_stderr(disable=False):
        yield
