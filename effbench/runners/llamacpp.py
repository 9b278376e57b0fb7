"""llama.cpp (`llama-cpp-python` on GGUF files): decoder LLMs only (`task: generate`). Precisions map to
GGUF types (fp32 F32, fp16 F16, bf16 BF16, int8 Q8_0, int4 Q4_0, or `gguf_type`), written or quantized
once and cached; the session itself is `effbench.workloads.sessions.llamacpp.LlamaCppSession`.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from effbench.runners.base import RunnerOptions, Support, Unsupported, register
from effbench.runners.onnxruntime_genai import GENERATIVE_ONLY


class LlamaCppOptions(RunnerOptions):
    """`options:` of the llamacpp runner."""

    # the GGUF type of the int4 or int8 variant instead of the default (Q4_0, Q8_0); a type whose bits are
    # not the precision's makes that cell unsupported, saying so
    gguf_type: Literal["Q4_0", "Q4_1", "Q4_K_M", "Q8_0"] | None = None

    def session_options(self) -> dict[str, Any]:
        return {"gguf_type": self.gguf_type} if self.gguf_type else {}


@register
class LlamaCppRunner:
    name: ClassVar[str] = "llamacpp"
    artifact: ClassVar[str] = "llm"
    runtime_module: ClassVar[str] = "llama_cpp"
    excludes: ClassVar[tuple[str, ...]] = ()
    packages: ClassVar[tuple[str, ...]] = ("llama-cpp-python", "gguf")
    Options: ClassVar[type[RunnerOptions]] = LlamaCppOptions

    def supports(self, variant) -> Support:
        return Support.no(f"{self.name} {GENERATIVE_ONLY}; for the {variant.label} variant use onnxruntime or torch")

    def load(self, variant, threads: int, options: dict[str, Any]):
        raise Unsupported(self.supports(variant).reason)
