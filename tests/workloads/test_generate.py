"""llama-tiny end to end on every generative runtime (a missing one fails the test: `make test` installs them): forced output length, per-token stamps, a
fresh KV cache per request whose measured bytes match the analytic size, what each precision really runs
as, and agreement with torch FP32 (which checks the GGUF writer's and the ORT builder's weights)."""
import time

import pytest
from ebtest import require

from effbench.measure.generation import generation_figures, kl_mean, kv_cache_bytes, next_token_agreement
from effbench.models.llm import resolve_llm
from effbench.workloads.generate import (
    TokenClock,
    Unsupported,
    evaluate_quality,
    open_session,
    prompt_ids,
    quality_text_ids,
)
from effbench.workloads.sessions.torch import _torch_int4_weight_only

PROMPT, NEW = 16, 8


@pytest.fixture(scope="module")
def tiny(cache_dir):
    return resolve_llm("llama-tiny", cache_dir)


@pytest.fixture(scope="module")
def torch_fp32(tiny, cache_dir):
    s = open_session("torch", tiny, "fp32", threads=1, cache_dir=cache_dir, max_context=256)
    yield s
    s.close()


def _request_checks(trace, new_tokens=NEW):
    assert len(trace.output_ids) == new_tokens and len(trace.token_ns) == new_tokens   # forced length
    assert trace.start_ns < trace.token_ns[0] and list(trace.token_ns) == sorted(trace.token_ns)
    t = trace.timing()
    assert t.ttft_ms > 0 and t.tpot_ms > 0 and t.decode_tokens_per_s > 0


def test_prompt_is_fixed_ids(tiny):
    a, b = prompt_ids(tiny, PROMPT), prompt_ids(tiny, PROMPT)
    assert a == b and len(a) == PROMPT and all(0 <= i < 512 for i in a)
    assert set(quality_text_ids(tiny, 64)) - set(a)      # quality text is not the prompt


def test_torch_fp32_request(tiny, torch_fp32):
    prompt = prompt_ids(tiny, PROMPT)
    first, second = torch_fp32.generate(prompt, NEW), torch_fp32.generate(prompt, NEW)
    _request_checks(first)
    assert first.output_ids == second.output_ids           # greedy, fresh cache: the same work each trial
    # the cache holds prompt + new - 1 positions (the last token is never fed back):
    # 2 x 2 layers x 2 KV heads x 16 head dim x 23 positions x 4 bytes = 11,776
    assert first.kv_cache_bytes == 11_776
    assert kv_cache_bytes(layers=2, kv_heads=2, head_dim=16, context=PROMPT + NEW - 1, bytes_per_element=4) == 11_776
    f = generation_figures([first.timing(), second.timing()])
    assert f["new_tokens"] == NEW and f["prompt_tokens"] == PROMPT and set(f["itl_ms"]) == {"p50", "p90", "p99"}
    assert torch_fp32.kernel.quantization == "none" and torch_fp32.info["torch_threads"] == 1


def test_the_first_token_hook_fires_once_right_after_the_first_token(tiny, torch_fp32):
    """LoadGen's FirstTokenComplete is called from on_first_token: once, after the first token's stamp and
    before the second token exists; on_token sees every token with its own stamp."""
    first, each = [], []
    trace = torch_fp32.generate(prompt_ids(tiny, PROMPT), NEW, on_first_token=lambda: first.append(time.perf_counter_ns()),
                                on_token=lambda i, tok, ns: each.append((i, tok, ns)))
    assert len(first) == 1 and trace.token_ns[0] <= first[0] <= trace.token_ns[1]
    assert [e[0] for e in each] == list(range(NEW))
    assert tuple(e[1] for e in each) == trace.output_ids and tuple(e[2] for e in each) == trace.token_ns
    assert torch_fp32.concurrency == 1 and "one request at a time" in torch_fp32.serving


def test_token_clock_without_hooks_only_stamps():
    clock = TokenClock()
    clock.start()
    for tok in (5, 7):
        clock.token(tok)
    assert clock.ids == [5, 7] and clock.start_ns <= clock.stamps[0] <= clock.stamps[1]


@pytest.mark.parametrize("precision, quantization", [("bf16", "none"), ("int8", "weight-and-activation"),
                                                     ("int4", "weight-only")])
