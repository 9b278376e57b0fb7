"""How far the local projection is from the measurement on held-out models (issue 14's acceptance).

    python bench/projection_error.py [--out DIR] [--json FILE] [--stores HO_BEFORE QS HO_AFTER]

Runs bench/projection_heldout.yaml (held-out cnn28, mlp2, resnet-tiny; ORT fp32/fp16/int8, batch 1/16) with a fresh
cache (the local profile uncalibrated), then the quickstart, `effbench profiles calibrate` on it, and the
held-out suite again; prints, per store, the factor between projected and measured latency (median,
max, how many within 25%, how many over 2x) and the worst cells. `--stores` reads three existing stores
instead of running. Targets (issue 14): median within 25%, no cell over 2x, after calibration.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def errors(store: Path) -> dict:
    from effbench.results.store import load
    rows = []
    for r in load(store).records:
        p = r.projections.get("local")
        if r.ok and p is not None and p.error_pct is not None:
            rows.append({"cell": r.cell_id, "projected_over_measured": 1 + p.error_pct / 100})
    return _summary(rows, str(store))


def refit(quickstart: Path, heldout: list[Path], cache: Path | None) -> dict:
    """Calibrate on the quickstart store here (nothing written) and project the held-out stores' records
    onto the calibrated and the uncalibrated local profile: the model's error without re-measuring."""
    from effbench.devices.calibrate import calibrate
    from effbench.devices.detect import local_profile
    from effbench.devices.project import project_one
    from effbench.results.store import load
    base = local_profile(cache_dir=cache, calibrated=False)
    rep = calibrate(load(quickstart).records, cache_dir=cache, write=False, profile=base)
    from effbench.devices.profile import apply_figures
    after = apply_figures(base, rep.to_json(), "refit")
    out = {"loo_mdape_pct": rep.mdape_loo}
    for name, prof in (("uncalibrated", base), ("calibrated", after)):
        rows = []
        for store in heldout:
            for r in load(store).records:
                p = project_one(r, prof)
                if r.ok and p.error_pct is not None:
                    rows.append({"cell": f"{store.name}:{r.cell_id}", "projected_over_measured": 1 + p.error_pct / 100})
        out[name] = _summary(rows, "+".join(str(h) for h in heldout))
    return out


def _summary(rows: list[dict], store: str) -> dict:
    factors = [max(x["projected_over_measured"], 1 / x["projected_over_measured"]) for x in rows]
    if not rows:
        return {"store": store, "cells": 0}
    return {"store": store, "cells": len(rows), "median_factor": statistics.median(factors),
            "max_factor": max(factors), "within_25pct": sum(abs(x["projected_over_measured"] - 1) <= 0.25 for x in rows),
            "over_2x": sum(f > 2 for f in factors),
            "worst": sorted(rows, key=lambda x: -max(x["projected_over_measured"], 1 / x["projected_over_measured"]))[:5]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--json")
    ap.add_argument("--stores", nargs=3, metavar=("HO_BEFORE", "QS", "HO_AFTER"))
    ap.add_argument("--refit", action="store_true", help="with --stores: calibrate on QS here and re-project both "
                    "held-out stores (the model's error on the same measurements, nothing re-measured)")
    ap.add_argument("--cache", help="with --refit: the cache folder holding the local profile (OUT/cache/effbench)")
    a = ap.parse_args(argv)
    if a.refit:
        if not a.stores:
            ap.error("--refit needs --stores")
        res = refit(Path(a.stores[1]), [Path(a.stores[0]), Path(a.stores[2])], Path(a.cache) if a.cache else None)
        print(json.dumps(res, indent=1))
        return 0
    if a.stores:
        stores = [Path(s) for s in a.stores]
    else:
        out = Path(a.out or tempfile.mkdtemp(prefix="projection-error-"))
        env = {**os.environ, "XDG_CACHE_HOME": str(out / "cache"),
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")])}
        eb = [sys.executable, "-m", "effbench"]
        stores = [out / "heldout-uncalibrated", out / "quickstart", out / "heldout-calibrated"]
        for cmd in ([*eb, "run", "bench/projection_heldout.yaml", "-o", str(stores[0]), "--no-progress", "--no-report"],
                    [*eb, "run", "suites/quickstart.yaml", "-o", str(stores[1]), "--no-progress", "--no-report"],
                    [*eb, "profiles", "calibrate", "--results", str(stores[1])],
                    [*eb, "run", "bench/projection_heldout.yaml", "-o", str(stores[2]), "--no-progress", "--no-report"]):
            subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    result = {"uncalibrated": errors(stores[0]), "quickstart": errors(stores[1]), "calibrated": errors(stores[2])}
    for name, e in result.items():
        if e.get("cells"):
            print(f"{name:13s} cells {e['cells']:3d}  median x{e['median_factor']:.2f}  max x{e['max_factor']:.1f}  "
                  f"within 25% {e['within_25pct']}  over 2x {e['over_2x']}")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
