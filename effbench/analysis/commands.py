"""`effbench layers SUITE --cell CELL`: where one cell's time goes, layer by layer. Prepares the model and
builds the variant as `effbench run` does (same cache), then profiles it in a fresh worker
(`measuring.layer_profile`) and writes `layers.csv` and `layers.json`; the report shows them.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

from effbench.config.suite import Suite, load_suite
from effbench.errors import UserError
from effbench.execution.workers import BUILD_TIMEOUT_S
from effbench.measure.layers import LayerRow, write

DEFAULT_RUNS = 50


def profile_cell(suite: Suite | str | Path, cell_glob: str, *, out_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, runs: int = DEFAULT_RUNS,
                 progress: bool = True) -> tuple[list[LayerRow], Path, dict]:
    """Profile the one cell of `suite` that `cell_glob` names with its runtime's own profiler; returns its
    layer rows, the folder of layers.csv / layers.json and what profiled them (profiler, runtime version,
    notes). Raises `Unsupported` (one line) when the runtime has no per-layer profiler or cannot run the
    variant: no other runtime's profile stands in for it, and nothing is written."""
    from effbench.execution.progress import Progress
    from effbench.execution.tasks import missing_layer_profiler
    from effbench.execution.workers import run_in_worker
    from effbench.measure.layers import LayerRow
    from effbench.runners import Unsupported
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    if runs < 1:
        raise UserError(f"--runs must be at least 1, got {runs}", field="--runs", fix="use --runs 50")
    cells = [c for c in suite.cells(None) if fnmatch.fnmatchcase(c.cell_id, cell_glob)]
    if len(cells) != 1:
        some = ", ".join(c.cell_id for c in (cells or suite.cells(None))[:4])
        raise UserError(f"--cell {cell_glob} matches {len(cells)} cells of this suite (e.g. {some})",
                        file=suite.path, field="--cell", fix="name exactly one cell id (globs allowed)")
    cell = cells[0]
    missing = missing_layer_profiler(cell.runner)
    if missing:   # said before anything is built
        raise Unsupported(missing)
    out = Path(out_dir) if out_dir else Path("reports") / suite.name
    bar = Progress(1, progress)
    try:
        run, art = _prepared_run(suite, cell, out, cache_dir, bar)
        vout = run.built_variant(art, cell.model, cell.variant, bar)
        if vout.kind == "user_error":
            raise vout.value
        if vout.kind != "ok":
            raise UserError(f"the {cell.variant} variant could not be built: {vout.reason}", file=suite.path,
                            field="precisions", fix="profile a variant the runner can run")
        bar.start(f"profiling {cell.cell_id} layer by layer ({runs} calls)")
        res = run_in_worker("effbench.execution.tasks:layer_profile",
                            {"cell": cell, "variant": vout.value, "artifact": art.to_json(),
                             "feeds": art.feeds(cell.batch_size, run.evaluation(cell.model)), "runs": runs},
                            timeout_s=BUILD_TIMEOUT_S, log_path=run.logs / f"layers-{cell.cell_id.replace('/', '_')}.log")
        if res.kind == "user_error":
            raise res.value
        if res.kind == "unsupported":
            raise Unsupported(f"{cell.cell_id}: {res.reason}")
        if res.kind != "ok":
            raise UserError(f"{cell.cell_id} cannot be profiled layer by layer ({res.kind}): {res.reason}",
                            file=suite.path, field="--cell", fix="profile a cell whose variant the runner can run")
    finally:
        bar.close()
    rows = [LayerRow(**r) for r in res.value["rows"]]
    folder = out / "layers" / cell.cell_id.replace("/", "_")
    meta = {"cell_id": cell.cell_id, **{k: v for k, v in res.value.items() if k != "rows"}}
    write(rows, folder, meta)
    return rows, folder, meta


def sensitivity(suite: Suite | str | Path, model_id: str, *, out_dir: str | Path | None = None,
                cache_dir: str | Path | None = None, samples: int = 256, progress: bool = True,
                runner: str | None = None) -> tuple[dict, Path]:
    """`effbench sensitivity SUITE --model ID`: each quantizable layer of the model's graph quantized to int8
    alone, and kept alone in FP32 with the rest quantized, scored on the model's dataset (or generated
    inputs, against the FP32 outputs); writes sensitivity.csv and sensitivity.json. `runner`: a runner of
    modules (torch) analyses each nn.Linear with torch's per-module quantization instead, into
    sensitivity/<model>-<runner>/."""
    result, folder, _ = _sensitivity(suite, model_id, out_dir, cache_dir, samples, progress, runner)
    return result, folder


