"""Does decoding queued requests together pay, per runtime? Output tokens/s of B requests decoded as one
batch (`generate_batch`) against the same B requests one at a time (`generate`), paired in one worker.

Each runtime x precision runs in its own fresh process per round; inside it the two ways alternate in
ABBA blocks (one at a time, batch, batch, one at a time), each block B requests of one fixed prompt with a
forced output length and a fresh KV cache. A round's ratio is batch tokens/s over one-at-a-time tokens/s
from its own blocks; reported: the median ratio over rounds with its range, and the median tokens/s of
each way. This is what the offline scenario's batch sweep chooses between, measured without LoadGen.

    .venv/bin/python bench/llm_offline_batch.py [--model smollm2-135m] [--batch 4] [--rounds 3]
        [--prompt 128] [--new 32] [--threads 1] [--cells llamacpp:int8,onnxruntime-genai:int4,torch:fp32]
        [--out bench/llm_offline_batch.json]
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

DEFAULT_CELLS = "llamacpp:int8,llamacpp:int4,onnxruntime-genai:int4,torch:fp32"


def worker(a) -> dict:
    """One runtime x precision: warm both ways up, then ABBA blocks; tokens/s of each block."""
    from effbench.models.llm import resolve_llm
    from effbench.workloads.generate import Unsupported, open_session, prompt_ids

    model = resolve_llm(a.model, a.cache_dir)
    prompt = prompt_ids(model, a.prompt)
    try:
        s = open_session(a.runtime, model, a.precision, threads=a.threads, cache_dir=a.cache_dir,
                         max_context=max(a.prompt + a.new, 64))
    except Unsupported as e:
        return {"unsupported": str(e)}
    try:
        def one_at_a_time() -> float:
            t0 = time.perf_counter()
            for _ in range(a.batch):
                s.generate(prompt, a.new)
            return a.batch * a.new / (time.perf_counter() - t0)

        def batch() -> float:
            t0 = time.perf_counter()
            traces = s.generate_batch([prompt] * a.batch, a.new)
            assert len(traces) == a.batch and all(len(t.output_ids) == a.new for t in traces)
            return a.batch * a.new / (time.perf_counter() - t0)

        try:
            batch()
        except Unsupported as e:
            return {"unsupported": str(e)}
        one_at_a_time()
        blocks = {"one_at_a_time": [], "batch": []}
        for _ in range(a.blocks):
            for way, fn in (("one_at_a_time", one_at_a_time), ("batch", batch), ("batch", batch),
                            ("one_at_a_time", one_at_a_time)):
                blocks[way].append(fn())
        k = s.kernel
        return {"tokens_per_s": blocks, "kernel": {"weights": k.weights, "quantization": k.quantization,
                                                   "compute": k.compute}, "load_average": os.getloadavg()}
    finally:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=2, help="ABBA blocks per round")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cells", default=DEFAULT_CELLS)
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "effbench"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "llm_offline_batch.json"))
    ap.add_argument("--worker", nargs=2, metavar=("RUNTIME", "PRECISION"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.runtime, a.precision = a.worker
        print(json.dumps(worker(a)))
        return
    cells = [c.split(":") for c in a.cells.split(",")]
    results = {}
    t_start = time.time()
    for runtime, precision in cells:
        rounds, unsupported = [], None
        for r in range(a.rounds):
            cmd = [sys.executable, __file__, "--worker", runtime, precision, "--model", a.model, "--batch", str(a.batch),
                   "--blocks", str(a.blocks), "--prompt", str(a.prompt), "--new", str(a.new),
                   "--threads", str(a.threads), "--cache-dir", a.cache_dir]
            p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if p.returncode != 0:
                raise SystemExit(f"{runtime}/{precision} round {r}: worker failed\n{p.stderr[-3000:]}")
            out = json.loads(p.stdout.strip().splitlines()[-1])
            if "unsupported" in out:
                unsupported = out["unsupported"]
                break
            tps = out["tokens_per_s"]
            rounds.append({"one_at_a_time": statistics.median(tps["one_at_a_time"]),
                           "batch": statistics.median(tps["batch"]), "blocks": tps, "kernel": out["kernel"],
                           "load_average": out["load_average"]})
            print(f"{runtime}/{precision} round {r}: one at a time {rounds[-1]['one_at_a_time']:.1f} tok/s, "
                  f"batch of {a.batch} {rounds[-1]['batch']:.1f} tok/s", flush=True)
        key = f"{runtime}/{precision}"
        if unsupported:
            results[key] = {"unsupported": unsupported}
            print(f"{key}: unsupported: {unsupported}")
            continue
        ratios = [x["batch"] / x["one_at_a_time"] for x in rounds]
        results[key] = {"one_at_a_time_tokens_per_s": statistics.median(x["one_at_a_time"] for x in rounds),
                        "batch_tokens_per_s": statistics.median(x["batch"] for x in rounds),
                        "batch_over_one_at_a_time": {"median": statistics.median(ratios), "min": min(ratios),
                                                     "max": max(ratios), "per_round": ratios},
                        "rounds": rounds}
        r = results[key]["batch_over_one_at_a_time"]
        print(f"{key}: batch of {a.batch} / one at a time = {r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]")
    doc = {"what": __doc__.split("\n\n")[0], "model": a.model, "batch": a.batch, "prompt_tokens": a.prompt,
           "new_tokens": a.new, "threads": a.threads, "rounds": a.rounds, "blocks_per_round": a.blocks,
           "cpu_count": os.cpu_count(), "wall_s": round(time.time() - t_start, 1),
           "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results}
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
