"""The command line: argument parsing, exit codes and printing. Logic lives in the Python API.

Exit codes (all commands): 0 success; 1 the run found what it was asked to find (a regression, a
failed cell, a variant under its quality floor with --strict); 2 bad input or usage.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from effbench.cli.summary import summary_table
from effbench.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one line, exit 2
        self.exit(2, f"error: {self.prog}: {message}; see '{self.prog} --help'\n")


# Over 80 lines on purpose: argparse declarations, one subcommand after another: nothing to factor.
def _parser() -> argparse.ArgumentParser:
    from effbench.version import __version__
    p = _Parser(prog="effbench", description="Efficiency benchmarks of model variants: latency, memory, work, "
                                             "energy and quality, measured and projected onto devices.")
    p.add_argument("--version", action="version", version=f"effbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run a suite and write results + report")
    r.add_argument("suite")
    r.add_argument("-o", "--output", help="output folder (default reports/<suite name>/)")
    r.add_argument("--only", action="append", metavar="GLOB", help="run only cells whose id matches (repeatable)")
    r.add_argument("--resume", action="store_true", help="skip cells already in the output's results.jsonl")
    r.add_argument("--allow-mixed", action="store_true", help="merge rounds measured on machines or with software that differ, marked mixed (else refused)")
    r.add_argument("--rounds", type=int, help="rounds (default: the suite's measure.rounds): each a fresh worker per model and runner; CIs are over rounds")
    r.add_argument("--quick", action="store_true", help="smoke run: short budgets and one round unless --rounds (its CIs then cover one moment)")
    r.add_argument("--strict", action="store_true", help="exit 1 when a variant falls below its quality floor")
    r.add_argument("--cache-dir", default=os.environ.get("EFFBENCH_CACHE_DIR"),
                   help="where built models and variants are cached (default ~/.cache/effbench; env EFFBENCH_CACHE_DIR)")
    r.add_argument("--timeout", type=float, help="seconds before a cell's worker is killed")
    r.add_argument("--no-progress", action="store_true", help="no progress output")
    r.add_argument("--no-report", action="store_true", help="do not write the HTML/Markdown/CSV report")

    r.add_argument("--baseline", metavar="STORE", help="gate the new results against this store (exit 1 on regression)")
    r.add_argument("--rule", action="append", default=[], metavar="METRIC:THRESHOLD",
                   help="gate rule, e.g. latency.median:5%% (repeatable; with --baseline or --ab)")
    r.add_argument("--ab", metavar="BASE_SUITE",
                   help="A/B mode: measure BASE_SUITE's cells interleaved with this suite's and gate on per-round ratios")
    r.add_argument("--ray", metavar="ADDRESS", help="measure each of the suite's devices that a live node of this Ray "
                   "cluster advertises on such a node (effbench node; docs/fleet.md); needs effbench[fleet]")

    nd = sub.add_parser("node", help="start a Ray node that measures for one device profile (wraps `ray start`)")
    nd.add_argument("--device", help="the device profile id this machine is (resource device:<id>, one task at a time)")
    nd.add_argument("--head", action="store_true", help="start a new cluster here (its address is printed)")
    nd.add_argument("--address", help="join the cluster whose head is at HOST:PORT")
    nd.add_argument("--port", type=int, help="the head's port (default Ray's, 6379)")
    nd.add_argument("--cache-dir", default=os.environ.get("EFFBENCH_CACHE_DIR"),
                    help="where this node builds and caches models and variants (default ~/.cache/effbench)")
    nd.add_argument("--dry-run", action="store_true", help="print the ray start command, run nothing")
    nd.add_argument("ray_args", nargs=argparse.REMAINDER, metavar="-- RAY_START_ARGS",
                    help="more arguments for ray start, after --")

    v = sub.add_parser("validate", help="check a suite without running it")
    v.add_argument("suite")

    rep = sub.add_parser("report", help="render results stores (several are merged) as HTML, Markdown and CSV")
    rep.add_argument("stores", nargs="+", metavar="RESULTS")
    rep.add_argument("-o", "--output", required=True, help="output folder")
    rep.add_argument("--baseline", metavar="STORE", help="add a regression view against this store")
    rep.add_argument("--title")
    rep.add_argument("--allow-mixed", action="store_true", help="merge rounds measured on machines or with software that differ, marked mixed (else refused)")

    c = sub.add_parser("compare", help="the regression gate: exit 1 when NEW regressed against BASE")
    c.add_argument("base", metavar="BASE")
    c.add_argument("new", metavar="NEW")
    c.add_argument("--rule", action="append", default=[], metavar="METRIC:THRESHOLD",
                   help="e.g. latency.median:5%%, latency.p99:10%%, quality.relative:-0.5pp, memory.peak:off")
    c.add_argument("--suite", help="take the suite's gate: block (rules, alpha) as defaults")
    c.add_argument("--alpha", type=float, help="significance level (default 0.01)")
    c.add_argument("--format", default="table", help="table, md or json")
    c.add_argument("--output", help="also write the rendered verdict to this file")
    c.add_argument("--normalize", action="store_true", help="scale timings by the stores' machine-speed indexes")
    c.add_argument("--require-same-cells", action="store_true", help="cells present on one side only fail the gate")
    c.add_argument("--allow-mixed", action="store_true", help="merge rounds measured on machines or with software that differ, marked mixed (else refused)")

    f = sub.add_parser("flops", help="count MACs / FLOPs / BOPs, params and bytes of an ONNX model")
    f.add_argument("model", metavar="MODEL.onnx")
    f.add_argument("--batch", type=int, default=1)
    f.add_argument("--dim", action="append", default=[], metavar="NAME=N", help="bind another symbolic dimension")
    f.add_argument("--by", default="op", help="op or node")
    f.add_argument("--json", action="store_true", help="one JSON object")

    def per_model(name: str, help_: str, writes: str):
        """A command over one suite's model or cell: the suite, -o, the cache and the display."""
        c = sub.add_parser(name, help=help_)
        c.add_argument("suite")
        c.add_argument("-o", "--out", help=f"output folder (default reports/<suite name>); writes {writes}")
        c.add_argument("--cache-dir", default=os.environ.get("EFFBENCH_CACHE_DIR"))
        c.add_argument("--no-progress", action="store_true")
        return c

    ly = per_model("layers", "where one cell's time goes, layer by layer, by its runtime's own profiler (ONNX Runtime, "
                   "torch, OpenVINO PERF_COUNT, ExecuTorch ETDump); exit 1 with one line where it has none",
                   "layers/<cell>/")
    ly.add_argument("--cell", required=True, help="the cell id (a glob matching exactly one)")
    ly.add_argument("--runs", type=int, default=50, help="profiled calls (default 50)")
    ly.add_argument("--top", type=int, default=15, help="layers to print")
    se = per_model("sensitivity", "int8 sensitivity of each layer of one model (ONNX Runtime's quantizer)",
                   "sensitivity/<model>/")
    ad = per_model("advise", "a mixed-precision plan chosen on measured latency under a quality floor",
                   "advise/<model>/")
    for c in (se, ad):
        c.add_argument("--model", required=True, help="the suite's model id")
        c.add_argument("--samples", type=int, default=256, help="inputs scored (default 256)")
    se.add_argument("--runner", help="a runner of modules (torch): each nn.Linear quantized with torch's per-module "
                    "dynamic int8 instead of ONNX Runtime's quantizer on the graph")
    ad.add_argument("--floor", type=float, default=0.99, help="quality kept, relative to FP32 (default 0.99)")
    ad.add_argument("--batch", type=int, help="batch size to time (default: the suite's smallest)")
    ad.add_argument("--objective", default="latency", help="what the plan minimises under the floor: latency "
                    "(measured, paired), energy (modeled at the measured latency) or size (default latency)")

    pr = sub.add_parser("profiles", help="device profiles: list, show, calibrate, check")
    psub = pr.add_subparsers(dest="profiles_command", required=True, parser_class=_Parser)
    psub.add_parser("list", help="table of shipped profiles")
    ps = psub.add_parser("show", help="every field of a profile, with its source")
    ps.add_argument("profile", metavar="ID_OR_PATH")
    pc = psub.add_parser("calibrate", help="fit the local profile's derates to measured cells")
    pc.add_argument("--results", action="append", metavar="STORE", help="results store(s) to fit on")
    pc.add_argument("--suite", help="run this suite (quick) and fit on its results")
    pc.add_argument("--cache-dir", default=os.environ.get("EFFBENCH_CACHE_DIR"))
    pc.add_argument("--dry-run", action="store_true", help="report the fit without writing it")
    pk = psub.add_parser("check", help="project each profile's published reference measurements and print the error")
    pk.add_argument("profiles", nargs="*", metavar="ID_OR_PATH", help="profiles to check (default: every shipped one)")
    pk.add_argument("--cache-dir", default=os.environ.get("EFFBENCH_CACHE_DIR"))
    pk.add_argument("--json", action="store_true", help="one JSON object")
    return p