def _sensitivity(suite, model_id: str, out_dir, cache_dir, samples: int, progress: bool,
                 runner: str | None = None) -> tuple[dict, Path, dict]:
    """`sensitivity`, and the prepared model it ran on (`_prepared`), which the advisor reuses."""
    import csv
    import json

    from effbench.analysis.sensitivity import LayerSensitivity, Score
    from effbench.execution.progress import Progress
    from effbench.execution.workers import run_in_worker
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    cells = [c for c in suite.cells(None) if c.model == model_id]
    if not cells:
        raise UserError(f"the suite has no model '{model_id}' (it has {', '.join(m.id for m in suite.spec.models)})",
                        file=suite.path, field="--model", fix="name one of the suite's model ids")
    if samples < 1:
        raise UserError(f"--samples must be at least 1, got {samples}", field="--samples", fix="use --samples 256")
    modules = _runs_modules(runner)
    out = Path(out_dir) if out_dir else Path("reports") / suite.name
    bar = Progress(1, progress)
    try:
        prep = _prepared(suite, model_id, out, cache_dir, samples, bar)
        inputs, labels, method, data = prep["inputs"], prep["labels"], prep["method"], prep["data"]
        bar.start(f"sensitivity of {model_id}: every layer quantized alone and kept alone "
                  + (f"({runner} per-module int8)" if modules else f"({method} int8)"))
        if modules:
            res = run_in_worker("effbench.analysis.torch_sensitivity:analyse",
                                {"artifact": prep["artifact"], "inputs": inputs, "labels": labels},
                                timeout_s=BUILD_TIMEOUT_S * 4, log_path=prep["logs"] / f"sensitivity-{model_id}-{runner}.log")
        else:
            res = run_in_worker("effbench.analysis.sensitivity:analyse",
                                {"onnx_path": prep["onnx_path"], "inputs": inputs, "labels": labels, "method": method,
                                 "calibration": prep["calibration"] if method == "static" else None, "samples": samples,
                                 "op_types": prep["op_types"]},
                                timeout_s=BUILD_TIMEOUT_S * 4, log_path=prep["logs"] / f"sensitivity-{model_id}.log")
        if res.kind == "user_error":
            raise res.value
        if res.kind != "ok":
            raise UserError(f"the sensitivity analysis of {model_id} {res.kind}: {res.reason}", file=suite.path,
                            field="--model", fix="see the log under the output folder's logs/")
    finally:
        bar.close()
    result = {"model": model_id, "inputs": "the model's dataset" if data is not None else
              "generated from the input spec (no dataset): scored against the FP32 outputs", **res.value}
    if modules:
        result["runner"] = runner
    folder = out / "sensitivity" / (f"{model_id}-{runner}" if modules else model_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sensitivity.json").write_text(json.dumps(result, indent=1))
    rows = [LayerSensitivity(**{**r, "only_this": Score(**r["only_this"]), "all_but_this": Score(**r["all_but_this"])})
            for r in res.value["rows"]]
    with open(folder / "sensitivity.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].flat()) if rows else ["layer"])
        w.writeheader()
        for r in rows:
            w.writerow(r.flat())
    return result, folder, prep


def sensitivity_text(result: dict, top: int = 20) -> str:
    def num(x, fmt):
        return format(x, fmt) if isinstance(x, (int, float)) else "-"
    lines = [f"{result['model']}: {result['layers_in_graph']} quantizable layers, {result['method']} int8, "
             f"{result['samples']} samples ({result['inputs']}); metric {result['metric']}: FP32 "
             f"{num(result['fp32_metric'], '.4f')}, uniform int8 {num(result['uniform_int8']['metric'], '.4f')}",
             f"{'layer':<36} {'op':<7} {'MACs':>11} {'time':>6} | {'alone: drop':>11} {'SQNR dB':>8} | "
             f"{'kept FP32: drop':>15} {'SQNR dB':>8}"]
    for r in result["rows"][:top]:
        a, b = r["only_this"], r["all_but_this"]
        lines.append(f"{r['layer'][:36]:<36} {r['op_type']:<7} {r['macs']:>11,} {num(r['time_share'], '>6.1%')} | "
                     f"{num(a['metric_drop'], '>+11.4f')} {num(a['sqnr_db'], '>8.1f')} | "
                     f"{num(b['metric_drop'], '>+15.4f')} {num(b['sqnr_db'], '>8.1f')}")
    lines.append("alone: only this layer int8 (how fragile it is); kept FP32: every other layer int8 (what "
                 "keeping it recovers). Most fragile first.")
    if result.get("not_quantized"):
        lines.append(f"not analysed: {result['not_quantized']}")
    return "\n".join(lines)


def advise(suite: Suite | str | Path, model_id: str, *, floor: float = 0.99, out_dir: str | Path | None = None,
           cache_dir: str | Path | None = None, samples: int = 256, batch_size: int | None = None,
           progress: bool = True, objective: str = "latency") -> tuple[dict, Path]:
    """`effbench advise SUITE --model ID`: the sensitivity analysis, then candidates guided by it, each
    measured (quality on the inputs, latency paired with FP32); writes plan.json and plan.onnx."""
    import json

    from effbench.execution.run import measure_budget
    from effbench.execution.workers import run_in_worker
    if not 0 < floor <= 1:
        raise UserError(f"--floor must be in (0, 1], got {floor}", field="--floor", fix="use e.g. --floor 0.99")
    from effbench.analysis.advisor import OBJECTIVES
    if objective not in OBJECTIVES:
        raise UserError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}", field="--objective",
                        fix="use --objective latency, energy or size")
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    result, folder, prep = _sensitivity(suite, model_id, out_dir, cache_dir, samples, progress)
    ranking = [r["layer"] for r in result["rows"]]
    base = Path(out_dir) if out_dir else Path("reports") / suite.name
    batch = batch_size or min(c.batch_size for c in suite.cells(None) if c.model == model_id)
    out = base / "advise" / model_id
    res = run_in_worker("effbench.analysis.advisor:advise",
                        {"onnx_path": prep["onnx_path"], "inputs": prep["inputs"], "labels": prep["labels"],
                         "method": prep["method"], "calibration": prep["calibration"] if prep["method"] == "static" else None,
                         "ranking": ranking, "layers": sorted(ranking), "out_dir": str(out), "floor": floor,
                         "batch_size": batch, "budget": measure_budget(suite, quick=False), "op_types": prep["op_types"],
                         "samples": samples, "objective": objective,
                         "layer_macs": {r["layer"]: r["macs"] for r in result["rows"]},
                         "energy_model": _energy_model(cache_dir)},
                        timeout_s=BUILD_TIMEOUT_S * 4, log_path=prep["logs"] / f"advise-{model_id}.log")
    if res.kind == "user_error":
        raise res.value
    if res.kind != "ok":
        raise UserError(f"the advisor for {model_id} {res.kind}: {res.reason}", file=suite.path, field="--model",
                        fix=f"see {prep['logs'] / f'advise-{model_id}.log'}")
    plan = {"model": model_id, "sensitivity": str(folder / "sensitivity.csv"), **res.value,
            # quality and the floor were scored on the evaluation part; static int8 calibrated on the other
            "split": prep["split"] or "no dataset: scored on generated inputs, calibrated on others (another seed)"}
    (out / "plan.json").write_text(json.dumps(plan, indent=1))
    return plan, out


