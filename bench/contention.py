"""Do the numbers hold under one busy core? (issue 30 item 6.)

Runs the held-out suite (bench/reproducibility.yaml: a CNN and an MLP, ONNX Runtime fp32/fp16/int8 with 2
threads, batch 1 and 16, default settings) three ways, each a separate `effbench run`:

  quiet      nothing else running
  busy       one other process spinning on a core the whole run, effbench's contention policy on (default:
             wait up to 20 s for the competitor, then run the group with the cores it leaves free)
  busy-off   the same competitor, the policy off (`measure.contention: {wait_s: 0, fewer_threads: false}`)

and prints, per condition: the cells whose paired speedup is within 10% of the quiet run's, the cells
flagged (unstable latency or drift), the threads the groups ran with, and the wall time.

    .venv/bin/python bench/contention.py [--out bench/contention.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SUITE = ROOT / "bench" / "reproducibility.yaml"


def _suite(td: Path, policy: bool) -> Path:
    spec = yaml.safe_load(SUITE.read_text())
    if not policy:
        spec.setdefault("measure", {})["contention"] = {"wait_s": 0, "fewer_threads": False}
    path = td / f"suite-{'on' if policy else 'off'}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(suite: Path, out: Path, cache: str) -> float:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "effbench.cli.app", "run", str(suite), "-o", str(out),
                           "--cache-dir", cache, "--no-progress", "--no-report"],
                          capture_output=True, text=True, cwd=ROOT, env={**__import__("os").environ,
                                                                        "PYTHONPATH": str(ROOT / "bench")})
    if proc.returncode not in (0, 1):
        sys.exit(f"{out.name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from effbench.results.store import load
    with tempfile.TemporaryDirectory() as tds:
        td = Path(tds)
        cache = str(td / "cache")
        _run(_suite(td, True), td / "warm", cache)            # builds and caches the variants once
        runs, walls = {}, {}
        for name, policy, busy in (("quiet", True, False), ("busy", True, True), ("busy-off", False, True)):
            competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                walls[name] = _run(_suite(td, policy), td / name, cache)
            finally:
                if competitor:
                    competitor.kill()
                    competitor.wait()
            runs[name] = {r.cell_id: r for r in load(td / name / "results.jsonl")}
            print(f"{name}: {walls[name]:.0f} s", flush=True)
    quiet = runs["quiet"]
    report = {}
    for name, run in runs.items():
        cells = [cid for cid, r in quiet.items() if r.comparison and r.comparison.speedup]
        within, rows = 0, []
        for cid in cells:
            q, r = quiet[cid].comparison.speedup, run[cid].comparison.speedup if run[cid].comparison else None
            ok = r is not None and abs(r / q - 1) <= 0.10
            within += ok
            rows.append({"cell": cid, "quiet": q, "speedup": r, "ci": run[cid].comparison.ci if r else None,
                         "within_10pct": ok})
        flagged = [cid for cid, r in run.items() if r.ok and (r.unstable or (r.drift and r.drift.flagged))]
        threads = sorted({str(x.get("threads_used")) for r in run.values() if r.drift
                          for x in r.drift.rounds if isinstance(x, dict) and "threads_used" in x})
        report[name] = {"wall_s": walls[name], "cells": rows, "within_10pct": within, "compared": len(cells),
                        "flagged": flagged, "threads_used": threads}
        print(f"\n{name}: speedups within 10% of quiet {within}/{len(cells)}; flagged (unstable or drift) "
              f"{len(flagged)}/{len(run)}; threads used {', '.join(threads) or '-'}; wall {walls[name]:.0f} s")
        for row in rows:
            sp = "-" if row["speedup"] is None else f"{row['speedup']:.3f}"
            print(f"  {row['cell']:45} quiet {row['quiet']:.3f}  {name} {sp}{'' if row['within_10pct'] else '  (off)'}")
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
