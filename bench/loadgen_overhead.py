"""The load generator's own limit: MLPerf LoadGen driving a no-op SUT (`effbench.scenarios.loadgen`, the
same Python worker pool a model's calls run in), so nothing but LoadGen and the SUT's dispatch costs time.

Server: the highest Poisson rate LoadGen calls VALID with p99 <= the bound (`find_max_qps`: bracket, bisect
to 5%, a run at 1.3x). Offline: LoadGen's samples/s over one query, at batch 1 and 32 (one no-op call per
batch). Each figure over several rounds (median and range): this machine drifts between moments. A model's
figure within 2x of these is limited by the generator, not by the model. Every figure is LoadGen's own,
parsed from its summary log; MLPerf-style runs, not MLPerf results.
Run: nice -n 10 .venv/bin/python bench/loadgen_overhead.py [--rounds 3] [--bound-ms 10]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from effbench.scenarios.loadgen import LoadGenSettings, find_max_qps, run_loadgen, server_runner


def noop() -> None:
    return None


def server_peak(threads: int, bound_ms: float, out: Path, budget_s: float) -> dict:
    base = LoadGenSettings(scenario="server", target_qps=1.0, latency_bound_ms=bound_ms, percentile=99,
                           min_duration_ms=1000, min_query_count=1000)
    run_at = server_runner({1: noop}, base, out, qsl_samples=1024, threads=threads)
    search = find_max_qps(run_at, 1000.0, min_qps=100.0, budget_s=budget_s)
    best = search.best
    return {"max_qps": search.max_qps, "ended": search.ended,
            "p99_ms_at_max": best.percentile_ms if best else None,
            "completed_qps_at_max": best.completed_qps if best else None,
            "rates": [{"qps": r["qps"], "valid": r["valid"], "p99_ms": r["percentile_ms"],
                       "completed_qps": r["completed_qps"]} for r in search.rates()],
            "loadgen": best.generator if best else None}


def offline_rate(threads: int, batch: int, out: Path) -> dict:
    """LoadGen's offline samples/s; its one query must last min_duration: when LoadGen says it did not,
    the next try asks for 1.5x the rate LoadGen measured (at most 3 tries)."""
    expected = 100_000.0
    for _ in range(3):
        s = LoadGenSettings(scenario="offline", expected_qps=expected, min_duration_ms=1000, min_query_count=1)
        r = run_loadgen({batch: noop}, s, out, qsl_samples=1024, threads=threads)
        if r.valid or not r.samples_per_s:
            break
        expected = 1.5 * r.samples_per_s
    return {"samples_per_s": r.samples_per_s, "valid": r.valid, "expected_qps": expected,
            "constraints": dict(r.constraints), "loadgen": r.generator}


def spread(xs: list[float | None]) -> dict:
    v = [x for x in xs if x is not None]
    return {"median": statistics.median(v) if v else None, "min": min(v) if v else None,
            "max": max(v) if v else None, "rounds": xs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bound-ms", type=float, default=10.0)
    ap.add_argument("--budget-s", type=float, default=60.0, help="time budget of one server search")
    ap.add_argument("--json", default=str(ROOT / "bench" / "loadgen_overhead.json"))
    a = ap.parse_args()
    from importlib.metadata import version
    results: dict = {"what": "MLPerf LoadGen with a no-op SUT (effbench.scenarios.loadgen's worker pool): the "
                             "generator's own limit; MLPerf-style runs, not MLPerf results",
                     "loadgen": version("mlcommons-loadgen"), "python": platform.python_version(),
                     "cpu_count": os.cpu_count(), "machine": platform.machine(),
                     "load_avg_at_start": os.getloadavg(),
                     "server": {"latency_bound_ms": a.bound_ms, "percentile": 99, "min_duration_ms": 1000,
                                "min_query_count": 1000, "by_threads": {}},
                     "offline": {"min_duration_ms": 1000, "by_threads_batch": {}}}
    with tempfile.TemporaryDirectory(prefix="loadgen-overhead-") as tmp:
        tmp = Path(tmp)
        for threads in (1, 2):
            runs = [server_peak(threads, a.bound_ms, tmp / f"server-t{threads}-r{i}", a.budget_s)
                    for i in range(a.rounds)]
            results["server"]["by_threads"][str(threads)] = {"max_qps": spread([r["max_qps"] for r in runs]),
                                                             "runs": runs}
            for batch in (1, 32):
                runs = [offline_rate(threads, batch, tmp / f"offline-t{threads}-b{batch}-r{i}")
                        for i in range(a.rounds)]
                results["offline"]["by_threads_batch"][f"{threads}/{batch}"] = {
                    "samples_per_s": spread([r["samples_per_s"] if r["valid"] else None for r in runs]),
                    "runs": runs}
    results["load_avg_at_end"] = os.getloadavg()
    Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"LoadGen {results['loadgen']}, no-op SUT, {a.rounds} rounds (median [min, max]); MLPerf-style, "
          "not MLPerf results")
    rows = [(f"server max qps, p99 <= {a.bound_ms:g} ms", threads, d["max_qps"])
            for threads, d in results["server"]["by_threads"].items()]
    rows += [(f"offline samples/s, batch {key.split('/')[1]}", key.split("/")[0], d["samples_per_s"])
             for key, d in results["offline"]["by_threads_batch"].items()]
    print(f"{'scenario':<34} {'SUT threads':>11} {'median':>12} {'range':>24}")
    for what, threads, m in rows:
        rng = "[{:,.0f}, {:,.0f}]".format(m["min"] or 0, m["max"] or 0)
        print(f"{what:<34} {threads:>11} {m['median'] or 0:>12,.0f} {rng:>24}")
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
