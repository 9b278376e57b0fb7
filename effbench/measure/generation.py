"""Figures of a generative request from its per-token timestamps (TTFT, TPOT, ITL, tokens/s), the KV
cache's analytic size, decode's bandwidth utilization, and quality against FP32 from logits.

Pure: numpy and the standard library only; the runtimes that produce the timestamps live in
`effbench.workloads.generate`. Definitions follow MLPerf Inference (TTFT, TPOT) and vLLM's benchmark
(ITL pooled over tokens); a token is a token, never a streamed chunk.
"""
from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

ITL_PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class RequestTiming:
    """One request: when it went in and when each output token was available (perf_counter_ns).

    `token_ns[0]` ends the prefill: the first output token comes from the prompt's last logits.
    """

    start_ns: int
    token_ns: tuple[int, ...]
    prompt_tokens: int

    def __post_init__(self) -> None:
        if not self.token_ns:
            raise ValueError("a request produced no output token")
        if any(b < a for a, b in zip((self.start_ns, *self.token_ns), self.token_ns)):
            raise ValueError("token timestamps must not go backwards")

    @property
    def new_tokens(self) -> int:
        return len(self.token_ns)

    @cached_property
    def ttft_ms(self) -> float:
        return (self.token_ns[0] - self.start_ns) / 1e6

    @cached_property
    def e2e_ms(self) -> float:
        return (self.token_ns[-1] - self.start_ns) / 1e6

    @cached_property
    def tpot_ms(self) -> float | None:
        """(end-to-end - TTFT) / (new_tokens - 1): MLPerf's time per output token; None for one token."""
        if self.new_tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.new_tokens - 1)

    @cached_property
    def itl_ms(self) -> tuple[float, ...]:
        """The intervals between consecutive output tokens (new_tokens - 1 of them)."""
        t = np.asarray(self.token_ns, dtype=np.int64)
        return tuple((np.diff(t) / 1e6).tolist())

    @cached_property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / (self.ttft_ms / 1e3) if self.ttft_ms > 0 else float("inf")

    @cached_property
    def decode_tokens_per_s(self) -> float | None:
        """Output tokens after the first, over the time they took: 1000 / TPOT."""
        if self.tpot_ms is None:
            return None
        return 1e3 / self.tpot_ms if self.tpot_ms > 0 else float("inf")


def itl_percentiles_ms(requests: Sequence[RequestTiming], percentiles: Sequence[int] = ITL_PERCENTILES
                       ) -> dict[str, float]:
    """Inter-token latency percentiles pooled over every token of every request (vLLM's ITL)."""
    pooled = np.concatenate([np.asarray(r.itl_ms, dtype=np.float64) for r in requests]) if requests else np.array([])
    if pooled.size == 0:
        return {}
    return {f"p{q}": float(np.percentile(pooled, q)) for q in percentiles}


def generation_figures(requests: Sequence[RequestTiming]) -> dict:
    """One trial set's figures: the median over requests of each per-request figure, ITL pooled.

    The CI over rounds is the caller's (each round contributes these medians), as for every latency.
    """
    if not requests:
        raise ValueError("no requests")
    prompt = {r.prompt_tokens for r in requests}
    new = {r.new_tokens for r in requests}
    if len(prompt) != 1 or len(new) != 1:
        raise ValueError(f"requests of one cell must do the same work: prompt tokens {sorted(prompt)}, "
                         f"new tokens {sorted(new)}")

    def med(values):
        values = [v for v in values if v is not None]
        return float(np.median(values)) if values else None

    return {
        "prompt_tokens": prompt.pop(),
        "new_tokens": new.pop(),
        "requests": len(requests),
        "ttft_ms": med(r.ttft_ms for r in requests),
        "tpot_ms": med(r.tpot_ms for r in requests),
        "e2e_ms": med(r.e2e_ms for r in requests),
        "itl_ms": itl_percentiles_ms(requests),
        "prefill_tokens_per_s": med(r.prefill_tokens_per_s for r in requests),
        "decode_tokens_per_s": med(r.decode_tokens_per_s for r in requests),
    }


# ---- memory: the KV cache and what decode reads per token ----

def kv_cache_bytes(*, layers: int, kv_heads: int, head_dim: int, context: int, bytes_per_element: float,
                   batch: int = 1) -> int:
    """Analytic KV cache size: 2 (K and V) x layers x batch x KV heads x head dim x context x bytes."""
    return round(2 * layers * batch * kv_heads * head_dim * context * bytes_per_element)


def decode_bytes_per_token(weight_bytes: int, kv_bytes_read: int) -> int:
    """What one decode step at batch 1 reads from memory: every weight once, plus the KV cache so far."""
    return int(weight_bytes) + int(kv_bytes_read)


def bandwidth_utilization(decode_tokens_per_s: float, bandwidth_bytes_per_s: float,
                          bytes_per_token: int) -> float:
    """Measured decode tokens/s over the bandwidth limit's tokens/s (bandwidth / bytes read per token).

    Decode at batch 1 is bandwidth-bound: 1.0 means the runtime streams its weights at the machine's
    measured rate; above 1.0 means the weights stayed in cache or the bandwidth figure is a one-core one.
    """
    if bandwidth_bytes_per_s <= 0 or bytes_per_token <= 0:
        raise ValueError("bandwidth and bytes per token must be positive")
    return float(decode_tokens_per_s) / (bandwidth_bytes_per_s / bytes_per_token)


