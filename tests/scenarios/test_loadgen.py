"""Real MLPerf LoadGen runs over tiny numpy calls whose service time is a known sleep: LoadGen's verdict
and the figures parsed from its logs must agree with what the calls can do."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from effbench.scenarios.loadgen import (
    LoadGenResult,
    LoadGenSettings,
    SUTError,
    find_max_qps,
    parse_logs,
    run_loadgen,
    run_loadgen_tokens,
    server_runner,
)

W = np.random.default_rng(0).random((64, 64), dtype=np.float32)
# A sleep overshoots by tens of microseconds on a quiet machine and by a few ms on a busy 2-core one.
SLACK_MS = 3.0


def numpy_call(batch: int, sleep_ms: float):
    """A tiny model: a 64x64 matmul per sample, then a known service time."""
    x = np.ones((batch, 64), dtype=np.float32)

    def call() -> None:
        (x @ W).sum()
        time.sleep(sleep_ms / 1e3)
    return call


def test_offline_valid_and_bounded_by_the_calls(tmp_path):
    sleep_ms, batch, threads = 4.0, 8, 2
    s = LoadGenSettings(scenario="offline", min_duration_ms=500, min_query_count=64)
    r = run_loadgen({batch: numpy_call(batch, sleep_ms), 1: numpy_call(1, sleep_ms)}, s, tmp_path,
                    qsl_samples=64, threads=threads)
    assert r.valid and r.constraints["Min duration satisfied"]
    ceiling = threads * batch / (sleep_ms / 1e3)   # samples/s if every call took exactly its sleep
    assert 0.4 * ceiling < r.samples_per_s < ceiling
    assert r.settings.expected_qps is not None     # estimated from the warmup, and recorded
    assert Path(r.summary_path) == tmp_path / "mlperf_log_summary.txt" and Path(r.summary_path).exists()
    assert Path(r.detail_path).exists() and r.detail_trimmed is None
    assert "Samples per second" in Path(r.summary_path).read_text()
    assert r.loadgen_version.startswith("6.") and r.errors == ()
    assert r.effective["performance_sample_count"] == "64" and r.effective["qsl_rng_seed"] == str(s.qsl_rng_seed)
    assert LoadGenResult.from_json(json.loads(json.dumps(r.to_json()))) == r


def test_server_valid_at_a_low_rate_with_the_calls_latency(tmp_path):
    # 4 workers at 400 qps: each busy a fifth of the time, so queueing adds little to the 2 ms; 800 queries
    # let LoadGen's early stopping bound p99 with one query over the bound (662 needed)
    sleep_ms = 2.0
    s = LoadGenSettings(scenario="server", target_qps=400, latency_bound_ms=50, min_duration_ms=500,
                        min_query_count=800)
    r = run_loadgen({1: numpy_call(1, sleep_ms)}, s, tmp_path, qsl_samples=32, threads=4)
    assert r.valid, (r.constraints, r.recommendations)
    assert r.early_stopping == ("* Run successful.",) and r.early_stopping_met
    assert sleep_ms <= r.latency_ms["p50"] < sleep_ms + SLACK_MS
    assert r.latency_ms["min"] >= sleep_ms
    assert r.percentile_ms == r.latency_ms["p99"] <= 50
    assert r.queries >= 800 and r.overlatency_queries is not None
    assert 0.8 * 400 < r.completed_qps < 1.2 * 400
    assert "LoadGen 6." in r.generator and "not an MLPerf result" in r.generator


def test_server_invalid_far_above_what_the_call_serves(tmp_path):
    # one worker at 5 ms per call serves at most 200 qps; LoadGen offers 2000
    base = LoadGenSettings(scenario="server", target_qps=1, latency_bound_ms=20, min_duration_ms=1000,
                           min_query_count=100)
    t0 = time.monotonic()
    r = server_runner({1: numpy_call(1, 5.0)}, base, tmp_path, qsl_samples=32, threads=1)(2000)
    assert time.monotonic() - t0 < 10  # the backlog cap ended it instead of draining 2000 queries
    assert not r.valid
    assert r.constraints["Performance constraints satisfied"] is False
    assert r.latency_ms["p99"] > 20
    assert any("Reduce target QPS" in x for x in r.recommendations)
    assert r.settings.target_qps == 2000 and (tmp_path / "qps-2000" / "mlperf_log_summary.txt").exists()


def test_single_stream_early_stopping_estimate(tmp_path):
    sleep_ms = 2.0
    s = LoadGenSettings(scenario="single-stream", min_duration_ms=300, min_query_count=100)
    r = run_loadgen({1: numpy_call(1, sleep_ms)}, s, tmp_path, qsl_samples=16)
    assert r.valid and r.target_percentile == 90
    assert sleep_ms <= r.target_percentile_ms < sleep_ms + SLACK_MS
    # LoadGen's early-stopping p90 estimate sits at or above its p90
    assert r.target_percentile_ms <= r.early_stopping_ms["p90"] < sleep_ms + 2 * SLACK_MS
    assert any("Early stopping 90.0th percentile estimate" in x for x in r.early_stopping)
    assert r.qps_without_overhead < 1e3 / sleep_ms


def test_multi_stream_query_of_8_samples_runs_as_one_batch(tmp_path):
    # bound at 8: LoadGen's 8-sample query is one 1 ms call; bound at 1 only, it would be eight
    s = LoadGenSettings(scenario="multi-stream", min_duration_ms=300, min_query_count=662)
    r = run_loadgen({8: numpy_call(8, 1.0)}, s, tmp_path, qsl_samples=64, threads=1)
    assert r.valid, (r.constraints, r.recommendations)
    assert r.effective["samples_per_query"] == "8" and r.target_percentile == 99
    assert 1.0 <= r.latency_ms["p50"] < 1.0 + SLACK_MS
    assert r.target_percentile_ms == r.latency_ms["p99"]
    assert r.sample_latency_ms["p50"] <= r.latency_ms["p50"]  # a sample ends no later than its query


def fake_generator(prefill_ms: float, step_ms: float, tokens: int):
    def generate(first_token) -> int:
        time.sleep(prefill_ms / 1e3)
        first_token()
        for _ in range(tokens - 1):
            time.sleep(step_ms / 1e3)
        return tokens
    return generate


def test_token_latencies_in_the_server_scenario(tmp_path):
    prefill, step, n = 5.0, 1.0, 8
    s = LoadGenSettings(scenario="server", target_qps=150, use_token_latencies=True, ttft_ms=100, tpot_ms=20,
                        min_duration_ms=500, min_query_count=500)
    r = run_loadgen_tokens(fake_generator(prefill, step, n), s, tmp_path, qsl_samples=16, threads=4)
    t = r.tokens
    assert r.valid and t.ttft_met and t.tpot_met, (r.constraints, r.recommendations)
    assert prefill <= t.ttft_ms["p50"] < prefill + SLACK_MS
    assert step <= t.tpot_ms["p50"] < step + 1.0
    assert t.ttft_ms["p50"] < t.tpot_ms["p50"] * n
    # end to end = TTFT + (n - 1) x TPOT, as LoadGen defines TPOT
    assert abs(r.latency_ms["p50"] - (t.ttft_ms["p50"] + (n - 1) * t.tpot_ms["p50"])) < SLACK_MS
    assert t.tokens_per_s == pytest.approx(n * r.completed_qps, rel=0.1)
    assert t.ttft_early_stopping == ("* Run successful.",) == t.tpot_early_stopping


def test_token_latencies_tpot_bound_missed(tmp_path):
    s = LoadGenSettings(scenario="server", target_qps=150, use_token_latencies=True, ttft_ms=100, tpot_ms=0.5,
                        min_duration_ms=300, min_query_count=100)
    r = run_loadgen_tokens(fake_generator(5.0, 1.0, 8), s, tmp_path, qsl_samples=16, threads=4)
    assert not r.valid
    assert r.tokens.tpot_met is False and r.tokens.ttft_met is True
    assert any("TPOT constrain not met" in x for x in r.recommendations)


def test_a_failing_call_raises_instead_of_hanging(tmp_path):
    calls = {1: numpy_call(1, 0.1)}
    runs = [0]

    def flaky() -> None:
        runs[0] += 1
        if runs[0] > 5:
            raise ValueError("boom")
    with pytest.raises(SUTError, match="boom"):
        run_loadgen({1: flaky}, LoadGenSettings(scenario="single-stream", min_duration_ms=100,
                                                min_query_count=20), tmp_path, qsl_samples=4)
    (tmp_path / "b" / "audit.config").parent.mkdir()
    (tmp_path / "b" / "audit.config").write_text("*.*.min_query_count = 1\n")
    with pytest.raises(ValueError, match="audit.config"):
        run_loadgen(calls, LoadGenSettings(scenario="single-stream"), tmp_path / "b", qsl_samples=4)


def test_settings_map_onto_test_settings():
    import mlperf_loadgen as lg
    s = LoadGenSettings(scenario="server", target_qps=250, latency_bound_ms=15, percentile=97,
                        min_duration_ms=2000, min_query_count=1000, max_async_queries=300)
    ts = s.test_settings()
    assert ts.scenario == lg.TestScenario.Server and ts.mode == lg.TestMode.PerformanceOnly
    assert ts.server_target_qps == 250 and ts.server_target_latency_ns == 15_000_000
    assert ts.server_target_latency_percentile == pytest.approx(0.97)
    assert (ts.min_duration_ms, ts.min_query_count, ts.server_max_async_queries) == (2000, 1000, 300)
    assert ts.schedule_rng_seed == s.schedule_rng_seed == 16159082839903944936
    assert LoadGenSettings(scenario="multi-stream").test_settings().multi_stream_samples_per_query == 8
    with pytest.raises(ValueError, match="latency_bound_ms"):
        LoadGenSettings(scenario="server", target_qps=10)
    with pytest.raises(ValueError, match="ttft_ms"):
        LoadGenSettings(scenario="server", target_qps=10, use_token_latencies=True)


def test_huge_detail_log_is_trimmed_after_parsing(tmp_path):
    s = LoadGenSettings(scenario="single-stream", min_duration_ms=100, min_query_count=70)
    r = run_loadgen({1: numpy_call(1, 0.2)}, s, tmp_path, qsl_samples=8)
    detail = Path(r.detail_path)
    error = (':::MLLOG {"key": "error_runtime", "value": "a planted error", "time_ms": 1.0, "namespace": '
             '"mlperf::logging", "event_type": "POINT_IN_TIME", "metadata": {"is_error": true, '
             '"is_warning": false, "file": "x", "line_no": 1, "pid": 1, "tid": 1}}\n')
    with detail.open("a") as f:
        f.write(error * 5000)
    again = parse_logs(r.summary_path, detail, r.settings, threads=1, qsl_samples=8, performance_samples=8,
                       max_detail_bytes=100_000)
    assert len(again.errors) == 5000                  # parsed before trimming
    assert "4980 more 'error_runtime' lines dropped" in again.detail_trimmed
    assert detail.stat().st_size < 100_000
    assert replace(again, errors=(), detail_trimmed=None) == replace(r, errors=(), detail_trimmed=None)
    kept = parse_logs(r.summary_path, detail, r.settings, threads=1, qsl_samples=8, performance_samples=8)
    assert len(kept.errors) == 20 and kept.detail_trimmed is None  # trimmed once, small enough now


def _verdict(qps: float, valid: bool, template: LoadGenResult) -> LoadGenResult:
    return replace(template, valid=valid, settings=replace(template.settings, target_qps=qps))


def test_search_brackets_bisects_and_keeps_every_verdict(tmp_path):
    s = LoadGenSettings(scenario="server", target_qps=100, latency_bound_ms=20, min_duration_ms=100,
                        min_query_count=100)
    template = run_loadgen({1: numpy_call(1, 0.1)}, s, tmp_path, qsl_samples=8)
    asked: list[float] = []

    def run_at(qps: float) -> LoadGenResult:  # a system that LoadGen finds VALID up to 730 qps
        asked.append(qps)
        return _verdict(qps, qps <= 730, template)
    search = find_max_qps(run_at, 100, min_qps=10, budget_s=60)
    assert 730 * 0.95 <= search.max_qps <= 730
    assert asked[:5] == [100, 200, 400, 800, 600]
    assert search.runs[-1].settings.target_qps == pytest.approx(1.3 * search.max_qps, rel=1e-4)
    assert "INVALID" in search.ended
    rates = search.rates()
    assert [r["qps"] for r in rates] == asked and all(r["valid"] == (r["qps"] <= 730) for r in rates)
    assert all("early_stopping" in r and "summary_path" in r for r in rates)
    nothing = find_max_qps(lambda q: _verdict(q, False, template), 100, min_qps=20, budget_s=60)
    assert nothing.best is None and [r.settings.target_qps for r in nothing.runs] == [100, 50, 25]


@pytest.mark.slow
def test_peak_search_through_loadgen_on_a_slow_call(tmp_path):
    """The acceptance checks of the hand-written scenarios, through LoadGen: the max rate within the bound
    is at or below offline throughput, and LoadGen itself calls 1.3x that rate INVALID."""
    call = {1: numpy_call(1, 4.0)}   # one worker: at most 250 qps
    off = run_loadgen(call, LoadGenSettings(scenario="offline", min_duration_ms=500), tmp_path / "off",
                      qsl_samples=32)
    base = LoadGenSettings(scenario="server", target_qps=1, latency_bound_ms=40, min_duration_ms=500,
                           min_query_count=500)
    search = find_max_qps(server_runner(call, base, tmp_path / "srv", qsl_samples=32), 120, min_qps=10,
                          budget_s=60, precision=0.1)
    assert off.valid and search.best is not None
    assert search.max_qps <= off.samples_per_s
    above = [r for r in search.runs if r.settings.target_qps >= 1.3 * search.max_qps * 0.999]
    assert above and not any(r.valid for r in above)


def slow_at_first(batch: int, first_calls: int, slow_ms: float):
    """A call that is slow for its first calls (the warmup lands in one of the VM's slow spells), fast after."""
    x = np.ones((batch, 64), dtype=np.float32)
    n = [0]

    def call() -> None:
        n[0] += 1
        (x @ W).sum()
        if n[0] <= first_calls:
            time.sleep(slow_ms / 1e3)
    return call


def test_offline_sized_from_a_slow_warmup_is_rerun_until_it_lasts_its_minimum(tmp_path):
    # the 2 warmup calls take 30 ms each: the estimate (~33 samples/s) sizes offline's one query at ~17
    # samples, which the fast calls finish in well under the 300 ms minimum (LoadGen: INVALID)
    s = LoadGenSettings(scenario="offline", min_duration_ms=300, min_query_count=1)
    r = run_loadgen({1: slow_at_first(1, 2, 30.0)}, s, tmp_path, qsl_samples=16)
    assert r.valid and r.constraints["Min duration satisfied"]
    assert r.settings.expected_qps > 1000            # resized from the rate LoadGen measured, and recorded
    # a size the user gave is theirs: the short run stays as LoadGen judged it
    fixed = run_loadgen({1: slow_at_first(1, 2, 30.0)}, replace(s, expected_qps=30.0), tmp_path / "fixed",
                        qsl_samples=16)
    assert not fixed.valid and not fixed.constraints["Min duration satisfied"] and fixed.settings.expected_qps == 30.0


def test_single_stream_sized_from_a_slow_warmup_is_rerun_until_it_lasts_its_minimum(tmp_path):
    s = LoadGenSettings(scenario="single-stream", min_duration_ms=300, min_query_count=1)
    r = run_loadgen({1: slow_at_first(1, 2, 30.0)}, s, tmp_path, qsl_samples=16)
    assert r.valid and r.constraints["Min duration satisfied"]
    assert r.settings.expected_latency_ms < 5


def test_offline_token_latencies_with_requests_decoded_in_batches(tmp_path):
    """A batch generator whose forwards cost the same for 1 or 4 requests (a bandwidth-bound decode): with
    max_batch 4 LoadGen's offline tokens/s is about 4x that of one request at a time, every request of
    the one query completes with its own token count, and each batch reports each request's first token."""
    prefill, step, n = 4.0, 1.0, 6
    seen = []

    def batch(first_tokens):
        seen.append(len(first_tokens))
        time.sleep(prefill / 1e3)
        for f in first_tokens:
            f()
        time.sleep((n - 1) * step / 1e3)
        return [n] * len(first_tokens)
    s = LoadGenSettings(scenario="offline", use_token_latencies=True, min_duration_ms=300, min_query_count=64)
    one = run_loadgen_tokens(fake_generator(prefill, step, n), s, tmp_path / "b1", qsl_samples=1)
    four = run_loadgen_tokens(fake_generator(prefill, step, n), s, tmp_path / "b4", qsl_samples=1,
                              generate_batch=batch, max_batch=4)
    assert one.valid and four.valid, (one.constraints, four.constraints)
    assert max(seen) == 4 and sum(seen) >= 63      # offline's one query of >= 64 requests, in batches of 4
    assert 3.0 < four.tokens.tokens_per_s / one.tokens.tokens_per_s < 4.4
    assert four.tokens.tokens_per_s == pytest.approx(n * four.samples_per_s, rel=0.02)
    with pytest.raises(ValueError, match="generate_batch"):
        run_loadgen_tokens(fake_generator(prefill, step, n), s, tmp_path / "bad", qsl_samples=1, max_batch=4)
