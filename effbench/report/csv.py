"""`results.csv`: one row per merged record, the flat columns of `Results.to_frame()`."""
from __future__ import annotations

from pathlib import Path

from effbench.results.store import Results


def write_csv(results: Results, path: Path) -> Path:
    frame = results.to_frame()
    frame.to_csv(path, index=False)
    return path