def test_torch_precisions(tiny, cache_dir, torch_fp32, precision, quantization):
    s = open_session("torch", tiny, precision, threads=1, cache_dir=cache_dir, max_context=256)
    trace = s.generate(prompt_ids(tiny, PROMPT), NEW)
    _request_checks(trace)
    assert s.kernel.quantization == quantization
    assert s.decode_weight_bytes < torch_fp32.decode_weight_bytes
    if precision == "bf16":
        assert trace.kv_cache_bytes == 11_776 // 2
    q = evaluate_quality(torch_fp32, s, positions=64, prompt_tokens=PROMPT, new_tokens=NEW)
    assert 0.5 <= q.next_token_agreement <= 1.0 and q.kl_mean >= 0
    assert q.perplexity is None and "random weights" in q.reference      # random weights: no perplexity


def test_torch_int4_names_the_layers_it_cannot_pack():
    import torch
    net = torch.nn.Sequential(torch.nn.Linear(64, 8))            # out_features 8: the kernel wants % 16
    with pytest.raises(Unsupported, match="out_features % 16"):
        _torch_int4_weight_only(net, 32)


def test_open_session_refuses_bad_arguments(tiny, cache_dir):
    with pytest.raises(ValueError, match="threads"):
        open_session("torch", tiny, "fp32", threads=0, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="precision"):
        open_session("torch", tiny, "int3", threads=1, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="runtime"):
        open_session("tensorrt", tiny, "fp32", threads=1, cache_dir=cache_dir)


def test_llamacpp_f32_matches_torch(tiny, cache_dir, torch_fp32):
    require("llama_cpp", "llm")
    s = open_session("llamacpp", tiny, "fp32", threads=1, cache_dir=cache_dir, max_context=256)
    try:
        ids = quality_text_ids(tiny, 64)
        ref, got = torch_fp32.logits(ids), s.logits(ids)
        # our GGUF writer permutes Q/K rows for GGML's rotary layout: a wrong permutation shows here
        assert kl_mean(ref, got) < 1e-6 and next_token_agreement(ref, got) >= 0.98
        first = []
        trace = s.generate(prompt_ids(tiny, PROMPT), NEW, on_first_token=lambda: first.append(time.perf_counter_ns()))
        _request_checks(trace)
        assert len(first) == 1 and trace.token_ns[0] <= first[0] <= trace.token_ns[1]
        assert "n_seq_max 1" in s.serving       # why llama.cpp serves one request at a time, in its record
        # F16 KV cache, prompt + new - 1 positions: 2 x 2 x 2 x 16 x 23 x 2 = 5,888 bytes, plus the
        # state's small header
        assert 0 <= trace.kv_cache_bytes - 5_888 < 2048
        assert s.kernel.weights == "F32" and s.kernel.kv_cache == "f16"
    finally:
        s.close()


@pytest.mark.parametrize("precision, gguf_type", [("int8", "Q8_0"), ("int4", "Q4_0"), ("fp16", "F16")])
def test_llamacpp_gguf_types(tiny, cache_dir, precision, gguf_type):
    require("llama_cpp", "llm")
    s = open_session("llamacpp", tiny, precision, threads=1, cache_dir=cache_dir, max_context=256)
    try:
        _request_checks(s.generate(prompt_ids(tiny, PROMPT), NEW))
        assert s.kernel.weights == gguf_type and s.info["n_threads"] == 1
        assert s.kernel.quantization == ("none" if gguf_type == "F16" else "weight-only")
        assert gguf_type in s.kernel.detail["tensor_types"]       # read back from the file llama.cpp ran
    finally:
        s.close()


@pytest.mark.slow
def test_ort_genai_fp32_matches_torch_and_int4_records_its_accuracy_level(tiny, cache_dir, torch_fp32):
    require("onnxruntime_genai", "llm")
    fp32 = open_session("onnxruntime-genai", tiny, "fp32", threads=1, cache_dir=cache_dir, max_context=256)
    ids = quality_text_ids(tiny, 64)
    assert kl_mean(torch_fp32.logits(ids), fp32.logits(ids)) < 1e-6
    trace = fp32.generate(prompt_ids(tiny, PROMPT), NEW)
    _request_checks(trace)
    # past and present share one buffer of prompt + new positions: 2 x 2 x 2 x 16 x 24 x 4 = 12,288
    assert trace.kv_cache_bytes == 12_288
    assert fp32.info["session_options"]["intra_op_num_threads"] == 1
    int4 = open_session("onnxruntime-genai", tiny, "int4", threads=1, cache_dir=cache_dir, max_context=256)
    _request_checks(int4.generate(prompt_ids(tiny, PROMPT), NEW))
    assert int4.kernel.quantization == "weight-only"
    assert int4.kernel.detail["accuracy_level"] == [4] and int4.kernel.detail["bits"] == [4]
    assert int4.kernel.detail["block_size"] == [32] and int4.kernel.detail["nodes"] > 0
    assert int4.decode_weight_bytes < fp32.decode_weight_bytes / 3