def _cmd_run(a: argparse.Namespace) -> int:
    from effbench.config.suite import load_suite
    from effbench.execution.run import run
    if a.ab:
        return _cmd_ab(a)
    if a.rounds is not None and a.rounds < 1:
        raise UserError("--rounds must be at least 1", field="--rounds", fix="use --rounds 3 for example")
    fleet = {}
    if a.ray:
        from effbench.fleet.node import import_ray
        from effbench.fleet.run import run
        import_ray()  # before anything runs: without the extra, --ray is a one-line error
        fleet = {"ray": a.ray}
    suite = load_suite(a.suite)
    out = Path(a.output) if a.output else Path("reports") / suite.name
    try:
        results = run(suite, out_dir=out, only=a.only, resume=a.resume, rounds=a.rounds, quick=a.quick,
                      cache_dir=a.cache_dir, progress=not a.no_progress, timeout_s=a.timeout,
                      allow_mixed=a.allow_mixed, **fleet)
    except UserError as e:
        raise suite.locate(e) from None
    for w in results.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(summary_table(results))
    print(f"results: {out / 'results.jsonl'}")
    verdict = None
    if a.baseline:
        from effbench.gate import compare, resolve_rules
        from effbench.results.store import load
        base = load(a.baseline, allow_mixed=a.allow_mixed)
        verdict = compare(base, results, rules=resolve_rules(a.rule, suite_gate=suite.spec.gate.rules),
                          alpha=suite.spec.gate.alpha)
    if not a.no_report:
        from effbench.report import write_report
        paths = write_report(results, out, verdict=verdict)
        print(f"report: {paths['html']}")
    if verdict is not None:
        print(verdict.render("table"))
        (out / "verdict.md").write_text(verdict.render("md"))
        if verdict.exit_code:
            return verdict.exit_code
    failed = [r for r in results if r.status == "failed"]
    below = [r for r in results if r.below_floor]
    if failed:
        print(f"{len(failed)} cell(s) failed; see the reasons above and {out / 'logs'}", file=sys.stderr)
        return 1
    if a.strict and below:
        print(f"{len(below)} cell(s) below the quality floor (--strict)", file=sys.stderr)
        return 1
    return 0


