"""`effbench layers SUITE --cell CELL`: where one cell's time goes, layer by layer. Prepares the model and
builds the variant as `effbench run` does (same cache), then profiles it in a fresh worker
(`measuring.layer_profile`) and writes `layers.csv` and `layers.json`; the report shows them.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

from effbench.errors import UserError
from effbench.measure.layers import LayerRow, write
from effbench.suite import Suite, load_suite
from effbench.workers import BUILD_TIMEOUT_S

DEFAULT_RUNS = 50


def profile_cell(suite: Suite | str | Path, cell_glob: str, *, out_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, runs: int = DEFAULT_RUNS,
                 progress: bool = True) -> tuple[list[LayerRow], Path]:
    """Profile the one cell of `suite` that `cell_glob` names; returns its layer rows and the folder of
    layers.csv / layers.json."""
    from effbench.execute import RunOptions, SuiteRun
    from effbench.measure.layers import LayerRow
    from effbench.models.sources import default_cache_dir
    from effbench.progress import Progress
    from effbench.workers import run_in_worker
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    if runs < 1:
        raise UserError(f"--runs must be at least 1, got {runs}", field="--runs", fix="use --runs 50")
    cells = [c for c in suite.cells(None) if fnmatch.fnmatchcase(c.cell_id, cell_glob)]
    if len(cells) != 1:
        some = ", ".join(c.cell_id for c in (cells or suite.cells(None))[:4])
        raise UserError(f"--cell {cell_glob} matches {len(cells)} cells of this suite (e.g. {some})",
                        file=suite.path, field="--cell", fix="name exactly one cell id (globs allowed)")
    cell = cells[0]
    out = Path(out_dir) if out_dir else Path("reports") / suite.name
    opts = RunOptions(out_dir=out, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                      progress=progress)
    run = SuiteRun(suite, opts, [])
    run.logs.mkdir(parents=True, exist_ok=True)
    run.todo = [(0, cell)]
    bar = Progress(1, progress)
    try:
        run.setup(run.todo, bar)
        art = run.artifacts[cell.model]
        if not hasattr(art, "to_json"):
            raise UserError(f"model {cell.model} could not be prepared: {art.reason}", file=suite.path,
                            field="models", fix="see the build log under the output folder's logs/")
        vout = run.built_variant(art, cell.model, cell.variant, bar)
        if vout.kind == "user_error":
            raise vout.value
        if vout.kind != "ok":
            raise UserError(f"the {cell.variant} variant could not be built: {vout.reason}", file=suite.path,
                            field="precisions", fix="profile a variant the runner can run")
        bar.start(f"profiling {cell.cell_id} layer by layer ({runs} calls)")
        res = run_in_worker("effbench.measuring:layer_profile",
                            {"cell": cell, "variant": vout.value, "artifact": art.to_json(),
                             "feeds": art.feeds(cell.batch_size, run.datasets.get(cell.model)), "runs": runs},
                            timeout_s=BUILD_TIMEOUT_S, log_path=run.logs / f"layers-{cell.cell_id.replace('/', '_')}.log")
        if res.kind == "user_error":
            raise res.value
        if res.kind != "ok":
            raise UserError(f"{cell.cell_id} cannot be profiled layer by layer ({res.kind}): {res.reason}",
                            file=suite.path, field="--cell", fix="profile an ONNX Runtime cell")
    finally:
        bar.close()
    rows = [LayerRow(**r) for r in res.value["rows"]]
    folder = out / "layers" / cell.cell_id.replace("/", "_")
    write(rows, folder, {"cell_id": cell.cell_id, "graph": res.value["graph"], "runs": runs,
                         "timing": "ONNX Runtime's profiler: per-kernel durations, median over the calls"})
    return rows, folder
