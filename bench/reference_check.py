"""The shipped profiles' derates and error bands, regenerated from their published references.

    python bench/reference_check.py [--cache DIR] [--stored] [--write-profiles] [--json FILE]

Counts the work of every reference's model (exports the zoo's random-weight copy into the cache; about
20 s the first time), or with --stored reads the counts kept in bench/reference_check.json; runs
`effbench.devices.references.check_references` on every shipped profile and writes the report, the
counted work and the figures each profile should carry to bench/reference_check.json. With
--write-profiles it rewrites each device_profiles/*.yaml's `derate:` block and `error_band:` line to
those figures (nothing else in the file changes). tests/devices/test_reference_fit.py recomputes them
from the stored work and fails when a profile's figures differ from what the data give.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
JSON = ROOT / "bench" / "reference_check.json"


def shipped_profiles():
    from effbench.devices import load_profiles, shipped_ids
    return load_profiles([i for i in shipped_ids() if i != "local"])


def figures_json(figs: dict) -> dict:
    return {pid: {k: (v.model_dump(mode="json") if v is not None else None) for k, v in f.items()}
            for pid, f in figs.items()}


def _flow(d: dict) -> str:
    """A one-line YAML mapping; strings as JSON strings (valid YAML double-quoted scalars)."""
    parts = []
    for k, v in d.items():
        if isinstance(v, bool):
            parts.append(f"{k}: {'true' if v else 'false'}")
        elif isinstance(v, (int, float)):
            parts.append(f"{k}: {v:g}")
        else:
            parts.append(f"{k}: {json.dumps(v, ensure_ascii=False)}")
    return "{" + ", ".join(parts) + "}"


def _block(text: str, key: str) -> tuple[int, int] | None:
    """Line span [start, end) of top-level `key:` and its indented or flow continuation."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if re.match(rf"{re.escape(key)}:(\s|$)", line):
            j = i + 1
            while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
                j += 1
            while j > i + 1 and not lines[j - 1].strip():  # leave blank lines after the block alone
                j -= 1
            return i, j
    return None


def rewrite_profile(text: str, derate, band) -> str:
    """`text` with its derate block and error_band line set to the figures (removed where None)."""
    lines = text.splitlines(keepends=True)

    def put(key: str, new: list[str], before: tuple[str, ...]) -> None:
        nonlocal lines
        cur = "".join(lines)
        span = _block(cur, key)
        if span:
            lines[span[0]:span[1]] = new
            return
        if not new:
            return
        for anchor in before:
            at = _block(cur, anchor)
            if at:
                lines[at[0]:at[0]] = new
                return
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.extend(new)

    if derate is None:
        put("derate", [], ())
    else:
        fig = lambda f: _flow({"value": f.value, "derived": True, "source": f.source})  # noqa: E731
        put("derate", ["derate:\n", f"  compute: {fig(derate.compute)}\n", f"  memory: {fig(derate.memory)}\n"],
            ("per_op_overhead_s",))
    put("error_band", [] if band is None else
        [f"error_band: {_flow({'low': band.low, 'high': band.high, 'source': band.source})}\n"],
        ("references", "gpu_names"))
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", help="cache folder for the zoo's exports (default: effbench's)")
    ap.add_argument("--stored", action="store_true", help=f"use the work counted in {JSON.name}, count nothing")
    ap.add_argument("--write-profiles", action="store_true",
                    help="rewrite device_profiles/*.yaml's derate and error_band")
    ap.add_argument("--json", default=str(JSON))
    a = ap.parse_args(argv)
    from effbench.devices.profile import profiles_dir
    from effbench.devices.references import check_references, shipped_figures
    from effbench.models.sources import default_cache_dir
    work = json.loads(JSON.read_text())["work"] if a.stored else None
    cache = Path(a.cache) if a.cache else default_cache_dir()
    profiles = shipped_profiles()
    report = check_references(profiles, cache, work=work)
    figs = shipped_figures(report)
    rewrote = []
    if a.write_profiles:
        for p in profiles:
            path = profiles_dir() / f"{p.id}.yaml"
            old = path.read_text()
            new = rewrite_profile(old, figs[p.id]["derate"], figs[p.id]["error_band"])
            if new != old:
                path.write_text(new)
                rewrote.append(p.id)
        if rewrote:  # the report's "as shipped" columns describe the files as they are now
            report = check_references(shipped_profiles(), cache, work=report.work)
    out = {**report.to_json(), "figures": figures_json(figs), "work": report.work}
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(report.text())
    for pid in rewrote:
        print(f"rewrote device_profiles/{pid}.yaml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