def _cmd_ab(a: argparse.Namespace) -> int:
    """`run SUITE --ab BASE_SUITE`: interleaved measurement, gate on per-round ratios."""
    from effbench.execution.ab import run_ab
    if a.ray:
        raise UserError("--ab runs on this machine only", field="--ray", fix="drop --ray or --ab")
    from effbench.config.suite import load_suite
    from effbench.gate import compare_ab, resolve_rules
    suite = load_suite(a.suite)
    base_suite = load_suite(a.ab)
    out = Path(a.output) if a.output else Path("reports") / f"{suite.name}-ab"
    try:
        base, new, notes = run_ab(suite, base_suite, out_dir=out, only=a.only, rounds=a.rounds, quick=a.quick,
                                  cache_dir=a.cache_dir, progress=not a.no_progress, timeout_s=a.timeout)
    except UserError as e:
        raise suite.locate(e) from None
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    base_by = base.by_id()
    pairs = [(base_by[r.cell_id], r) for r in new if r.cell_id in base_by]
    verdict = compare_ab(pairs, rules=resolve_rules(a.rule, suite_gate=suite.spec.gate.rules),
                         alpha=suite.spec.gate.alpha)
    print(summary_table(new))
    print(verdict.render("table"))
    (out / "verdict.md").write_text(verdict.render("md"))
    if not a.no_report:
        from effbench.report import write_report
        paths = write_report(new, out, verdict=verdict)
        summary = Path(paths["markdown"])
        summary.write_text(summary.read_text() + "\n## A/B gate\n\n" + verdict.render("md") + "\n")
        print(f"report: {paths['html']}")
    return verdict.exit_code


