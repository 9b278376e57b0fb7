"""Do speedups vs FP32 hold from one run to the next? (issue "Numbers that hold", its acceptance.)

Runs a suite N times, each a separate `effbench run` into its own folder with default settings, one
after the other, and prints for every non-FP32 cell: each run's paired speedup with its CI, the largest
/ smallest of the N speedups (target <= 1.10), whether each run's CI contains the median of the N
(target: >= 90% of cells), and each run's wall time.

    .venv/bin/python bench/reproducibility.py [--suite bench/reproducibility.yaml] [--runs 3]
        [--cache-dir DIR] [--out bench/reproducibility.json]

The default suite holds two held-out models (bench/heldout.py; ONNX Runtime fp32/fp16/int8, batch 1
and 16: 12 cells). `--suite suites/quickstart.yaml` does the same on the quickstart. The first run
also builds (and caches) the variants, as a fresh clone would; its time includes that.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default=str(ROOT / "bench" / "reproducibility.yaml"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache-dir", default=None, help="default: a fresh temporary cache (as a new clone)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    a = ap.parse_args()
    from effbench.results.store import load
    with tempfile.TemporaryDirectory() as td:
        cache = a.cache_dir or str(Path(td) / "cache")
        walls, runs = [], []
        for i in range(a.runs):
            out = Path(td) / f"run{i + 1}"
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "effbench.cli.app", "run", a.suite, "-o", str(out),
                                   "--cache-dir", cache, "--no-progress", "--no-report"],
                                  capture_output=True, text=True, cwd=ROOT)
            walls.append(time.monotonic() - t0)
            if proc.returncode not in (0, 1):
                sys.exit(f"run {i + 1} failed ({proc.returncode}): {proc.stderr[-2000:]}")
            runs.append({r.cell_id: r for r in load(out / "results.jsonl")})
            print(f"run {i + 1}: {walls[-1]:.0f} s", flush=True)
    cells = [cid for cid, r in runs[0].items() if r.comparison]
    rows, spreads, contained, total = [], [], 0, 0
    for cid in cells:
        comps = [run[cid].comparison if cid in run else None for run in runs]
        sps = [c.speedup if c else None for c in comps]
        if any(s is None for s in sps):
            reason = next((c.reason for c in comps if c and c.speedup is None), "missing")
            rows.append({"cell": cid, "speedups": sps, "reason": reason})
            print(f"{cid}: no paired speedup ({reason})")
            continue
        med = statistics.median(sps)
        inside = [c.ci[0] <= med <= c.ci[1] for c in comps]
        spread = max(sps) / min(sps)
        spreads.append(spread)
        contained += sum(inside)
        total += len(inside)
        rows.append({"cell": cid, "speedups": sps, "cis": [list(c.ci) for c in comps], "max_over_min": spread,
                     "ci_contains_median": inside})
        shown = "  ".join(f"{s:.3f} [{c.ci[0]:.3f}-{c.ci[1]:.3f}]{'' if ok else ' (misses)'}"
                          for s, c, ok in zip(sps, comps, inside))
        print(f"{cid:45} {shown}   max/min {spread:.3f}")
    if spreads:
        print(f"\nmax/min of the {len(runs)} speedups over {len(spreads)} cells: median {statistics.median(spreads):.3f}, "
              f"worst {max(spreads):.3f}; within 1.10x: {sum(s <= 1.10 for s in spreads)}/{len(spreads)}")
        print(f"a run's CI contains the median of the {len(runs)}: {contained}/{total} ({contained / total:.0%})")
    print(f"wall time per run: {', '.join(f'{w:.0f} s' for w in walls)}")
    if a.out:
        Path(a.out).write_text(json.dumps({"suite": a.suite, "walls_s": walls, "cells": rows}, indent=1))


if __name__ == "__main__":
    main()
