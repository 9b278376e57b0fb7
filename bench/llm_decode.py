"""Decode tokens/s of a decoder LLM per runtime x precision (default: the Llama-3.2-1B-shaped model with
random weights; fp32/int8/int4 on llama.cpp and ONNX Runtime GenAI, fp32/bf16 on torch), threads pinned.

Each runtime runs in its own fresh process (its models would not fit together); inside it the precisions
alternate request by request in ABBA order (A B C C B A per round), each request a fixed prompt, a
forced output length and a fresh KV cache. Reported: median and spread over requests of decode tokens/s,
TTFT and TPOT, the speedup vs FP32 as a median of per-round ratios, and decode's bandwidth utilization
against a STREAM-like copy measured in the same process.

    .venv/bin/python bench/llm_decode.py [--model llama-1b-shape] [--threads 2] [--rounds 3]
        [--prompt 32] [--new 32] [--runtimes llamacpp,onnxruntime-genai,torch] [--set torch=fp32,int4]
        [--out bench/llm_decode.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_PRECISIONS = {"llamacpp": ["fp32", "int8", "int4"], "onnxruntime-genai": ["fp32", "int8", "int4"],
                      "torch": ["fp32", "bf16"]}


def worker(a) -> dict:
    """One runtime: open every precision, warm each up, then ABBA rounds; returns raw and summary figures."""
    from effbench.measure.generation import (bandwidth_utilization, decode_bytes_per_token, kv_cache_bytes,
                                             stream_bandwidth)
    from effbench.models.llm import resolve_llm
    from effbench.workloads.generate import Unsupported, open_session, prompt_ids

    model = resolve_llm(a.model, a.cache_dir)
    prompt = prompt_ids(model, a.prompt)
    ctx = a.prompt + a.new
    sessions, unsupported, load_s = {}, {}, {}
    for p in a.precisions.split(","):
        t0 = time.perf_counter()
        try:
            sessions[p] = open_session(a.worker, model, p, threads=a.threads, cache_dir=a.cache_dir,
                                       max_context=max(ctx, 64))
        except Unsupported as e:
            unsupported[p] = str(e)
            continue
        load_s[p] = time.perf_counter() - t0
        sessions[p].generate(prompt, min(4, a.new))                 # warm-up: first-call allocations
    order = list(sessions)
    traces = {p: [] for p in order}
    rounds = []
    load_before = os.getloadavg()
    for r in range(a.rounds):
        this_round = {}
        for p in order + order[::-1]:
            tr = sessions[p].generate(prompt, a.new)
            traces[p].append(tr)
            this_round.setdefault(p, []).append(tr.timing().decode_tokens_per_s)
        rounds.append({p: statistics.mean(v) for p, v in this_round.items()})
    load_after = os.getloadavg()
    bw = stream_bandwidth(256 * 2**20, repeats=5)

    out = {"runtime": a.worker, "model": model.model_id, "reference": model.reference, "threads": a.threads,
           "prompt_tokens": a.prompt, "new_tokens": a.new, "rounds": a.rounds, "loadavg_before": load_before,
           "loadavg_after": load_after, "bandwidth": bw.to_json(), "unsupported": unsupported, "precisions": {}}
    for p, s in sessions.items():
        t = [x.timing() for x in traces[p]]
        dec = sorted(x.decode_tokens_per_s for x in t)
        kv_mean = kv_cache_bytes(layers=model.shape.layers, kv_heads=model.shape.kv_heads,
                                 head_dim=model.shape.dim_per_head, context=a.prompt + a.new // 2,
                                 bytes_per_element=s.kernel.kv_bytes_per_element)
        per_token = decode_bytes_per_token(s.decode_weight_bytes, kv_mean)
        med = statistics.median(dec)
        entry = {
            "kernel": s.kernel.to_json(), "load_s": load_s[p], "requests": len(t),
            "decode_tokens_per_s": {"median": med, "min": dec[0], "max": dec[-1],
                                    "iqr": _iqr(dec), "all": [round(x, 3) for x in dec]},
            "ttft_ms": {"median": statistics.median(x.ttft_ms for x in t)},
            "tpot_ms": {"median": statistics.median(x.tpot_ms for x in t)},
            "weight_bytes": s.weight_bytes, "decode_bytes_per_token": per_token,
            "bandwidth_utilization": bandwidth_utilization(med, bw.bytes_per_s, per_token),
            "kv_cache_bytes_measured": traces[p][-1].kv_cache_bytes, "kv_measured": traces[p][-1].kv_measured,
        }
        if "fp32" in sessions and p != "fp32":
            ratios = sorted(rd[p] / rd["fp32"] for rd in rounds)
            entry["speedup_vs_fp32"] = {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1],
                                        "per_round": [round(x, 3) for x in ratios]}
        out["precisions"][p] = entry
    for s in sessions.values():
        s.close()
    return out


def _iqr(values: list[float]) -> float:
    if len(values) < 4:
        return values[-1] - values[0]
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-1b-shape")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--runtimes", default="llamacpp,onnxruntime-genai,torch")
    ap.add_argument("--precisions", default=None, help="with --worker: comma-separated precisions")
    ap.add_argument("--set", action="append", default=[], metavar="RUNTIME=P1,P2",
                    help="precisions of one runtime (default: " +
                         "; ".join(f"{k}={','.join(v)}" for k, v in DEFAULT_PRECISIONS.items()) + ")")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(a)), flush=True)
        return

    precisions = {k: ",".join(v) for k, v in DEFAULT_PRECISIONS.items()}
    precisions.update(dict(x.split("=", 1) for x in a.set))
    results = []
    for rt in a.runtimes.split(","):
        cmd = [sys.executable, __file__, "--worker", rt, "--precisions", precisions[rt],
               "--model", a.model, "--threads", str(a.threads), "--rounds", str(a.rounds),
               "--prompt", str(a.prompt), "--new", str(a.new)]
        if a.cache_dir:
            cmd += ["--cache-dir", a.cache_dir]
        t0 = time.time()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            print(f"{rt}: worker failed (rc {proc.returncode}): {' | '.join(tail)}", flush=True)
            results.append({"runtime": rt, "error": tail})
            continue
        r = json.loads(line[len("RESULT "):])
        r["wall_s"] = time.time() - t0
        results.append(r)
        _print(r)
    if a.out:
        Path(a.out).write_text(json.dumps({"model": a.model, "threads": a.threads, "results": results}, indent=1))


def _print(r: dict) -> None:
    bw = r["bandwidth"]["bytes_per_s"] / 1e9
    print(f"\n{r['runtime']} ({r['model']}, {r['threads']} threads, prompt {r['prompt_tokens']}, "
          f"{r['new_tokens']} new, {r['rounds']} ABBA rounds; copy bandwidth {bw:.1f} GB/s; "
          f"load avg {r['loadavg_before'][0]:.1f} -> {r['loadavg_after'][0]:.1f})")
    print(f"  {'precision':9} {'weights':28} {'decode tok/s median [min, max]':32} {'TTFT ms':>8} {'TPOT ms':>8} "
          f"{'vs fp32':>18} {'BW util':>7}")
    for p, e in r["precisions"].items():
        d = e["decode_tokens_per_s"]
        sp = e.get("speedup_vs_fp32")
        sp_text = f"{sp['median']:.2f}x [{sp['min']:.2f}, {sp['max']:.2f}]" if sp else ""
        print(f"  {p:9} {e['kernel']['weights'][:28]:28} {d['median']:8.2f} [{d['min']:.2f}, {d['max']:.2f}]"
              f"{'':10} {e['ttft_ms']['median']:8.1f} {e['tpot_ms']['median']:8.1f} {sp_text:>18} "
              f"{e['bandwidth_utilization']:7.2f}")
    for p, why in r["unsupported"].items():
        print(f"  {p:9} unsupported: {why}")


if __name__ == "__main__":
    main()
