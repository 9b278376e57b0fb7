"""One generative trial = one request: fixed prompt token ids, a forced output length (greedy, EOS
ignored, so every trial does the same work), a fresh KV cache, and a perf_counter_ns stamp per token.

Here: opening a session (`open_session`), the prompts and held text as token ids, and quality against the
FP32 session. The session base class and the trace live in `effbench.workloads.session`; one module per
runtime in `effbench.workloads.sessions` (torch: a decode loop we own over DynamicCache;
onnxruntime-genai: its builder, offline, and og.Generator; llamacpp: llama-cpp-python on GGUF). A
precision a runtime cannot run raises `Unsupported` with the runtime's reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from effbench.measure.generation import Quality, held_text, quality_vs_reference
from effbench.models.llm import LlmModel, default_cache_dir
from effbench.variants.generative import generative_precisions
from effbench.workloads.session import SESSIONS, GenerationSession, Kernel, TokenClock, TokenTrace, Unsupported  # noqa: F401  (the workload's API, one import away)


def session_class(runtime: str) -> type[GenerationSession]:
    """The session class that serves `runtime`; ValueError naming the runtimes there are."""
    from effbench.workloads.sessions import load
    load()
    if runtime not in SESSIONS:
        raise ValueError(f"unknown generative runtime '{runtime}'; expected one of {sorted(SESSIONS)}")
    return SESSIONS[runtime]


def generative_runtimes() -> tuple[str, ...]:
    """The runners that serve decoder LLMs (each has a session here), in registration order."""
    from effbench.workloads.sessions import load
    load()
    return tuple(SESSIONS)


def open_session(runtime: str, model: LlmModel, precision: str, *, threads: int,
                 cache_dir: str | Path | None = None, max_context: int = 1024,
                 options: dict[str, Any] | None = None) -> GenerationSession:
    cls = session_class(runtime)
    if precision not in generative_precisions():
        raise ValueError(f"unknown precision '{precision}'; expected one of {generative_precisions()}")
    if threads < 1:
        raise ValueError("threads must be at least 1: say how many, decode speed depends on it")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    return cls(model, precision, threads=threads, cache_dir=cache, max_context=max_context,
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


