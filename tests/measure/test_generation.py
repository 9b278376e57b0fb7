"""Generation figures from planted per-token timestamps, the KV cache's analytic size, bandwidth
utilization and quality against FP32 from planted logits: every expected value worked out by hand."""
import math

import numpy as np
import pytest

from effbench.measure.generation import (
    RequestTiming,
    bandwidth_utilization,
    decode_bytes_per_token,
    energy_per_token_mj,
    first_divergence,
    generation_figures,
    held_text,
    itl_percentiles_ms,
    kl_mean,
    kv_cache_bytes,
    next_token_agreement,
    perplexity,
    quality_vs_reference,
    stream_bandwidth,
)

MS = 1_000_000  # ns


def test_planted_even_request():
    # prompt of 100 tokens in at 0; first token at 10 ms, then one every 2 ms: 5 tokens, last at 18 ms
    r = RequestTiming(start_ns=0, token_ns=(10 * MS, 12 * MS, 14 * MS, 16 * MS, 18 * MS), prompt_tokens=100)
    assert r.new_tokens == 5
    assert r.ttft_ms == 10.0
    assert r.e2e_ms == 18.0
    assert r.tpot_ms == 2.0                      # (18 - 10) / (5 - 1)
    assert r.itl_ms == (2.0, 2.0, 2.0, 2.0)
    assert r.prefill_tokens_per_s == pytest.approx(10_000.0)   # 100 tokens / 0.010 s
    assert r.decode_tokens_per_s == pytest.approx(500.0)       # 1 / 2 ms


def test_planted_uneven_request_tpot_is_the_mean_interval_not_the_median():
    start = 7 * MS
    r = RequestTiming(start_ns=start, token_ns=tuple(start + t * MS for t in (5, 6, 8, 11, 15)), prompt_tokens=8)
    assert r.ttft_ms == 5.0
    assert r.itl_ms == (1.0, 2.0, 3.0, 4.0)
    assert r.tpot_ms == 2.5                      # (15 - 5) / 4, while the median interval is 2.5 too...
    r2 = RequestTiming(start_ns=0, token_ns=(5 * MS, 6 * MS, 7 * MS, 8 * MS, 20 * MS), prompt_tokens=8)
    assert r2.tpot_ms == 3.75                    # ...here (20 - 5) / 4 = 3.75 against a median interval of 1


def test_one_token_has_no_tpot():
    r = RequestTiming(0, (3 * MS,), 4)
    assert r.tpot_ms is None and r.decode_tokens_per_s is None and r.itl_ms == ()


def test_timestamps_must_not_go_backwards():
    with pytest.raises(ValueError):
        RequestTiming(10 * MS, (5 * MS,), 4)
    with pytest.raises(ValueError):
        RequestTiming(0, (5 * MS, 4 * MS), 4)


def test_itl_is_pooled_over_tokens_of_all_requests():
    a = RequestTiming(0, (10 * MS, 11 * MS, 12 * MS), 4)           # intervals 1, 1
    b = RequestTiming(0, (10 * MS, 14 * MS, 24 * MS), 4)           # intervals 4, 10
    p = itl_percentiles_ms([a, b])
    pooled = np.array([1.0, 1.0, 4.0, 10.0])
    assert p["p50"] == pytest.approx(2.5)                           # between 1 and 4
    assert p["p90"] == pytest.approx(float(np.percentile(pooled, 90)))  # 8.2
    assert p["p90"] == pytest.approx(8.2)
    assert p["p99"] == pytest.approx(9.82)


def test_figures_are_medians_over_requests_and_refuse_mixed_work():
    reqs = [RequestTiming(0, tuple((t0 + 2 * i) * MS for i in range(4)), 16) for t0 in (10, 20, 30)]
    f = generation_figures(reqs)
    assert f["ttft_ms"] == 20.0 and f["tpot_ms"] == 2.0 and f["e2e_ms"] == 26.0
    assert f["prompt_tokens"] == 16 and f["new_tokens"] == 4 and f["requests"] == 3
    with pytest.raises(ValueError):
        generation_figures([RequestTiming(0, (MS,), 16), RequestTiming(0, (MS,), 32)])