def _cmd_validate(a: argparse.Namespace) -> int:
    from effbench.config.suite import load_suite
    suite = load_suite(a.suite)
    try:
        deep = check_models(suite)
    except UserError as e:
        raise suite.locate(e) from None
    cells = suite.cells()
    if deep:
        print(f"checked inputs and datasets of: {', '.join(deep)}")
    print(f"{suite.path}: ok: {len(suite.spec.models)} model(s), {len(suite.precision_choices)} precision(s), "
          f"{len(suite.spec.runners)} runner(s) -> {len(cells)} cells")
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from effbench.report import write_report
    from effbench.results.store import load
    results = load(*a.stores, allow_mixed=a.allow_mixed)
    for w in results.warnings:
        print(f"warning: {w}", file=sys.stderr)
    verdict = None
    if a.baseline:
        from effbench.gate import compare
        verdict = compare(load(a.baseline, allow_mixed=a.allow_mixed), results)
    paths = write_report(results, Path(a.output), verdict=verdict, title=a.title)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _cmd_compare(a: argparse.Namespace) -> int:
    from effbench.gate import compare, resolve_rules
    from effbench.results.store import load
    gate_rules, alpha = None, 0.01
    if a.suite:
        from effbench.config.suite import load_suite
        spec = load_suite(a.suite).spec
        gate_rules, alpha = spec.gate.rules, spec.gate.alpha
    if a.alpha is not None:
        if not 0 < a.alpha < 1:
            raise UserError(f"--alpha {a.alpha} is not a probability", field="--alpha", fix="use e.g. --alpha 0.01")
        alpha = a.alpha
    if a.format not in ("table", "md", "json"):
        raise UserError(f"unknown format '{a.format}'", field="--format", fix="use table, md or json")
    verdict = compare(load(a.base, allow_mixed=a.allow_mixed), load(a.new, allow_mixed=a.allow_mixed), rules=resolve_rules(a.rule, suite_gate=gate_rules), alpha=alpha,
                      normalize=a.normalize, require_same_cells=a.require_same_cells)
    text = verdict.render(a.format)
    print(text)
    if a.output:
        try:
            Path(a.output).write_text(text + "\n")
        except OSError as e:
            raise UserError(f"cannot write the verdict: {e.strerror}", file=a.output, field="--output",
                            fix="choose a writable path") from None
    return verdict.exit_code


def _cmd_flops(a: argparse.Namespace) -> int:
    import json

    from effbench.measure.flops import count_work, format_work
    from effbench.models.sources import load_onnx_checked
    if a.batch < 1:
        raise UserError("--batch must be at least 1", field="--batch", fix="use --batch 1")
    if a.by not in ("op", "node"):
        raise UserError(f"--by {a.by}: expected op or node", field="--by", fix="use --by op or --by node")
    dims = {}
    for d in a.dim:
        name, _, value = d.partition("=")
        if not name or not value.isdigit() or int(value) < 1:
            raise UserError(f"--dim {d}: expected NAME=N with N a positive integer", field="--dim", fix="e.g. --dim seq=128")
        dims[name] = int(value)
    model = load_onnx_checked(Path(a.model), suite_file=a.model, field="MODEL")
    work = count_work(model, batch_size=a.batch, dims=dims)
    if a.json:
        print(json.dumps(work.to_json(), indent=2))
    else:
        print(format_work(work, by=a.by))
    return 0


def _cmd_profiles(a: argparse.Namespace) -> int:
    from effbench import devices
    if a.profiles_command == "list":
        print(devices.profiles_list_text())
    elif a.profiles_command == "show":
        print(devices.profile_show_text(a.profile))
    elif a.profiles_command == "check":
        from effbench.models.sources import default_cache_dir
        ids = a.profiles or [i for i in devices.shipped_ids() if i != "local"]
        profiles = devices.load_profiles(ids)
        if not any(p.references or p.llm_references for p in profiles):
            raise UserError("none of these profiles has published references", field="profiles check",
                            fix="add `references:` to the profile (see device_profiles/nvidia-h100.yaml)")
        from effbench.devices.llm_references import check_llm_references
        llm = check_llm_references(profiles)
        if not any(p.references for p in profiles):   # LLM references only
            print(json.dumps({"llm_references": llm.to_json()}, indent=1) if a.json else llm.text())
            return 0
        cache = Path(a.cache_dir) if a.cache_dir else default_cache_dir()
        report = devices.check_references(profiles, cache)
        if a.json:
            print(json.dumps({**report.to_json(), "llm_references": llm.to_json()}, indent=1))
        else:
            print(report.text() + ("\n\n" + llm.text() if llm.checks else ""))
        # a band is fitted over every shipped reference: judge the checked profiles' figures against that pool
        have = {p.id for p in profiles}
        pool = profiles + [p for p in devices.load_profiles([i for i in devices.shipped_ids() if i != "local"])
                           if p.id not in have]
        return _check_verdict(profiles, report if len(pool) == len(profiles) else devices.check_references(pool, cache))
    else:
        from effbench.results.store import load
        cache = Path(a.cache_dir) if a.cache_dir else None
        if a.suite:
            from effbench.config.suite import load_suite
            from effbench.execution.run import run
            suite = load_suite(a.suite)
            out = Path("reports") / f"{suite.name}-calibration"
            results = run(suite, out_dir=out, quick=True, cache_dir=cache)
            records = results.records
        elif a.results:
            records = load(*a.results).records
        else:
            raise UserError("nothing to calibrate on", field="profiles calibrate",
                            fix="pass --results reports/quickstart/results.jsonl or --suite suites/quickstart.yaml")
        report = devices.calibrate(records, cache_dir=cache, write=not a.dry_run)
        print(report.text())
    return 0


