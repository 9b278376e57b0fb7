"""Published LLM tokens/s (a profile's `llm_references`) against the generative projection: the schema
rejects a reference without its source or quote, a reference's projection is `project_generation`'s own
arithmetic on the same work, the shipped report (bench/llm_reference_check.json) and the band_source
note are what the check recomputes, and each shipped reference is well-formed."""
from __future__ import annotations

import json
from pathlib import Path
from statistics import median

import pytest
from conftest import make_profile
from ebrecords import make

from effbench.devices import load_profiles, shipped_ids
from effbench.devices.llm_references import (
    check_llm_references,
    check_one,
    llm_reference_note,
    projected_tokens_per_s,
    reference_work,
)
from effbench.devices.profile import LLM_SHAPES, LlmReference
from effbench.devices.project import project_generation
from effbench.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
STORED = ROOT / "bench" / "llm_reference_check.json"


def _ref(**over) -> dict:
    r = {"model": "Llama 2 7B", "shape": "llama-2-7b", "quant": "Q4_0", "bits_per_weight": 4.5,
         "bits_source": "ggml block_q4_0: 18 bytes per 32 weights", "backend": "llama.cpp CPU, 4 threads",
         "runner": "llamacpp", "compute_precision": "int8", "test": "tg128", "tokens_per_s": 5.0,
         "source": "https://example.org/bench", "quote": "| llama 7B Q4_0 | tg128 | 5.00 |"}
    return {**r, **over}


def _pi_like(**over):
    """A Pi-5-like toy: int8 at 614.4 GOP/s, 17 GB/s, 8 GB."""
    return make_profile(peak_ops={"int8": {"dense": {"value": 614.4e9, "source": "hand"}}},
                        memory={"bandwidth_bytes_per_s": {"value": 17e9, "source": "hand"},
                                "capacity_bytes": {"value": 8e9, "source": "hand"}}, **over)


def _shipped():
    return load_profiles([i for i in shipped_ids() if i != "local"])


# -- schema -------------------------------------------------------------------------------------------

def test_a_reference_loads_and_states_its_context():
    p = make_profile(llm_references=[_ref(), _ref(test="pp512", tokens_per_s=40.0)])
    tg, pp = p.llm_references
    assert tg.phase == "decode" and tg.context == (0, 128)
    assert pp.phase == "prefill" and pp.context == (512, 1)
    assert tg.llm_shape().params() == 6_738_415_616          # Llama 2 7B, as llama-bench prints "6.74 B"


@pytest.mark.parametrize("field", ["quote", "source"])
def test_a_reference_without_quote_or_source_is_a_one_line_error_naming_it(field):
    ref = _ref()
    del ref[field]
    with pytest.raises(UserError) as e:
        make_profile(llm_references=[ref])
    msg = str(e.value)
    assert f"llm_references[0].{field}" in msg and "required field is missing" in msg
    assert "\n" not in e.value.args[0]


def test_unknown_shape_and_unstated_eval_context_are_rejected():
    with pytest.raises(UserError, match="unknown LLM shape 'llama-7b'"):
        make_profile(llm_references=[_ref(shape="llama-7b")])
    with pytest.raises(UserError, match="prompt_tokens and new_tokens"):
        make_profile(llm_references=[_ref(test="eval", note="assumed")])
    with pytest.raises(UserError, match="states its own context"):
        make_profile(llm_references=[_ref(prompt_tokens=4)])


def test_a_shape_spelt_out_equals_the_named_one():
    spelt = {**LLM_SHAPES["llama-2-7b"], "source": "meta-llama/Llama-2-7b-hf config.json"}
    a, b = make_profile(llm_references=[_ref(), _ref(shape=spelt)]).llm_references
    assert reference_work(a) == reference_work(b)


# -- the projection is project_generation's arithmetic --------------------------------------------------

def _record_for(ref: LlmReference, new_tokens: int) -> object:
    """A generative record carrying the reference's work counts, as a llama.cpp cell's would."""
    w = reference_work(ref)
    gen = {"prompt_tokens": int(w["prompt_tokens"]), "new_tokens": new_tokens, "ttft_ms": 1.0, "tpot_ms": 1.0,
           "weight_bytes": w["weight_bytes"], "decode_bytes_per_token": w["decode_bytes_per_token"],
           "prefill_macs": w["prefill_macs"] or 1.0, "decode_macs_per_token": w["decode_macs_per_token"],
           "layers": int(w["layers"]), "kv_cache_bytes_analytic": w["kv_cache_bytes"],
           "kernel": {"compute_precision": ref.compute_precision}}
    return make("m/int4/llamacpp/p0/single-stream", cell={"precision": "int4", "device": "cpu"},
                latency_ms={"median": 1.0}, generation=gen)


