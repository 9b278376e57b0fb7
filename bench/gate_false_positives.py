"""How often the gate cries wolf on this machine, and whether it catches a 10% slowdown.

A/A: the quickstart suite's FP32 and INT8 cells measured twice (two stores, `--rounds R` each),
`pairs` times; every flagged cell is a false positive (target: none). Then a planted 10% slowdown:
the second store of each pair with every latency sample and round median of one model multiplied by
1.10 (real measured samples, a known shift), and the gate's detection rate on that model's cells
(target: all). Both in store mode (`compare`) and in A/B mode (`run --ab`, interleaved).
Run: .venv/bin/python bench/gate_false_positives.py [--pairs 5] [--rounds 3] [--only GLOB]
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from effbench.compare import compare, compare_ab  # noqa: E402
from effbench.execute import run, run_ab  # noqa: E402
from effbench.results import Results  # noqa: E402

SLOW_MODEL = "digits-cnn"


def slowed(results: Results, model: str, factor: float) -> Results:
    recs = []
    for r in results.records:
        r = copy.deepcopy(r)
        if r.cell.get("model") == model and r.ok:
            r.samples_ms = [s * factor for s in r.samples_ms]
            r.round_medians_ms = [m * factor for m in r.round_medians_ms]
            r.latency_ms = {k: (v * factor if k in ("median", "mean", "p90", "p99", "min", "max") and v else v)
                            for k, v in r.latency_ms.items()}
            r.latency_ms["ci"] = [c * factor for c in r.latency_ms["ci"]]
        recs.append(r)
    return Results(records=recs, raw=recs)


def flagged(verdict, metric: str = "latency.median") -> list[str]:
    return sorted({r["cell_id"] for r in verdict.rows if r["metric"] == metric and r["verdict"] in ("regressed", "improved")})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default=str(ROOT / "suites" / "quickstart.yaml"))
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", action="append", default=None,
                    help="cell globs (default: the fp32 and int8 cells)")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    only = a.only or ["*/fp32/*", "*/int8*/*"]
    fp_store = fp_ab = 0
    det_store = det_ab = cells_slowed = 0
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.pairs):
            base = run(a.suite, out_dir=Path(d) / f"a{i}", only=only, rounds=a.rounds, quick=a.quick, progress=False)
            new = run(a.suite, out_dir=Path(d) / f"b{i}", only=only, rounds=a.rounds, quick=a.quick, progress=False)
            v = compare(base, new)
            fp = flagged(v)
            fp_store += len(fp)
            slow = slowed(new, SLOW_MODEL, 1.10)
            target = sorted(r.cell_id for r in slow.records if r.cell.get("model") == SLOW_MODEL and r.ok)
            hit = [c for c in flagged(compare(base, slow)) if c in target]
            det_store += len(hit)
            cells_slowed += len(target)
            b2, n2, _ = run_ab(a.suite, a.suite, out_dir=Path(d) / f"ab{i}", only=only, rounds=max(a.rounds, 5),
                               quick=a.quick, progress=False)
            bb = b2.by_id()
            pairs = [(bb[r.cell_id], r) for r in n2 if r.cell_id in bb]
            fpa = flagged(compare_ab(pairs))
            fp_ab += len(fpa)
            spairs = [(bb[r.cell_id], r) for r in slowed(n2, SLOW_MODEL, 1.10) if r.cell_id in bb]
            det_ab += len([c for c in flagged(compare_ab(spairs)) if c in target])
            print(f"pair {i + 1}: A/A flagged {len(fp)} of {len(v.rows and {r['cell_id'] for r in v.rows})} cells "
                  f"(store mode) {fp}, {len(fpa)} (A/B mode) {fpa}; planted +10% on {SLOW_MODEL}: "
                  f"detected {len(hit)}/{len(target)} (store mode)", flush=True)
    print(f"A/A false positives: store mode {fp_store}, A/B mode {fp_ab} over {a.pairs} pairs")
    print(f"planted +10% detection: store mode {det_store}/{cells_slowed}, A/B mode {det_ab}/{cells_slowed}")


if __name__ == "__main__":
    main()
