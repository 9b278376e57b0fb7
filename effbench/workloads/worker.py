"""What runs inside the workers of a generative group (`task: generate`): preparing the model, timing one
round of every precision and prompt length of one model on one runtime (ABBA, request by request), and
each precision's own worker for memory and quality against FP32.

Workers answer in plain JSON (effbench.execution.workers): no runtime object crosses into the parent.
"""
from __future__ import annotations

import json
import os
import random
import time
import traceback
from pathlib import Path
from typing import Any

from effbench.errors import gist

# What the prompt and the quality text are: one sentence for every record
PROMPT_SOURCE = ("the first N tokens of Python's pydoc_data.topics prose (effbench.measure.generation.held_text), "
                 "the model's own tokenizer, no special tokens; the same ids on every runtime")
QUALITY_PROMPT_TOKENS = 32
QUALITY_NEW_TOKENS = 32


def prepare_llm(source: dict, model_id: str, base_dir: str, cache_dir: str) -> dict:
    """The model's local HF folder (built-ins are built once, a GGUF dequantised once, both cached)."""
    from effbench.models.llm import load_gguf, load_hf, resolve_llm
    kind, value = next(iter(source.items()))
    if kind == "hf":
        model = load_hf(Path(base_dir) / value, model_id=model_id)
    elif kind == "gguf":
        model = load_gguf(Path(base_dir) / value, cache_dir, model_id=model_id)
    else:
        model = resolve_llm(source, cache_dir)
    return json.loads(json.dumps(model.to_json(), default=str))


