"""llama.cpp: llama-cpp-python's low-level eval on a GGUF file (written or quantized once and cached).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from effbench.models.gguf_writer import write_gguf
from effbench.runners.llamacpp import LlamaCppRunner
from effbench.variants.generative import LLAMACPP_QUANTIZED_COMPUTE
from effbench.workloads.session import GenerationSession, Kernel, TokenClock, Unsupported, register

LLAMA_FTYPE = {"F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K_M": 15, "BF16": 32}   # llama.h llama_ftype
GGUF_BITS = {"F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8, "Q4_0": 4, "Q4_1": 4, "Q4_K": 4, "Q4_K_M": 4}


@register
class LlamaCppSession(GenerationSession):
    """llama-cpp-python's low-level eval on a GGUF: the prompt in one batch, then one token per eval,
    greedy argmax on the last logits. Quantized types store weights in blocks of 32 (Q8_0, Q4_0) and the
    CPU dot products quantize activations to Q8 blocks on the fly; the KV cache is F16 by default.
    """

    runtime = LlamaCppRunner.name
    modules = (LlamaCppRunner.runtime_module,)
    serving = ("one request at a time: one llama.cpp context holds one sequence's KV cache (n_seq_max 1) and is "
               "not safe to call from two threads; the others wait in the system under test's queue")
    # a batch runs in a second context on the same loaded model, made with n_seq_max = the batch size (one KV
    # cache shared by the sequences, kv_unified): one llama_batch holds every prompt (each its own seq_id),
    # then one token per sequence per llama_decode
    batching = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        try:
            import llama_cpp
        except ImportError:
            raise Unsupported("llama-cpp-python is not installed (the [llm] extra compiles it once, ~5-10 min)") from None
        self._lc = llama_cpp
        self._batch_ctx = None
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
        self.kernel = Kernel(self.runtime, self.precision, weights=weights,
                             quantization="weight-only" if quantized else "none",
                             compute=("integer dot products with activations quantized to Q8 blocks on the fly"
                                      if quantized else gtype.lower()),
                             kv_cache="f16", kv_bytes_per_element=2,
                             detail={"gguf": str(path), "origin": origin, "tensor_types": meta["tensor_types"]},
                             compute_precision=LLAMACPP_QUANTIZED_COMPUTE if quantized else self.precision)
        self.weight_bytes, self.decode_weight_bytes = _gguf_weight_bytes(path)
        self.info.update({"llama_cpp_python": getattr(llama_cpp, "__version__", None), "gguf_type": gtype,
                          # the CPU features the build uses (make install builds AVX2, portable, no AMX)
                          "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
                          "n_threads": self.threads, "n_ctx": self.max_context})

    def _gguf(self) -> tuple[Path, str, str]:
        model = self.model
        gtype = str(self.options.get("gguf_type") or self.spec.gguf_type).upper()
        if gtype not in GGUF_BITS:
            raise Unsupported(f"llama.cpp GGUF type {gtype} is not one effbench builds; use one of {sorted(GGUF_BITS)}")
        bits = self.spec.weight_bits
        if GGUF_BITS[gtype] != bits:
            raise Unsupported(f"GGUF type {gtype} is not {self.precision}")
        # A GGUF-sourced model runs as it is at its own precision (SmolLM2: Q4_1 for int4).
        if model.gguf_path and model.gguf_type and GGUF_BITS.get(model.gguf_type) == bits \
                and not self.options.get("gguf_type"):
            return Path(model.gguf_path), model.gguf_type, "the source GGUF as it is"
        folder = self.cache_dir / "llm-gguf" / model.fingerprint
        folder.mkdir(parents=True, exist_ok=True)
        f32 = folder / "F32.gguf"
        origin = "written from the HF folder by effbench.models.gguf_writer.write_gguf"
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

    def _greedy(self, ctx, i: int = -1) -> int:
        """The argmax of the logits llama.cpp kept for batch position `i` of `ctx` (-1: the last)."""
        ptr = self._lc.llama_get_logits_ith(ctx.ctx, i)
        return int(np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).argmax())

    def _clear(self) -> None:
        self._llm._ctx.kv_cache_clear()     # a fresh KV cache per request
        self._llm.n_tokens = 0

    def _decode(self, prompt_ids: Sequence[int], new_tokens: int, clock: TokenClock) -> tuple[int | None, str]:
        llm = self._llm
        self._clear()
        clock.start()
        llm.eval(list(prompt_ids))
        tok = self._greedy(llm._ctx)
        clock.token(tok)
        for _ in range(new_tokens - 1):
            llm.eval([tok])
            tok = self._greedy(llm._ctx)
            clock.token(tok)
        kv = int(self._lc.llama_state_seq_get_size(llm._ctx.ctx, 0))
        return kv, "llama_state_seq_get_size: the sequence's KV rows in use (plus a small header)"

    def _decode_batch(self, prompts: list[list[int]], new_tokens: int,
                      clocks: list[TokenClock]) -> tuple[int | None, str]:
        lc = self._lc
        ctx, batch = self._batch_context(len(prompts))
        n, p = len(prompts), len(prompts[0])
        ctx.kv_cache_clear()     # a fresh KV cache per batch
        batch.reset()
        for i, ids in enumerate(prompts):
            batch.add_sequence(ids, i, logits_all=False)     # positions 0..p-1 of sequence i, logits at its last
        t0 = time.perf_counter_ns()
        for c in clocks:
            c.start_ns = t0
        ctx.decode(batch)
        toks = [self._greedy(ctx, (i + 1) * p - 1) for i in range(n)]
        for c, t in zip(clocks, toks):
            c.token(t)
        b = batch.batch
        for step in range(new_tokens - 1):
            b.n_tokens = n
            for i, t in enumerate(toks):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, p + step, 1, True
                b.seq_id[i][0] = i
            ctx.decode(batch)
            toks = [self._greedy(ctx, i) for i in range(n)]
            for c, t in zip(clocks, toks):
                c.token(t)
        kv = sum(int(lc.llama_state_seq_get_size(ctx.ctx, i)) for i in range(n))
        return kv, "llama_state_seq_get_size summed over the batch's sequences"

    def _batch_context(self, n: int):
        """A context for up to `n` sequences on the loaded model, made when a batch is larger than any before
        (so a LoadGen remainder batch, smaller than the sweep's size, reuses the one made at warm-up)."""
        if self._batch_ctx is not None and self._batch_ctx[0] >= n:
            return self._batch_ctx[1:]
        self._close_batch_context()
        from llama_cpp import _internals
        params = self._lc.llama_context_params.from_buffer_copy(self._llm.context_params)
        params.n_seq_max = n
        params.kv_unified = True
        # the whole batch's prompts in one llama_batch; llama.cpp computes it in micro-batches of the single
        # context's size (memory for the attention scores stays that of one request's prefill)
        params.n_ctx = params.n_batch = n * self.max_context
        params.n_ubatch = self.max_context
        with _quiet_fds():
            ctx = _internals.LlamaContext(model=self._llm._model, params=params, verbose=False)
            batch = _internals.LlamaBatch(n_tokens=n * self.max_context, embd=0, n_seq_max=1, verbose=False)
        self._batch_ctx = (n, ctx, batch)
        return ctx, batch

    def _close_batch_context(self) -> None:
        if getattr(self, "_batch_ctx", None) is not None:
            _, ctx, batch = self._batch_ctx
            batch.close()
            ctx.close()
        self._batch_ctx = None

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
        self._close_batch_context()
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