@dataclass(frozen=True)
class Bandwidth:
    """A measured memory bandwidth, with how it was measured (stated beside every utilization)."""

    bytes_per_s: float
    method: str
    buffer_bytes: int
    samples_s: tuple[float, ...]

    def to_json(self) -> dict:
        return {"bytes_per_s": self.bytes_per_s, "method": self.method, "buffer_bytes": self.buffer_bytes,
                "samples_s": list(self.samples_s)}


def stream_bandwidth(buffer_bytes: int = 256 * 2**20, repeats: int = 5) -> Bandwidth:
    """STREAM-like copy bandwidth: numpy copies a buffer much larger than any cache; bytes counted as
    read + written (STREAM's Copy). A warm-up pass first: the first touch pays page faults (0.8 GB/s
    here against 20+ GB/s after). Best of `repeats`, as STREAM reports; numpy copies on one thread."""
    n = int(buffer_bytes) // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)                      # warm-up: fault every page of both buffers in
    samples = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        samples.append(time.perf_counter() - t0)
    moved = 2 * src.nbytes
    return Bandwidth(bytes_per_s=moved / min(samples),
                     method=f"numpy copy of {src.nbytes // 2**20} MiB, read+write counted, best of {len(samples)}, "
                            "one thread, after a warm-up pass",
                     buffer_bytes=int(src.nbytes), samples_s=tuple(samples))


def energy_per_token_mj(energy_mj: float, tokens: int) -> float:
    """Energy over a phase (prefill or decode) divided by the tokens it handled."""
    if tokens <= 0:
        raise ValueError("tokens must be positive")
    return float(energy_mj) / tokens


# ---- quality against the FP32 reference, from logits ----

def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _paired(ref_logits: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref_logits)
    got = np.asarray(logits)
    if ref.ndim != 2 or ref.shape != got.shape:
        raise ValueError(f"logits must be [positions, vocab] of one shape: {ref.shape} vs {got.shape}")
    return ref, got


def next_token_agreement(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Share of positions where the top-1 next token equals the reference's (teacher-forced)."""
    ref, got = _paired(ref_logits, logits)
    return float(np.mean(ref.argmax(-1) == got.argmax(-1)))


def kl_mean(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean over positions of KL(P_ref || P) in nats, P the softmax of the logits."""
    ref, got = _paired(ref_logits, logits)
    lp_ref, lp = log_softmax(ref), log_softmax(got)
    return float(np.mean(np.sum(np.exp(lp_ref) * (lp_ref - lp), axis=-1)))


def perplexity(logits: np.ndarray, ids: Sequence[int]) -> float:
    """exp of the mean negative log-likelihood of ids[1:] given the logits at positions [0, n-1).

    Only meaningful for real weights: a random-weight model's perplexity is close to its vocabulary size
    whatever its precision, and says nothing about quantization.
    """
    ids = np.asarray(ids, dtype=np.int64)
    lp = log_softmax(np.asarray(logits)[: len(ids) - 1])
    nll = -lp[np.arange(len(ids) - 1), ids[1:]]
    return float(np.exp(nll.mean()))


def first_divergence(ref_ids: Sequence[int], ids: Sequence[int]) -> int | None:
    """Index of the first generated token that differs from the reference continuation; None if none does
    over their common length."""
    for i, (a, b) in enumerate(zip(ref_ids, ids)):
        if int(a) != int(b):
            return i
    return None


@dataclass(frozen=True)
class Quality:
    """Teacher-forced quality of one variant against the FP32 reference on held text."""

    positions: int
    next_token_agreement: float
    kl_mean: float
    perplexity: float | None           # None for random weights: meaningless there
    reference_perplexity: float | None
    first_divergence: int | None       # of greedy continuations of one prompt; None: no divergence
    reference: str                     # what FP32 is (e.g. "FP32 dequantised from the Q4_1 GGUF")

    def to_json(self) -> dict:
        return dict(self.__dict__)


def quality_vs_reference(ref_logits: np.ndarray, logits: np.ndarray, ids: Sequence[int], *, real_weights: bool,
                         reference: str, ref_continuation: Sequence[int] | None = None,
                         continuation: Sequence[int] | None = None) -> Quality:
    both = ref_continuation is not None and continuation is not None
    return Quality(
        positions=int(np.asarray(logits).shape[0]),
        next_token_agreement=next_token_agreement(ref_logits, logits),
        kl_mean=kl_mean(ref_logits, logits),
        perplexity=perplexity(logits, ids) if real_weights else None,
        reference_perplexity=perplexity(ref_logits, ids) if real_weights else None,
        first_divergence=first_divergence(ref_continuation, continuation) if both else None,
        reference=reference,
    )


# ---- held text ----

_RULE = re.compile(r"^[*=\-~^\"]+$")


def held_text() -> str:
    """The English prose of Python's own `pydoc_data.topics` (ships with every Python, offline): its
    unindented paragraphs, without headings, grammar productions or code (those are indented), in topic
    order. Quantization here is data-free, so no variant was built from this text."""
    from pydoc_data.topics import topics

    paragraphs = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            lines = block.split("\n")
            if not lines or any(not ln or ln[0].isspace() for ln in lines):
                continue                      # code, grammar, tables: indented
            if len(lines) >= 2 and _RULE.match(lines[-1].strip()):
                continue                      # a heading and its underline
            if any(ln.lstrip().startswith(">>>") for ln in lines):
                continue
            text = " ".join(ln.strip() for ln in lines)
            if len(text.split()) >= 8:        # a sentence, not a label
                paragraphs.append(text)
    return "\n\n".join(paragraphs)