def _runs_modules(runner: str | None) -> bool:
    """Whether `runner` runs modules (its per-module sensitivity path) rather than graphs; a one-line error
    for a runner nobody registered."""
    if runner is None:
        return False
    from effbench.runners import RUNNERS, load_shipped, runner_side
    load_shipped()
    if runner not in RUNNERS:
        raise UserError(f"--runner '{runner}' is not a registered runner ({', '.join(RUNNERS)})", field="--runner",
                        fix=f"use one of {', '.join(RUNNERS)}")
    return runner_side(runner) != "onnx"


def _energy_model(cache_dir) -> dict:
    """This machine's stated energy model (the local profile's), as the advisor's worker takes it."""
    from effbench.devices.detect import local_profile
    prof = local_profile(cache_dir=Path(cache_dir) if cache_dir else None)
    m = prof.energy()
    return {"pj_per_mac": dict(m.pj_per_mac), "pj_per_dram_byte": m.pj_per_dram_byte, "idle_w": m.static_w or None,
            "source": m.source}


def _prepared_run(suite: Suite, cell, out: Path, cache_dir, bar):
    """A run of `suite` into `out` with `cell`'s model prepared as `effbench run` prepares it (same
    cache) and its dataset loaded: (the run, the model artifact)."""
    from effbench.execution.run import RunOptions, SuiteRun
    from effbench.models.sources import default_cache_dir
    run = SuiteRun(suite, RunOptions(out_dir=out, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                                     progress=False), [])
    run.logs.mkdir(parents=True, exist_ok=True)
    run.todo = [(0, cell)]
    run.setup(run.todo, bar)
    art = run.artifacts[cell.model]
    if not hasattr(art, "to_json"):
        raise UserError(f"model {cell.model} could not be prepared: {art.reason}", file=suite.path,
                        field="models", fix="see the build log under the output folder's logs/")
    return run, art