def _check_verdict(profiles, report) -> int:
    """1 when a profile's derate or error band is not what the references give (`report`: over every shipped
    profile and these), or a published power is off by more than the tolerance from what the projection
    implies: what `profiles check` is asked to find."""
    from effbench.devices.references import differences, shipped_figures
    wrong = differences(profiles, shipped_figures(report))
    summary = report.summary()
    for line in wrong:
        print(f"profiles check: {line}", file=sys.stderr)
    if wrong:
        print("profiles check: set them to what the references give (a shipped profile: python "
              "bench/reference_check.py --write-profiles)", file=sys.stderr)
    if summary["power_off"]:
        print(f"profiles check: {summary['power_off']} published power figure(s) off by more than "
              f"x{summary['power_tolerance']:g} from what the projection implies", file=sys.stderr)
    return 1 if wrong or summary["power_off"] else 0


def _cmd_node(a: argparse.Namespace) -> int:
    from effbench.fleet.node import start_node
    extra = a.ray_args[1:] if a.ray_args[:1] == ["--"] else a.ray_args
    return start_node(device=a.device, head=a.head, address=a.address, port=a.port, cache_dir=a.cache_dir,
                      extra=extra, dry_run=a.dry_run)


def _cmd_layers(a: argparse.Namespace) -> int:
    from effbench.analysis.commands import profile_cell
    from effbench.measure.layers import text
    from effbench.runners import Unsupported
    try:
        rows, folder, meta = profile_cell(a.suite, a.cell, out_dir=a.out, cache_dir=a.cache_dir, runs=a.runs,
                                          progress=not a.no_progress)
    except Unsupported as e:  # the runtime has no per-layer profiler, or cannot run the variant: said, not faked
        print(f"unsupported: {e}")
        return 1
    print(text(rows, top=a.top, meta=meta))
    print(f"written: {folder / 'layers.csv'}, {folder / 'layers.json'}")
    return 0


def _cmd_sensitivity(a: argparse.Namespace) -> int:
    from effbench.analysis.commands import sensitivity, sensitivity_text
    result, folder = sensitivity(a.suite, a.model, out_dir=a.out, cache_dir=a.cache_dir, samples=a.samples,
                                 progress=not a.no_progress, runner=a.runner)
    print(sensitivity_text(result))
    print(f"written: {folder / 'sensitivity.csv'}, {folder / 'sensitivity.json'}")
    return 0


def _cmd_advise(a: argparse.Namespace) -> int:
    from effbench.analysis.commands import advise, advise_text
    plan, folder = advise(a.suite, a.model, floor=a.floor, out_dir=a.out, cache_dir=a.cache_dir, samples=a.samples,
                          batch_size=a.batch, progress=not a.no_progress, objective=a.objective)
    print(advise_text(plan))
    print(f"written: {folder / 'plan.json'}" + (f", {plan['artifact']}" if plan.get("artifact") else ""))
    return 0


def check_models(suite) -> list[str]:
    """Open what can be opened without running anything: ONNX inputs vs the suite, datasets vs inputs.

    torch and builtin sources are exported at run time (that imports torch); they are checked then.
    """
    from effbench.models.datasets import load_dataset
    from effbench.models.sources import prepare
    checked = []
    for i, m in enumerate(suite.spec.models):
        if m.source.kind != "onnx":
            continue
        art = prepare(m, i, base_dir=suite.base_dir, suite_file=str(suite.path), cache_dir=Path("/nonexistent"))
        if m.dataset is not None:
            shapes = {inp.name: (list(inp.concrete(1, art.dims)[1:]), inp.dtype) for inp in art.inputs}
            load_dataset(m.dataset, shapes, base_dir=suite.base_dir, suite_file=str(suite.path),
                         field=f"models[{i}].dataset")
        checked.append(m.id)
    return checked


COMMANDS = {"run": _cmd_run, "validate": _cmd_validate, "report": _cmd_report, "compare": _cmd_compare,
            "flops": _cmd_flops, "profiles": _cmd_profiles, "layers": _cmd_layers,
            "sensitivity": _cmd_sensitivity, "advise": _cmd_advise, "node": _cmd_node}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are saved; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
