"""Reports of a results store: the HTML dashboard, the Markdown summary and the flat CSV.

`write_report(results, out_dir, verdict=...)` writes all three; `effbench run` and `effbench report` call it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from effbench.errors import UserError
from effbench.report.csv import write_csv
from effbench.report.html import render_html
from effbench.report.markdown import render_markdown
from effbench.report.overview import Overview, build_overview
from effbench.report.table import Row, build_rows
from effbench.results.store import Results

__all__ = ["write_report", "build_rows", "build_overview", "render_html", "render_markdown", "write_csv",
           "Row", "Overview"]


def _verdict_rows(verdict: object) -> list[dict[str, Any]]:
    rows = getattr(verdict, "rows", verdict)
    out = []
    for row in rows or []:
        if dataclasses.is_dataclass(row) and not isinstance(row, type):
            row = dataclasses.asdict(row)
        elif not isinstance(row, dict) and hasattr(row, "to_json"):
            row = row.to_json()
        out.append(dict(row))
    return out


def write_report(results: Results, out_dir: Path, *, verdict: object | None = None,
                 title: str | None = None) -> dict[str, Path]:
    """Write out_dir/index.html, out_dir/summary.md and out_dir/results.csv; return their paths.

    `verdict`: the gate's verdict against a baseline (`effbench.gate.compare`), shown as a regression
    view; the report renders it and never runs the gate itself.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the report folder: {e.strerror or e}", file=out_dir,
                        fix="choose a writable folder with -o") from e
    rows = build_rows(results)
    overview = build_overview(results, rows, title)
    verdict_rows = None if verdict is None else _verdict_rows(verdict)
    paths = {"html": out_dir / "index.html", "markdown": out_dir / "summary.md", "csv": out_dir / "results.csv"}
    try:
        from effbench.report.layers import load_precision_views, load_profiles
        # per-layer profiles (`effbench layers`) beside the stores read, or in the report's own folder
        folders = list(dict.fromkeys([out_dir, *(Path(src).parent for src in results.sources)]))
        profiles = [p for f in folders for p in load_profiles(f)]
        views = [v for f in folders for v in load_precision_views(f)]
        paths["html"].write_text(render_html(rows, overview, verdict_rows=verdict_rows, layer_profiles=profiles,
                                             precision_views=views), encoding="utf-8")
        paths["markdown"].write_text(render_markdown(rows, overview, verdict_rows=verdict_rows),
                                     encoding="utf-8")
        write_csv(results, paths["csv"])
    except OSError as e:
        raise UserError(f"cannot write the report: {e.strerror or e}", file=out_dir,
                        fix="free disk space or choose a writable folder with -o") from e
    return paths
