"""effbench: efficiency benchmarking of ML model variants (latency, memory, work, energy, quality).

The Python API mirrors the CLI: `run(suite) -> Results`, `report(results, out)`, `compare(base, new)`.
"""
from __future__ import annotations

from effbench.version import __version__  # noqa: F401


def run(suite, *, ray: str | None = None, **kwargs):
    """Run a suite (a path or a loaded Suite); returns the merged `Results`. See `effbench.execution.run.run`;
    `ray`: a Ray cluster's address, to measure on a fleet of device nodes (`effbench.fleet.run.run`)."""
    if ray:
        from effbench.fleet.run import run as _fleet_run
        return _fleet_run(suite, ray=ray, **kwargs)
    from effbench.execution.run import run as _run
    return _run(suite, **kwargs)


def report(results, out_dir, **kwargs):
    """Write index.html, summary.md and results.csv for `results` into `out_dir`."""
    from effbench.report import write_report
    return write_report(results, out_dir, **kwargs)


def load(*paths, allow_mixed: bool = False):
    from effbench.results.store import load as _load
    return _load(*paths, allow_mixed=allow_mixed)


def compare(base, new, **kwargs):
    """Gate `new` against `base`; returns a `Verdict`. See `effbench.gate.compare` (imported on first
    use, so that `effbench run` and its workers do not pay for scipy.stats up front)."""
    from effbench.gate import compare as _compare
    return _compare(base, new, **kwargs)