def _thread_state(threads: int) -> dict[str, Any]:
    """Threads are the suite's count, set in each runtime; stated with the CPUs this worker may use."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = []
    return {"threads": threads, "cpus_allowed": cpus, "loadavg_before": list(os.getloadavg())}


def import_runtime(runtime: str) -> None:
    """The modules the runtime's session imports, imported before a worker reads its baseline RSS (the
    import is not the model)."""
    import importlib

    from effbench.workloads.generate import session_class
    for mod in session_class(runtime).modules:
        importlib.import_module(mod)


def measure_generation(runtime: str, threads: int, options: dict, model: dict, members: list[dict],
                       new_tokens: int, requests: int, cache_dir: str, seed: int,
                       load_reversed: bool = False) -> dict:
    """One round of a generative group in this (fresh) worker.

    `members`: [{"key", "label", "precision", "prompt_tokens"}]. Every precision is loaded here (in reverse
    order on odd rounds), warmed up at each prompt length, then timed in cycles of A B C .. C B A: each
    request one fixed prompt, `new_tokens` forced, a fresh KV cache; each cycle's order shuffled by `seed`.
    A precision that cannot load or run is reported for its members; the others are still timed.
    """
    from effbench.measure.generation import stream_bandwidth
    from effbench.models.llm import LlmModel
    from effbench.workloads.generate import prompt_ids

    llm = LlmModel.from_json(model)
    state = _thread_state(threads)
    import_runtime(runtime)
    prompts = sorted({m["prompt_tokens"] for m in members})
    labels = list(dict.fromkeys(m["label"] for m in members))
    precision_of = {m["label"]: m["precision"] for m in members}
    sessions, status, load_s = open_sessions(runtime, llm, [(lb, precision_of[lb]) for lb in labels], load_reversed,
                                         threads=threads, cache_dir=cache_dir, max_context=max(prompts) + new_tokens,
                                         options=options)
    ids = {p: prompt_ids(llm, p) for p in prompts}
    for label in list(sessions):     # warm-up: first-call allocations at each prompt length
        try:
            for p in prompts:
                sessions[label].generate(ids[p], min(new_tokens, 4))
        except Exception as e:
            traceback.print_exc()
            status[label] = ("failed", f"warm-up request: {gist(e)}")
            sessions.pop(label).close()
    traces: dict[str, list] = {m["key"]: [] for m in members}
    cycle_of: dict[str, list[int]] = {m["key"]: [] for m in members}
    rng = random.Random(seed)
    timed = [lb for lb in labels if lb in sessions]
    for cycle in range(max(1, requests // 2)):
        order = timed[:]
        rng.shuffle(order)
        for label in order + order[::-1]:
            if label not in sessions:
                continue
            for p in (prompts if cycle % 2 == 0 else prompts[::-1]):
                key = _key(label, p)
                try:
                    traces[key].append(sessions[label].generate(ids[p], new_tokens))
                    cycle_of[key].append(cycle)
                except Exception as e:
                    traceback.print_exc()
                    status[label] = ("failed", f"request {len(traces[key]) + 1}: {gist(e)}")
                    sessions.pop(label).close()
                    break
    bandwidth = stream_bandwidth(256 * 2**20, repeats=5)
    state["loadavg_after"] = list(os.getloadavg())
    out = {m["key"]: (_member(sessions[m["label"]], traces[m["key"]], cycle_of[m["key"]], load_s.get(m["label"]))
                      if m["label"] not in status else
                      {"status": status[m["label"]][0], "reason": status[m["label"]][1]}) for m in members}
    for s in sessions.values():
        s.close()
    return {"members": out, "threads": state, "bandwidth": bandwidth.to_json()}


def open_sessions(runtime: str, llm, precisions: list[tuple[str, str]], reverse: bool, **kw) -> tuple[dict, dict, dict]:
    """Every precision's session (in reverse order on odd rounds: neither always loads first); one that
    cannot load is (status, reason) and the others still load."""
    from effbench.runners.base import Unsupported
    from effbench.workloads.generate import open_session
    sessions: dict[str, Any] = {}
    status: dict[str, tuple[str, str]] = {}
    load_s: dict[str, float] = {}
    for label, precision in (precisions[::-1] if reverse else precisions):
        t0 = time.perf_counter()
        try:
            sessions[label] = open_session(runtime, llm, precision, **kw)
            load_s[label] = time.perf_counter() - t0
        except Unsupported as e:
            status[label] = ("unsupported", str(e))
        except Exception as e:      # one precision's failure must not cost the others their measurement
            traceback.print_exc()
            status[label] = ("failed", gist(e))
    return sessions, status, load_s


def _member(session, traces: list, cycles: list[int], load_s: float | None) -> dict:
    """One precision at one prompt length: its figures, every request's own, and what the session ran."""
    from effbench.measure.generation import generation_figures
    timings = [t.timing() for t in traces]
    last = traces[-1]
    return {
        "status": "ok", "figures": generation_figures(timings),
        "per_request": {"ttft_ms": [t.ttft_ms for t in timings], "tpot_ms": [t.tpot_ms for t in timings],
                        "e2e_ms": [t.e2e_ms for t in timings],
                        "prefill_tokens_per_s": [t.prefill_tokens_per_s for t in timings],
                        "decode_tokens_per_s": [t.decode_tokens_per_s for t in timings], "cycle": cycles},
        "kv_cache_bytes_measured": last.kv_cache_bytes, "kv_measured": last.kv_measured,
        "kernel": session.kernel.to_json(), "weight_bytes": session.weight_bytes,
        "decode_weight_bytes": session.decode_weight_bytes, "info": {**session.info, "load_s": load_s},
    }


def _key(label: str, prompt_tokens: int) -> str:
    return f"{label}/p{prompt_tokens}"


