"""Can two stores be compared? Their machine-speed indexes and the host, Python and packages they ran on.

Differences become the verdict's warnings; the speed ratio also drives `compare(..., normalize=True)`.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from effbench.results.record import Provenance
from effbench.results.store import Results

# Two stores whose machine-speed indexes differ by more than this are not comparable without care.
SPEED_INDEX_TOLERANCE = 0.10


def _speed_index(results: Results) -> dict[str, Any] | None:
    idx = [r.provenance.speed_index for r in results.records if isinstance(r.provenance.speed_index, dict)]
    if not idx:
        return None
    names = sorted({str(i.get("name")) for i in idx})
    ms = [float(i["median_ms"]) for i in idx if isinstance(i.get("median_ms"), (int, float)) and i["median_ms"] > 0]
    gf = [float(i["gflops"]) for i in idx if isinstance(i.get("gflops"), (int, float)) and i["gflops"] > 0]
    return {"names": names, "median_ms": float(np.median(ms)) if ms else None,
            "gflops": float(np.median(gf)) if gf else None}


def speed_ratio(base: Results, new: Results) -> tuple[float | None, list[str]]:
    """(new machine time / base machine time on the speed index, warnings)."""
    bi, ni = _speed_index(base), _speed_index(new)
    if bi is None or ni is None:
        missing = " and ".join(s for s, i in (("base", bi), ("new", ni)) if i is None)
        return None, [f"no machine-speed index in {missing}: the two machines cannot be checked for speed"]
    if bi["names"] != ni["names"]:
        return None, [f"speed indexes differ ({', '.join(bi['names'])} vs {', '.join(ni['names'])}): not comparable"]
    if bi["median_ms"] and ni["median_ms"]:
        ratio = ni["median_ms"] / bi["median_ms"]
    elif bi["gflops"] and ni["gflops"]:
        ratio = bi["gflops"] / ni["gflops"]
    else:
        return None, ["speed index has neither median_ms nor gflops"]
    warns = []
    if abs(ratio - 1) > SPEED_INDEX_TOLERANCE:
        warns.append(f"machine-speed index differs by {ratio - 1:+.1%} (new vs base, {bi['names'][0]}): "
                     "timings compare two machines; consider --normalize or the A/B mode")
    return ratio, warns


def environment_warnings(base: Results, new: Results) -> list[str]:
    """Host, Python and package versions that differ between the stores."""
    def collect(res: Results, key: str, get: Callable[[Provenance], Any]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for r in res.records:
            v = get(r.provenance)
            items = v.items() if isinstance(v, dict) else ([(key, v)] if v is not None else [])
            for k, x in items:
                out.setdefault(k, set()).add(json.dumps(x, sort_keys=True) if isinstance(x, (dict, list)) else str(x))
        return out
    fields: list[tuple[str, str, Callable[[Provenance], Any]]] = [
        ("host", "host", lambda p: p.host), ("python", "python", lambda p: p.python),
        ("effbench", "effbench", lambda p: p.effbench), ("packages", "package", lambda p: p.packages)]
    warns = []
    for key, label, get in fields:
        b, n = collect(base, key, get), collect(new, key, get)
        diffs = [f"{k} {'/'.join(sorted(b.get(k, {'-'})))} -> {'/'.join(sorted(n.get(k, {'-'})))}"
                 for k in sorted(set(b) | set(n)) if b.get(k) != n.get(k)]
        if diffs:
            shown = ", ".join(diffs[:6]) + (f", and {len(diffs) - 6} more" if len(diffs) > 6 else "")
            warns.append(f"{label} differs between stores: {shown}")
    return warns