def _prepared(suite: Suite, model_id: str, out: Path, cache_dir, samples: int, bar) -> dict:
    """The model prepared (`_prepared_run`), its inputs and labels for scoring (the dataset's evaluation part,
    else inputs generated from the input spec), the calibration inputs (the dataset's calibration part, else
    generated with another seed: never the scored samples), and the int8 method `int8` would use for it."""
    from effbench.variants.integer import graph_kind
    cell = next(c for c in suite.cells(None) if c.model == model_id)
    run, art = _prepared_run(suite, cell, out, cache_dir, bar)
    split = run.datasets.get(model_id)
    data = split.evaluation if split is not None else None
    inputs = data.inputs if data is not None else art.feeds(min(samples, 256), None, seed=20261128)
    calibration = (split.calibration.inputs if split is not None
                   else art.feeds(min(samples, 256), None, seed=20261129))
    kind = graph_kind(art.onnx_path)
    return {"inputs": {k: v[:samples] for k, v in inputs.items()}, "data": data, "onnx_path": art.onnx_path,
            "calibration": {k: v[:samples] for k, v in calibration.items()},
            "split": split.describe() if split is not None else None,
            "artifact": art.to_json(),
            "labels": data.labels[:samples] if data is not None and data.labels is not None else None,
            # static QDQ where there is data or a CNN (int8's own choice), MatMul/Gemm only in a transformer
            "method": "static" if data is not None or kind == "cnn" else "dynamic",
            "op_types": ["MatMul", "Gemm"] if kind == "transformer" else None, "logs": run.logs}


def advise_text(plan: dict) -> str:
    def sp(c):
        s = c.get("speedup_vs_fp32")
        return f"{s['value']:.2f}x [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}]" if s else "-"
    def en(c):
        e = c.get("energy") or {}
        j = e.get("system_j") if e.get("system_j") is not None else e.get("dynamic_j")
        from effbench.units import fmt_si
        return "-" if j is None else fmt_si(j, "J") + ("" if e.get("system_j") is not None else "*")
    lines = [f"objective: {plan.get('objective', 'latency')}",
             f"{'candidate':<34} {'quality vs FP32':>15} {'speedup (paired)':>22} {'size':>10} {'energy':>11}  floor"]
    for name, c in plan["candidates"].items():
        rq = c.get("relative_quality")
        lines.append(f"{name:<34} {(f'{rq:.4f}' if rq is not None else '-'):>15} {sp(c):>22} "
                     f"{c['size_bytes']:>10,} {en(c):>11}  {'meets' if c['meets_floor'] else 'below'}")
    if any("*" in en(c) for c in plan["candidates"].values()):
        lines.append("* energy: modeled dynamic part only (arithmetic and DRAM traffic; this machine's profile "
                     "gives no idle power)")
    if plan.get("chosen"):
        lines.append(f"plan: {plan['chosen']} (quality {plan['relative_quality']:.4f} of FP32, {sp(plan)} vs FP32)"
                     + (f"; {plan['note']}" if plan.get("note") else ""))
    else:
        lines.append(f"no plan: {plan.get('reason')}")
    if plan.get("best_uniform"):
        b = plan["best_uniform"]
        lines.append(f"best uniform variant meeting the floor: {b['precision']} ({sp(b)})")
    lines.append(f"Pareto front: {'; '.join(plan['pareto'])}. {plan['timing']}")
    for name, why in (plan.get("not_built") or {}).items():
        lines.append(f"{name}: not a candidate ({why})")
    return "\n".join(lines)
