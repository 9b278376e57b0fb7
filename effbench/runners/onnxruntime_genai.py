"""ONNX Runtime GenAI (`onnxruntime-genai`): decoder LLMs only (`task: generate`). Its model builder turns
the model's HF folder into ONNX offline (cached) and `og.Generator` decodes; the session itself is
`effbench.workloads.sessions.onnxruntime_genai.OrtGenAISession`. Classifier variants are `unsupported`
here: use `onnxruntime`.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from effbench.runners.base import RunnerOptions, Support, Unsupported, register


class OrtGenAIOptions(RunnerOptions):
    """`options:` of the onnxruntime-genai runner: the builder's int4/int8 (MatMulNBits) settings."""

    # MatMulNBits' compute: 4 = int8 (activations quantized per block; the fast one on a CPU), 3 = bf16,
    # 2 = fp16, 1 = fp32. Recorded in each record's kernel as read back from the built graph.
    accuracy_level: Literal[0, 1, 2, 3, 4] = 4
    # weights per quantization block along K (the builder's block_size)
    block_size: Annotated[int, Field(ge=16, le=256)] = 32

    def session_options(self) -> dict[str, Any]:
        return {"accuracy_level": self.accuracy_level, "block_size": self.block_size}


GENERATIVE_ONLY = "serves generative models only (task: generate)"


@register
class OrtGenAIRunner:
    name: ClassVar[str] = "onnxruntime-genai"
    artifact: ClassVar[str] = "llm"          # a decoder LLM's HF folder, built by its own builder
    runtime_module: ClassVar[str] = "onnxruntime_genai"
    excludes: ClassVar[tuple[str, ...]] = ()
    packages: ClassVar[tuple[str, ...]] = ("onnxruntime-genai", "onnx-ir", "onnxscript")
    Options: ClassVar[type[RunnerOptions]] = OrtGenAIOptions

    def supports(self, variant) -> Support:
        return Support.no(f"{self.name} {GENERATIVE_ONLY}; for the {variant.label} variant use onnxruntime")

    def load(self, variant, threads: int, options: dict[str, Any]):
        raise Unsupported(self.supports(variant).reason)