@pytest.mark.parametrize("test", ["tg128", "pp512"])
def test_a_references_projection_is_project_generations_for_the_same_work(test):
    prof = _pi_like(derate={"compute": {"value": 0.5, "source": "hand"}, "memory": {"value": 0.7, "source": "hand"}},
              llm_references=[_ref(test=test)])
    ref = prof.llm_references[0]
    tps, bound, why = projected_tokens_per_s(ref, prof)
    assert why is None
    x = project_generation(_record_for(ref, ref.context[1] if ref.phase == "decode" else 2), [prof])["toy"].extra
    if ref.phase == "decode":
        assert tps == pytest.approx(x["decode_tokens_per_s"], rel=1e-12) and bound == x["tpot_bound"] == "memory"
    else:
        assert tps == pytest.approx(512 / (x["ttft_ms"] / 1e3), rel=1e-12) and bound == x["ttft_bound"]


def test_decode_by_hand():
    """Llama 2 7B Q4_0, tg128 on a 17 GB/s profile: every weight once at 4.5 bits (one row of the untied
    embedding) plus the F16 KV cache at the mean context 64, over the bandwidth, plus the overhead."""
    prof = _pi_like(llm_references=[_ref()])
    ref = prof.llm_references[0]
    s = ref.llm_shape()
    weights = (s.params() - (s.vocab - 1) * s.hidden) * 4.5 / 8
    kv = 2 * 32 * 32 * 128 * 64 * 2                      # K and V x layers x KV heads x head dim x context x 2 B
    overhead = (17 * 32 + 3) * 1e-6
    tpot = (round(weights) + kv) / 17e9 + overhead
    assert projected_tokens_per_s(ref, prof)[0] == pytest.approx(1 / tpot, rel=1e-9)
    # one decode step's MACs at past = 64: every linear layer and the LM head once, attention over 65 positions
    w = reference_work(ref)
    assert w["decode_macs_per_token"] == 32 * s.linear_params_per_layer() + s.vocab * s.hidden + 2 * 32 * 32 * 128 * 65
    assert w["prefill_macs"] == 0 and w["weight_bytes"] == pytest.approx(s.params() * 4.5 / 8)


def test_a_profile_that_cannot_run_the_arithmetic_says_so():
    prof = make_profile(llm_references=[_ref(compute_precision="fp16")])
    c = check_one(prof.llm_references[0], prof)
    assert c.projected_tps is None and "declares no fp16 peak" in c.reason


# -- the shipped figures are what the check computes ----------------------------------------------------

def test_the_stored_report_is_what_the_check_computes():
    stored = json.loads(STORED.read_text())
    now = check_llm_references(_shipped()).to_json()
    assert len(stored["checks"]) == len(now["checks"]) >= 4
    for a, b in zip(stored["checks"], now["checks"]):
        for k, v in b.items():
            if isinstance(v, float):
                assert a[k] == pytest.approx(v, rel=1e-9), (b["profile"], b["model"], k)
            else:
                assert a[k] == v, (b["profile"], b["model"], k)
    for phase, s in now["summary"].items():
        for k, v in s.items():
            assert stored["summary"][phase][k] == (pytest.approx(v) if isinstance(v, float) else v), (phase, k)


def test_the_error_figures_are_recomputed_from_published_and_projected():
    r = check_llm_references(_shipped())
    assert {c.profile for c in r.checks if c.factor} >= {"raspberry-pi-5", "apple-m2"}
    for c in r.checks:
        assert c.factor == pytest.approx(c.ref.tokens_per_s / c.projected_tps)
        assert c.error_pct == pytest.approx((c.projected_tps / c.ref.tokens_per_s - 1) * 100)
        assert c.shipped_error_pct == pytest.approx((c.shipped_tps / c.ref.tokens_per_s - 1) * 100)
    d = [c for c in r.checks if c.ref.phase == "decode" and c.factor]
    folds = sorted(max(c.factor, 1 / c.factor) for c in d)
    s = r.summary("decode")
    assert s["max_factor"] == pytest.approx(folds[-1])
    mid = len(folds) // 2
    assert s["median_factor"] == pytest.approx(folds[mid] if len(folds) % 2 else (folds[mid - 1] + folds[mid]) / 2)


def test_band_source_states_how_the_profiles_llm_references_score():
    for p in _shipped():
        if p.error_band is None:
            continue
        prec = next(k for k, v in p.peak_ops.items() if v.dense is not None)
        rec = _record_for(LlmReference.model_validate(_ref(compute_precision=prec)), 11)
        band = project_generation(rec, [p])[p.id].band_source
        assert band.endswith(llm_reference_note(p)) and "CNN references" in band
        decode = [check_one(r, p) for r in p.llm_references if r.phase == "decode"]
        if decode:
            assert f"checked on {len(decode)} published LLM decode reference" in band
            assert f"median error {median(c.shipped_error_pct for c in decode):+.0f}%" in band
        else:
            assert "not checked against LLM references" in band


def test_each_shipped_reference_matches_what_its_profile_describes():
    for p in _shipped():
        for r in p.llm_references:
            assert r.quote.strip() and r.source.startswith("http")
            assert str(r.tokens_per_s).rstrip("0").rstrip(".") in r.quote or f"{r.tokens_per_s:.2f}" in r.quote
            peak = p.peak_ops_per_s(r.compute_precision, r.runner)
            assert peak, f"{p.id}: {r.model} projects at {r.compute_precision}, which it declares no peak for"
