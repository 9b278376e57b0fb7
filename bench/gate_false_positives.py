"""How often the gate cries wolf on this machine, and whether it catches a 10% slowdown.

A/A: the quickstart suite's FP32 and INT8 cells measured twice (two stores, `--rounds R` each),
`pairs` times; every flagged cell is a false positive (target: none). Then a planted 10% slowdown:
the second store of each pair with every latency sample and round median of one model multiplied by
1.10 (real measured samples, a known shift; in A/B mode the paired block ratios too), and the gate's
detection rate on that model's cells (target: all). Both in store mode (`compare`) and in A/B mode
(`run --ab`: interleaved workers plus paired blocks in one worker).

Measuring and judging are separate so a gate change can be re-judged on the same measurements:

    .venv/bin/python bench/gate_false_positives.py --keep DIR [--pairs 5] [--rounds 12] [--quick]
    .venv/bin/python bench/gate_false_positives.py --analyze DIR      # re-judge stores kept in DIR
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from effbench.execution.ab import run_ab  # noqa: E402
from effbench.execution.run import run  # noqa: E402
from effbench.gate import compare, compare_ab  # noqa: E402
from effbench.results.store import Results, load  # noqa: E402

SLOW_MODEL = "digits-cnn"
SLOW = 1.10


def slowed(results: Results, model: str, factor: float) -> Results:
    recs = []
    for r in results.records:
        if r.cell.model == model and r.ok:
            lat = r.latency_ms
            scaled = {k: v * factor for k in ("median", "mean", "p90", "p99", "min", "max") if (v := getattr(lat, k))}
            r = r.replace(
                samples_ms=tuple(s * factor for s in r.samples_ms),
                round_medians_ms=tuple(m * factor for m in r.round_medians_ms),
                paired_ratios=tuple(p * factor for p in r.paired_ratios),   # the new side of each block pair
                latency_ms=lat.replace(**scaled, ci=(lat.ci[0] * factor, lat.ci[1] * factor) if lat.ci else None))
        recs.append(r)
    return Results(records=recs, raw=recs)


def latency_rows(verdict) -> list[dict]:
    return [r for r in verdict.rows if r["metric"] == "latency.median"]


def flagged(verdict) -> list[str]:
    return sorted({r["cell_id"] for r in latency_rows(verdict) if r["verdict"] in ("regressed", "improved")})


def measure(d: Path, pairs: int, rounds: int, quick: bool, suite: str, only: list[str], modes: str) -> None:
    for i in range(pairs):
        for side in ("a", "b") if "store" in modes else ():
            if not (d / f"{side}{i}" / "results.jsonl").exists():
                run(suite, out_dir=d / f"{side}{i}", only=only, rounds=rounds, quick=quick, progress=False)
        if "ab" in modes and not (d / f"ab{i}" / "results.jsonl").exists():
            run_ab(suite, suite, out_dir=d / f"ab{i}", only=only, rounds=max(rounds, 5), quick=quick, progress=False)
        print(f"pair {i + 1} measured", flush=True)


def _detail(verdict, target: list[str]) -> str:
    out = []
    for r in latency_rows(verdict):
        if r["cell_id"] in target:
            floor = r.get("noise_floor")
            out.append(f"    {r['cell_id']}: {r['verdict']} ratio {r['ratio']:.3f} floor "
                       f"{'-' if floor is None else f'{floor:.1%}'} p_holm {r.get('p_holm')}")
    return "\n".join(out)


def analyze(d: Path, verbose: bool) -> dict:
    pairs = sorted({int(p.name.lstrip("ab")) for p in d.glob("*") if p.is_dir() and p.name.lstrip("ab").isdigit()})
    fp_store = fp_ab = det_store = det_ab = cells = cells_ab = unstable_aa = n_aa = 0
    for i in pairs:
        line, vs, target = f"pair {i + 1}:", None, []
        if (d / f"b{i}" / "results.jsonl").exists():
            base, new = load(d / f"a{i}" / "results.jsonl"), load(d / f"b{i}" / "results.jsonl")
            v = compare(base, new)
            fp = flagged(v)
            slow = slowed(new, SLOW_MODEL, SLOW)
            target = sorted(r.cell_id for r in slow.records if r.cell.model == SLOW_MODEL and r.ok)
            vs = compare(base, slow)
            hit = [c for c in flagged(vs) if c in target]
            line += (f" store mode: A/A flagged {len(fp)} of {len(latency_rows(v))} cells {fp}, "
                     f"planted +{SLOW - 1:.0%} on {SLOW_MODEL} {len(hit)}/{len(target)};")
            n_aa += len(latency_rows(v))
            unstable_aa += sum(r["verdict"] == "unstable" for r in latency_rows(v))
            fp_store += len(fp)
            det_store += len(hit)
            cells += len(target)
        if (d / f"ab{i}" / "results.jsonl").exists():
            b2, n2 = load(d / f"ab{i}" / "base" / "results.jsonl"), load(d / f"ab{i}" / "results.jsonl")
            bb = b2.by_id()
            fpa = flagged(compare_ab([(bb[r.cell_id], r) for r in n2 if r.cell_id in bb]))
            va = compare_ab([(bb[r.cell_id], r) for r in slowed(n2, SLOW_MODEL, SLOW) if r.cell_id in bb])
            target_ab = sorted(r.cell_id for r in n2 if r.cell.model == SLOW_MODEL and r.ok)
            hita = [c for c in flagged(va) if c in target_ab]
            paired = sum(len(r.paired_ratios) >= 2 for r in n2)
            fp_ab += len(fpa)
            det_ab += len(hita)
            cells_ab += len(target_ab)
            line += (f" A/B mode ({paired} of {len(n2)} cells with paired blocks): A/A flagged {len(fpa)} {fpa}, "
                     f"planted {len(hita)}/{len(target_ab)}")
        print(line)
        if verbose and vs is not None:
            print("  store mode, planted:\n" + _detail(vs, target))
        if verbose and (d / f"ab{i}" / "results.jsonl").exists():
            print("  A/B mode, planted:\n" + _detail(va, target_ab))
    print(f"A/A false positives: store mode {fp_store}, A/B mode {fp_ab} "
          f"({unstable_aa} of {n_aa} store-mode A/A rows unstable)")
    print(f"planted +{SLOW - 1:.0%} detection: store mode {det_store}/{cells}, A/B mode {det_ab}/{cells_ab}")
    return {"fp_store": fp_store, "fp_ab": fp_ab, "det_store": det_store, "det_ab": det_ab, "cells": cells,
            "cells_ab": cells_ab}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default=str(ROOT / "suites" / "quickstart.yaml"))
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--only", action="append", default=None,
                    help="cell globs (default: the fp32 and int8 cells)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", help="measure into (and resume from) this folder and keep the stores")
    ap.add_argument("--analyze", help="only re-judge the stores kept in this folder")
    ap.add_argument("--modes", default="store,ab", help="store, ab or both (default)")
    ap.add_argument("-v", "--verbose", action="store_true", help="per-cell ratios and floors of the planted runs")
    a = ap.parse_args()
    if a.analyze:
        analyze(Path(a.analyze), a.verbose)
        return
    only = a.only or ["*/fp32/*", "*/int8/*"]
    with tempfile.TemporaryDirectory() as td:
        d = Path(a.keep or td)
        d.mkdir(parents=True, exist_ok=True)
        measure(d, a.pairs, a.rounds, a.quick, a.suite, only, a.modes)
        analyze(d, a.verbose)


if __name__ == "__main__":
    main()