def generation_profile(runtime: str, threads: int, options: dict, model: dict, precision: str,
                       prompt_tokens: int, new_tokens: int, quality_positions: int, reference_dir: str,
                       cache_dir: str) -> dict:
    """A precision's own worker, once per run: baseline and peak RSS around loading it and one request at
    the longest prompt (nothing else loaded), then its teacher-forced logits on held text. FP32 (run
    first) writes them to `reference_dir`; every other precision is scored against them."""
    import numpy as np

    from effbench.measure import memory
    from effbench.measure.generation import quality_vs_reference
    from effbench.models.llm import LlmModel
    from effbench.variants import reference_precision
    from effbench.workloads.generate import open_session, prompt_ids, quality_text_ids

    llm = LlmModel.from_json(model)
    import_runtime(runtime)
    baseline = memory.rss_bytes()
    session = open_session(runtime, llm, precision, threads=threads, cache_dir=cache_dir,
                           max_context=max(prompt_tokens + new_tokens, quality_positions + 1,
                                           QUALITY_PROMPT_TOKENS + QUALITY_NEW_TOKENS),
                           options=options)
    trace = session.generate(prompt_ids(llm, prompt_tokens), new_tokens)
    peak = memory.peak_rss_bytes()
    out: dict[str, Any] = {"memory": {"baseline_rss_bytes": baseline, "peak_rss_bytes": peak,
                                      "model_bytes": session.weight_bytes,
                                      "measured": f"this precision's own worker: load and one request of "
                                                  f"{prompt_tokens} + {new_tokens} tokens"},
                           "kv_cache_bytes_measured": trace.kv_cache_bytes, "kv_measured": trace.kv_measured}
    text = quality_text_ids(llm, quality_positions)
    logits = session.logits(text)
    continuation = session.generate(prompt_ids(llm, QUALITY_PROMPT_TOKENS), QUALITY_NEW_TOKENS).output_ids
    session.close()
    folder = Path(reference_dir)
    ref_logits, ref_cont = folder / "fp32-logits.npy", folder / "fp32-continuation.json"
    if precision == reference_precision():
        from effbench.measure.generation import perplexity
        folder.mkdir(parents=True, exist_ok=True)
        np.save(ref_logits, logits.astype(np.float32))
        ref_cont.write_text(json.dumps(list(continuation)))
        out["quality"] = {"reference": f"{runtime} fp32: {llm.reference}", "positions": len(text),
                          "perplexity": perplexity(logits, text) if llm.real_weights else None,
                          "note": "the reference the other precisions are scored against"}
        return out
    if not ref_logits.exists():
        out["quality"] = {"reason": "no FP32 reference on this runtime (its own worker did not finish)"}
        return out
    q = quality_vs_reference(np.load(ref_logits), logits, text, real_weights=llm.real_weights,
                             reference=f"{runtime} fp32: {llm.reference}",
                             ref_continuation=json.loads(ref_cont.read_text()), continuation=continuation)
    out["quality"] = {**q.to_json(), "text": "the last tokens of the held prose (prompts come from its start)",
                      "perplexity_note": None if llm.real_weights else
                      "no perplexity: random weights (it says nothing about quantization there)"}
    return out


AB_MIN_PAIRS = 6     # the A/B pass's request pairs per round at least (a median of ratios needs a few)


def measure_generation_pair(sides: list[dict], prompt_tokens: int, new_tokens: int, pairs: int, cache_dir: str,
                            load_reversed: bool = False) -> dict:
    """A/B mode's paired pass for one generative cell: the baseline's session (`sides[0]`) and the
    candidate's (`sides[1]`: {"runtime", "threads", "options", "model", "precision"}) loaded in this worker
    and sent the same request in alternating order (AB, BA, ...); each pair's candidate / baseline
    end-to-end latency is one ratio, their median the round's (`Record.paired_ratios`). TTFT and TPOT
    ratios come along. Timing only: memory and quality come from each side's own workers."""
    import statistics

    from effbench.models.llm import LlmModel
    from effbench.workloads.generate import open_session, prompt_ids
    sessions: dict[int, Any] = {}
    for i in ((1, 0) if load_reversed else (0, 1)):
        side = sides[i]
        import_runtime(side["runtime"])
        llm = LlmModel.from_json(side["model"])
        sessions[i] = (open_session(side["runtime"], llm, side["precision"], threads=side["threads"],
                                    cache_dir=cache_dir, max_context=prompt_tokens + new_tokens,
                                    options=side["options"]), prompt_ids(llm, prompt_tokens))
    for s, ids in sessions.values():          # warm-up: first-call allocations
        s.generate(ids, min(new_tokens, 4))
    ratios: dict[str, list[float]] = {"e2e_ms": [], "ttft_ms": [], "tpot_ms": []}
    for k in range(max(AB_MIN_PAIRS, pairs)):
        got = {}
        for i in ((0, 1) if k % 2 == 0 else (1, 0)):
            s, ids = sessions[i]
            got[i] = s.generate(ids, new_tokens).timing()
        for figure, values in ratios.items():
            a, b = getattr(got[0], figure), getattr(got[1], figure)
            if a and b:
                values.append(b / a)
    for s, _ in sessions.values():
        s.close()
    return {"ratio": statistics.median(ratios["e2e_ms"]), "ratios": ratios["e2e_ms"],
            "ttft_ratio": statistics.median(ratios["ttft_ms"]) if ratios["ttft_ms"] else None,
            "tpot_ratio": statistics.median(ratios["tpot_ms"]) if ratios["tpot_ms"] else None,
            "method": "candidate / baseline end-to-end request latency, the same request sent to both in "
                      "alternating order in one worker, median over pairs"}