def test_kv_cache_bytes_smollm2_shape_at_640_fp16():
    # SmolLM2-135M: 30 layers, 3 KV heads of dim 64. Context 640, fp16 (2 bytes), batch 1:
    # 2 (K,V) x 30 x 1 x 3 x 64 x 640 x 2 = 60 x 3 = 180; x 64 = 11,520; x 640 = 7,372,800; x 2 = 14,745,600
    assert kv_cache_bytes(layers=30, kv_heads=3, head_dim=64, context=640, bytes_per_element=2) == 14_745_600
    assert kv_cache_bytes(layers=30, kv_heads=3, head_dim=64, context=640, bytes_per_element=2, batch=4) == 58_982_400


def test_bandwidth_utilization():
    # 20 GB/s and 1 GB read per token: the limit is 20 tokens/s; 10 measured is half of it
    assert bandwidth_utilization(10.0, 20e9, 1_000_000_000) == pytest.approx(0.5)
    assert decode_bytes_per_token(540_000_000, 14_745_600) == 554_745_600
    with pytest.raises(ValueError):
        bandwidth_utilization(10.0, 0, 1)


def test_energy_per_token():
    assert energy_per_token_mj(640.0, 64) == 10.0


def test_stream_bandwidth_says_how_it_measured():
    bw = stream_bandwidth(buffer_bytes=8 * 2**20, repeats=2)
    assert bw.bytes_per_s > 1e8 and bw.buffer_bytes == 8 * 2**20 and len(bw.samples_s) == 2
    assert "warm-up" in bw.method and "read+write" in bw.method


def test_agreement_and_kl_on_planted_logits():
    ref = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [1.0, 0.0]])
    got = np.array([[0.0, math.log(3)], [5.0, 0.0], [0.0, 5.0], [0.0, 1.0]])
    # top-1: position 0 is a tie in ref (argmax 0) vs 1 in got; position 3 flips: 2 of 4 agree
    assert next_token_agreement(ref, got) == 0.5
    assert next_token_agreement(ref, ref) == 1.0
    assert kl_mean(ref, ref) == pytest.approx(0.0, abs=1e-12)
    # position 0: KL([.5,.5] || [.25,.75]) = 0.5 ln 2 + 0.5 ln(2/3) = 0.5 ln(4/3)
    # position 3: KL(softmax[1,0] || softmax[0,1]) = (p - q) * 1 with p = sigmoid(1), q = 1 - p: (2p - 1)
    p = 1 / (1 + math.exp(-1))
    expected = (0.5 * math.log(4 / 3) + (2 * p - 1)) / 4
    assert kl_mean(ref, got) == pytest.approx(expected, rel=1e-12)


def test_perplexity_of_uniform_logits_is_the_vocabulary():
    assert perplexity(np.zeros((10, 8)), [i % 8 for i in range(10)]) == pytest.approx(8.0)
    logits = np.full((3, 4), -1e9)
    logits[0, 2] = logits[1, 3] = 0.0           # certain of the right next tokens
    assert perplexity(logits, [1, 2, 3]) == pytest.approx(1.0)


def test_first_divergence():
    assert first_divergence([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert first_divergence([1, 2, 3], [1, 2, 3, 4]) is None
    assert first_divergence([5], [6]) == 0


def test_quality_has_no_perplexity_for_random_weights():
    ref = np.random.default_rng(0).normal(size=(6, 10))
    q = quality_vs_reference(ref, ref, list(range(6)), real_weights=False, reference="FP32 random weights",
                             ref_continuation=[1, 2], continuation=[1, 3])
    assert q.perplexity is None and q.reference_perplexity is None
    assert q.next_token_agreement == 1.0 and q.first_divergence == 1 and q.positions == 6
    real = quality_vs_reference(ref, ref, list(range(6)), real_weights=True, reference="FP32")
    assert real.perplexity == pytest.approx(real.reference_perplexity) and real.first_divergence is None


def test_held_text_is_prose():
    text = held_text()
    assert len(text.split()) > 20_000
    assert "assert" in text and ">>>" not in text
    assert all(not p[0].isspace() for p in text.split("\n\n"))
    assert text == held_text()                   # deterministic: topics in sorted order
