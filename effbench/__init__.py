"""effbench: efficiency benchmarking of ML model variants (latency, memory, work, energy, quality).

The Python API mirrors the CLI: `run(suite) -> Results`, `report(results, out)`, `compare(base, new)`.
"""
from __future__ import annotations

__version__ = "0.1.0"


def run(suite, **kwargs):
    """Run a suite (a path or a loaded Suite); returns the merged `Results`. See `effbench.execute.run`."""
    from effbench.execute import run as _run
    return _run(suite, **kwargs)


def report(results, out_dir, **kwargs):
    """Write index.html, summary.md and results.csv for `results` into `out_dir`."""
    from effbench.report import write_report
    return write_report(results, out_dir, **kwargs)


def load(*paths):
    from effbench.results import load as _load
    return _load(*paths)


def compare(base, new, **kwargs):
    """Gate `new` against `base`; returns a `Verdict`. See `effbench.gate.compare` (imported on first
    use, so that `effbench run` and its workers do not pay for scipy.stats up front)."""
    from effbench.gate import compare as _compare
    return _compare(base, new, **kwargs)
