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


def compare(base, new, **kwargs):
    """The regression gate: a Verdict for two result stores (paths or Results)."""
    from effbench import compare as _compare
    from effbench.results import Results, load
    base = base if isinstance(base, Results) else load(base)
    new = new if isinstance(new, Results) else load(new)
    return _compare.compare(base, new, **kwargs)


def load(*paths):
    from effbench.results import load as _load
    return _load(*paths)
