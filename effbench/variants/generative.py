"""Generative precisions: what each precision of a decoder LLM (`task: generate`) becomes on each runtime
that serves one (the sessions of `effbench.workloads.sessions`): the torch model's dtype or quantization,
the ONNX Runtime GenAI builder's precision, llama.cpp's GGUF type. One table here, so the sessions, the
parent's checks and the report never spell a precision's name (tests/plugins/test_one_module_per_axis.py).

Pure Python: importing it imports no runtime.
"""
from __future__ import annotations

from dataclasses import dataclass

# torch: how the session makes the precision from the HF model
TORCH_FLOAT = "float"                  # the model loaded in `torch_dtype`
TORCH_DYNAMIC_INT8 = "dynamic-int8"    # torch.ao quantize_dynamic of every nn.Linear (weights and activations)
TORCH_INT4_WEIGHT_ONLY = "int4-weight-only"   # aten's _weight_int4pack_mm_for_cpu, bf16 activations


@dataclass(frozen=True)
class GenerativePrecision:
    """One precision of a decoder LLM on every generative runtime."""

    name: str                  # the precision (effbench.variants.specs)
    weight_bits: int
    element_bytes: int | None  # a float precision's bytes per element (its KV cache's too on torch); None: quantized
    torch_mode: str            # TORCH_FLOAT | TORCH_DYNAMIC_INT8 | TORCH_INT4_WEIGHT_ONLY
    torch_dtype: str           # the dtype torch loads the model in (torch.<name>)
    ort_builder: str           # onnxruntime_genai.models.builder's `-p`
    gguf_type: str             # the GGUF type llama.cpp runs by default (the runner's `gguf_type` overrides it)
    torch_compute: str         # the precision torch's arithmetic runs at (a device profile's peak for it)

    @property
    def quantized(self) -> bool:
        return self.element_bytes is None


_TABLE = (
    GenerativePrecision("fp32", 32, 4, TORCH_FLOAT, "float32", "fp32", "F32", "fp32"),
    GenerativePrecision("fp16", 16, 2, TORCH_FLOAT, "float16", "fp16", "F16", "fp16"),
    GenerativePrecision("bf16", 16, 2, TORCH_FLOAT, "bfloat16", "bf16", "BF16", "bf16"),
    # int8: int8 x int8 GEMM; int4: bf16 activations against int4 weights dequantised in the kernel
    GenerativePrecision("int8", 8, None, TORCH_DYNAMIC_INT8, "float32", "int8", "Q8_0", "int8"),
    GenerativePrecision("int4", 4, None, TORCH_INT4_WEIGHT_ONLY, "float32", "int4", "Q4_0", "bf16"),
)
GENERATIVE: dict[str, GenerativePrecision] = {p.name: p for p in _TABLE}

# MatMulNBits' accuracy_level (the onnxruntime-genai builder's int4/int8 option) -> the arithmetic it runs,
# in words and as the precision whose peak a device profile projects it at
ORT_ACCURACY_COMPUTE = {4: "int8 (activations quantized per block inside MatMulNBits)", 3: "bf16", 2: "fp16",
                        1: "fp32", 0: "fp32 (unset)"}
ORT_ACCURACY_PRECISION = {4: "int8", 3: "bf16", 2: "fp16", 1: "fp32", 0: "fp32"}
# llama.cpp's quantized CPU dot products quantize activations to Q8 blocks: int8 arithmetic
LLAMACPP_QUANTIZED_COMPUTE = "int8"


def generative_precisions() -> tuple[str, ...]:
    """The precisions a generative model takes, in table order."""
    return tuple(GENERATIVE)


def generative_precision(name: str) -> GenerativePrecision:
    """The precision's row; ValueError naming the ones there are."""
    if name not in GENERATIVE:
        raise ValueError(f"unknown precision '{name}'; expected one of {generative_precisions()}")
    return GENERATIVE[name]
