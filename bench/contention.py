"""Do the numbers hold under one busy core? (issue 30 item 6.)

Runs the held-out suite (bench/reproducibility.yaml: a CNN and an MLP, ONNX Runtime fp32/fp16/int8 with 2
threads, batch 1 and 16, default settings) four ways, each a separate `effbench run`:

  quiet      nothing else running
  quiet-1    nothing else running, the suite's threads set to 1: the reference for cells that the policy
             ran with one thread (a speedup at 1 thread is a different figure from one at 2: int8's gain
             over FP32 is larger when FP32 cannot spread over two cores)
  busy       one other process spinning on a core the whole run, effbench's contention policy on (default:
             wait up to `measure.contention.wait_s` for the competitor, then run the group with the cores
             it leaves free, and say so)
  busy-off   the same competitor, the policy off (`measure.contention: {wait_s: 0, fewer_threads: false}`)

and prints, per condition: the cells whose paired speedup is within 10% of the quiet run at the threads
the cell says it ran with (and, apart, of the quiet run at the suite's 2 threads), the cells flagged
(unstable latency or drift), the threads the groups ran with, and the wall time.

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


def _suite(td: Path, policy: bool, threads: int | None = None) -> Path:
    spec = yaml.safe_load(SUITE.read_text())
    if not policy:
        spec.setdefault("measure", {})["contention"] = {"wait_s": 0, "fewer_threads": False}
    if threads:
        for r in spec["runners"]:
            r["threads"] = threads
    path = td / f"suite-{'on' if policy else 'off'}-{threads or 'asked'}.yaml"
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
        for name, policy, busy, threads in (("quiet", True, False, None), ("quiet-1", True, False, 1),
                                            ("busy", True, True, None), ("busy-off", False, True, None)):
            competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                walls[name] = _run(_suite(td, policy, threads), td / name, cache)
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
        within, within_asked, rows = 0, 0, []
        for cid in cells:
            used = _threads(run[cid])
            ref = runs["quiet-1"] if used == {1} else quiet     # the quiet run at the threads this cell names
            q, r = ref[cid].comparison.speedup, run[cid].comparison.speedup if run[cid].comparison else None
            q2 = quiet[cid].comparison.speedup
            ok = r is not None and abs(r / q - 1) <= 0.10
            ok2 = r is not None and abs(r / q2 - 1) <= 0.10
            within += ok
            within_asked += ok2
            rows.append({"cell": cid, "threads": sorted(used), "quiet_same_threads": q, "quiet": q2, "speedup": r,
                         "ci": run[cid].comparison.ci if r else None, "within_10pct": ok,
                         "within_10pct_of_2_threads": ok2})
        flagged = [cid for cid, r in run.items() if r.ok and (r.unstable or (r.drift and r.drift.flagged))]
        threads = sorted({str(x.get("threads_used")) for r in run.values() if r.drift
                          for x in r.drift.rounds if isinstance(x, dict) and "threads_used" in x})
        report[name] = {"wall_s": walls[name], "cells": rows, "within_10pct": within,
                        "within_10pct_of_2_threads": within_asked, "compared": len(cells),
                        "flagged": flagged, "threads_used": threads}
        print(f"\n{name}: speedups within 10% of quiet at the threads used {within}/{len(cells)} (of quiet at 2 "
              f"threads {within_asked}/{len(cells)}); flagged (unstable or drift) {len(flagged)}/{len(run)}; "
              f"threads used {', '.join(threads) or '-'}; wall {walls[name]:.0f} s")
        for row in rows:
            sp = "-" if row["speedup"] is None else f"{row['speedup']:.3f}"
            print(f"  {row['cell']:45} threads {'/'.join(map(str, row['threads']))} quiet(same threads) "
                  f"{row['quiet_same_threads']:.3f}  {name} {sp}{'' if row['within_10pct'] else '  (off)'}")
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1, default=str))


def _threads(record) -> set[int]:
    """The thread counts a record's rounds ran with (the drift section's round entries)."""
    used = {x.get("threads_used") for x in (record.drift.rounds if record.drift else ())
            if isinstance(x, dict) and x.get("threads_used")}
    return used or {2}


if __name__ == "__main__":
    main()