@pytest.mark.slow
def test_ort_genai_bf16_on_cpu_is_unsupported_with_the_runtimes_reason(tiny, cache_dir):
    require("onnxruntime_genai", "llm")
    # onnxruntime-genai 0.18's builder makes a bf16 graph, but the CPU provider has no bf16 Where kernel
    with pytest.raises(Unsupported, match="onnxruntime-genai") as e:
        open_session("onnxruntime-genai", tiny, "bf16", threads=1, cache_dir=cache_dir, max_context=256)
    assert "bf16" in str(e.value) and len(str(e.value)) > 40


def _two_prompts(tiny):
    """Two different prompts of one length: the first 16 held tokens and the 16 after them."""
    ids = prompt_ids(tiny, 2 * PROMPT)
    return [ids[:PROMPT], ids[PROMPT:]]


def _batch_matches_one_at_a_time(session, prompts):
    hooks = []
    traces = session.generate_batch(prompts, NEW, on_first_token=[lambda i=i: hooks.append(i) for i in range(2)])
    assert len(traces) == 2 and sorted(hooks) == [0, 1]               # each request's first token reported once
    for p, t in zip(prompts, traces):
        _request_checks(t)
        assert t.output_ids == session.generate(p, NEW).output_ids   # greedy: a batch decodes what one request does
    assert traces[0].output_ids != traces[1].output_ids               # two requests, not one copied
    assert traces[0].start_ns == traces[1].start_ns                   # one prefill for both
    return traces


def test_torch_decodes_a_batch_of_requests_as_it_decodes_each(tiny, torch_fp32):
    traces = _batch_matches_one_at_a_time(torch_fp32, _two_prompts(tiny))
    assert torch_fp32.batching is None
    # the batch's cache holds both requests: per request the same 11,776 bytes as one request alone
    assert traces[0].kv_cache_bytes == 11_776 and "/ 2 requests" in traces[0].kv_measured
    assert len(torch_fp32.generate_batch([prompt_ids(tiny, PROMPT)], NEW)) == 1
    with pytest.raises(ValueError, match="one length"):
        torch_fp32.generate_batch([prompt_ids(tiny, PROMPT), prompt_ids(tiny, PROMPT + 1)], NEW)


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_llamacpp_decodes_a_batch_of_requests_as_it_decodes_each(tiny, cache_dir, precision):
    require("llama_cpp", "llm")
    s = open_session("llamacpp", tiny, precision, threads=1, cache_dir=cache_dir, max_context=256)
    try:
        assert s.batching is None
        alone = s.generate(prompt_ids(tiny, PROMPT), NEW)
        traces = _batch_matches_one_at_a_time(s, _two_prompts(tiny))
        # one sequence's KV rows per request, as one request alone holds them
        assert traces[0].kv_cache_bytes == alone.kv_cache_bytes and "/ 2 requests" in traces[0].kv_measured
        ids = prompt_ids(tiny, 3 * PROMPT)
        three = s.generate_batch([ids[i * PROMPT:(i + 1) * PROMPT] for i in range(3)], NEW)
        assert [t.output_ids for t in three[:2]] == [t.output_ids for t in traces]   # a larger size: a new context
        again = s.generate_batch(_two_prompts(tiny), NEW)                             # a smaller one reuses it
        assert [t.output_ids for t in again] == [t.output_ids for t in traces]
        assert s.generate(prompt_ids(tiny, PROMPT), NEW).output_ids == alone.output_ids   # the session's own context
    finally:
        s.close()


@pytest.mark.slow
def test_ort_genai_decodes_a_batch_of_requests_as_it_decodes_each(tiny, cache_dir):
    require("onnxruntime_genai", "llm")
    s = open_session("onnxruntime-genai", tiny, "fp32", threads=1, cache_dir=cache_dir, max_context=256)
    try:
        traces = _batch_matches_one_at_a_time(s, _two_prompts(tiny))
        assert traces[0].kv_cache_bytes == 12_288          # the batch's buffer / 2: one request's 24 positions
    finally:
        s.close()
