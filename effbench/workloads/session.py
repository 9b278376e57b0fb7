"""What every generative session shares: one request's trace (`TokenTrace`), what a precision really runs
as (`Kernel`), the session base class with its per-token hooks (`GenerationSession.generate`), and the
registry the runtime modules (`effbench.workloads.sessions`) fill.

One generative trial = one request: fixed prompt token ids, a forced output length (greedy, EOS ignored,
so every trial does the same work), a fresh KV cache, and a perf_counter_ns stamp per token.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from effbench.measure.generation import RequestTiming
from effbench.models.llm import LlmModel
from effbench.runners.base import Unsupported  # noqa: F401  (one `except Unsupported` serves every runtime)
from effbench.variants.generative import GenerativePrecision, generative_precision

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
    compute_precision: str | None = None   # the precision the arithmetic runs at (a profile's peak projects it)

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


# on_token(index, token id, perf_counter_ns stamp): called after each output token is stamped
TokenHook = Callable[[int, int, int], None]


class TokenClock:
    """A request's clock: `start()` when the prompt goes in, `token(id)` as each output token is ready.

    The stamp is taken first, then the hooks run (`on_first_token()` once, at the first token: a LoadGen
    system under test calls `FirstTokenComplete` there; `on_token(i, id, ns)` at every token), so a hook's
    own time never enters the token's stamp; it falls into the next interval, as a server's streaming does.
    """

    def __init__(self, on_first_token: Callable[[], None] | None = None, on_token: TokenHook | None = None) -> None:
        self.start_ns = 0
        self.stamps: list[int] = []
        self.ids: list[int] = []
        self._first, self._each = on_first_token, on_token

    def start(self) -> None:
        self.start_ns = time.perf_counter_ns()

    def token(self, tok: int) -> None:
        t = time.perf_counter_ns()
        self.stamps.append(t)
        self.ids.append(tok)
        if self._first is not None and len(self.ids) == 1:
            self._first()
        if self._each is not None:
            self._each(len(self.ids) - 1, tok, t)


class GenerationSession:
    """One model at one precision on one runtime, threads pinned. Subclasses set `runtime`, `modules`
    (imported in a worker before its baseline RSS is read), `kernel` and `info`, and implement `_decode`.

    `concurrency` says how the session serves requests that arrive while one is decoding (the server and
    offline scenarios): every runtime here serves one request at a time (`serving` says why), and a
    LoadGen system under test queues the others, so their queueing is part of their TTFT.

    `batching` says whether the session decodes several requests together (`generate_batch`: one
    prefill of all their prompts, then one forward per step for all of them; what offline's batch sweep
    runs): None where it can, else the reason it cannot.
    """

    runtime: ClassVar[str]
    modules: ClassVar[tuple[str, ...]] = ()
    concurrency: ClassVar[int] = 1
    serving: ClassVar[str] = "one request at a time: the others wait in the system under test's queue"
    batching: ClassVar[str | None] = "this runtime's session decodes one request at a time"

    def __init__(self, model: LlmModel, precision: str, *, threads: int, cache_dir: Path,
                 max_context: int, options: dict[str, Any]) -> None:
        self.model = model
        self.precision = precision
        self.spec: GenerativePrecision = generative_precision(precision)
        self.threads = threads
        self.cache_dir = cache_dir
        self.max_context = max_context
        self.options = options
        self.kernel: Kernel
        self.info: dict[str, Any] = {"threads": threads}
        self.weight_bytes = 0          # weights as loaded
        self.decode_weight_bytes = 0   # what one decode step reads (an untied embedding: one row)

    def generate(self, prompt_ids: Sequence[int], new_tokens: int, *, on_first_token: Callable[[], None] | None = None,
                 on_token: TokenHook | None = None) -> TokenTrace:
        """One request: `new_tokens` forced, a fresh KV cache, a stamp per token; the hooks as `TokenClock`'s."""
        self._check(prompt_ids, new_tokens)
        clock = TokenClock(on_first_token, on_token)
        kv, how = self._decode(prompt_ids, new_tokens, clock)
        if len(clock.ids) != new_tokens:
            raise RuntimeError(f"{self.runtime} produced {len(clock.ids)} tokens, asked for {new_tokens}")
        return TokenTrace(clock.start_ns, tuple(clock.stamps), tuple(clock.ids), len(prompt_ids), kv, how)

    def generate_batch(self, prompts: Sequence[Sequence[int]], new_tokens: int, *,
                       on_first_token: Sequence[Callable[[], None] | None] | None = None) -> list[TokenTrace]:
        """Several requests decoded together (prompts of one length, `new_tokens` forced for each, a fresh
        KV cache): one trace per request, stamped as its tokens come out of the shared forwards; request i's
        `on_first_token[i]` runs at its first token. One request is `generate`. `Unsupported` (with
        `batching`'s reason) where the runtime cannot batch."""
        hooks = list(on_first_token) if on_first_token is not None else [None] * len(prompts)
        if not prompts or len(hooks) != len(prompts):
            raise ValueError("generate_batch: one or more prompts, and one first-token hook per prompt")
        if len(prompts) == 1:
            return [self.generate(prompts[0], new_tokens, on_first_token=hooks[0])]
        if self.batching is not None:
            raise Unsupported(f"{self.runtime}: batches of {len(prompts)} requests: {self.batching}")
        if len({len(p) for p in prompts}) != 1:
            raise ValueError("generate_batch: the prompts must have one length (no padding is modelled)")
        for p in prompts:
            self._check(p, new_tokens)
        clocks = [TokenClock(h) for h in hooks]
        kv, how = self._decode_batch([list(p) for p in prompts], new_tokens, clocks)
        for c in clocks:
            if len(c.ids) != new_tokens:
                raise RuntimeError(f"{self.runtime} produced {len(c.ids)} tokens for a request, asked for {new_tokens}")
        per = None if kv is None else kv // len(prompts)
        how = f"{how}; the batch's cache / {len(prompts)} requests"
        return [TokenTrace(c.start_ns, tuple(c.stamps), tuple(c.ids), len(p), per, how) for c, p in zip(clocks, prompts)]

    def _decode_batch(self, prompts: list[list[int]], new_tokens: int,
                      clocks: list[TokenClock]) -> tuple[int | None, str]:
        """Run one batch, each request on its clock (all started right before the runtime's first work);
        return the whole batch's KV cache's measured bytes and how they were measured."""
        raise NotImplementedError

    def _decode(self, prompt_ids: Sequence[int], new_tokens: int, clock: TokenClock) -> tuple[int | None, str]:
        """Run one request on `clock` (start it right before the runtime's first work); return the KV
        cache's measured bytes and how they were measured."""
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
