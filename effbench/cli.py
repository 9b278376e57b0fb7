"""The command line: argument parsing, exit codes and printing. Logic lives in the Python API.

Exit codes (all commands): 0 success; 1 the run found what it was asked to find (a regression, a
failed cell, a variant under its quality floor with --strict); 2 bad input or usage.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from effbench.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one line, exit 2
        self.exit(2, f"error: {self.prog}: {message}; see '{self.prog} --help'\n")


def _parser() -> argparse.ArgumentParser:
    from effbench import __version__
    p = _Parser(prog="effbench", description="Efficiency benchmarks of model variants: latency, memory, work, "
                                             "energy and quality, measured and projected onto devices.")
    p.add_argument("--version", action="version", version=f"effbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run a suite and write results + report")
    r.add_argument("suite")
    r.add_argument("-o", "--output", help="output folder (default reports/<suite name>/)")
    r.add_argument("--only", action="append", metavar="GLOB", help="run only cells whose id matches (repeatable)")
    r.add_argument("--resume", action="store_true", help="skip cells already in the output's results.jsonl")
    r.add_argument("--rounds", type=int, help="run the whole plan N times, round-robin, in fresh workers")
    r.add_argument("--quick", action="store_true", help="short measurement budgets for smoke runs")
    r.add_argument("--strict", action="store_true", help="exit 1 when a variant falls below its quality floor")
    r.add_argument("--cache-dir", default=os.environ.get("EFFBENCH_CACHE_DIR"),
                   help="where built models and variants are cached (default ~/.cache/effbench; env EFFBENCH_CACHE_DIR)")
    r.add_argument("--timeout", type=float, help="seconds before a cell's worker is killed")
    r.add_argument("--no-progress", action="store_true", help="no progress output")
    r.add_argument("--no-report", action="store_true", help="do not write the HTML/Markdown/CSV report")

    v = sub.add_parser("validate", help="check a suite without running it")
    v.add_argument("suite")
    return p


def _cmd_run(a: argparse.Namespace) -> int:
    from effbench.execute import run
    from effbench.suite import load_suite
    if a.rounds is not None and a.rounds < 1:
        raise UserError("--rounds must be at least 1", field="--rounds", fix="use --rounds 3 for example")
    suite = load_suite(a.suite)
    out = Path(a.output) if a.output else Path("reports") / suite.name
    try:
        results = run(suite, out_dir=out, only=a.only, resume=a.resume, rounds=a.rounds, quick=a.quick,
                      cache_dir=a.cache_dir, progress=not a.no_progress, timeout_s=a.timeout)
    except UserError as e:
        raise suite.locate(e) from None
    for w in results.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(summary_table(results))
    print(f"results: {out / 'results.jsonl'}")
    failed = [r for r in results if r.status == "failed"]
    below = [r for r in results if r.below_floor]
    if failed:
        print(f"{len(failed)} cell(s) failed; see the reasons above and {out / 'logs'}", file=sys.stderr)
        return 1
    if a.strict and below:
        print(f"{len(below)} cell(s) below the quality floor (--strict)", file=sys.stderr)
        return 1
    return 0


def summary_table(results) -> str:
    """cell, median ms with CI, p99, throughput, peak RSS: the end-of-run table."""
    from rich.console import Console
    from rich.table import Table
    t = Table(title="effbench results", show_lines=False)
    for col, just in (("cell", "left"), ("status", "left"), ("median ms [95% CI]", "right"), ("p99 ms", "right"),
                      ("items/s", "right"), ("peak RSS MB", "right")):
        t.add_column(col, justify=just)
    for r in results:
        lat = r.latency_ms or {}
        if r.ok and lat:
            med = f"{lat['median']:.4g} [{lat['ci'][0]:.4g}, {lat['ci'][1]:.4g}]"
            p99 = f"{lat['p99']:.4g}" + ("" if lat.get("p99_reliable") else "*")
            status = "ok" + (" unstable" if lat.get("unstable") else "") + (" emulated" if r.emulated else "")
            tput = f"{r.throughput_ips:,.0f}" if r.throughput_ips else "-"
            rss = f"{(r.memory or {}).get('peak_rss_bytes', 0) / 1e6:.0f}"
        else:
            med, p99, tput, rss = "-", "-", "-", "-"
            status = f"{r.status}: {(r.reason or '')[:60]}"
        t.add_row(r.cell_id, status, med, p99, tput, rss)
    console = Console(width=max(100, min(200, os.get_terminal_size(1).columns if sys.stdout.isatty() else 160)),
                      record=True, file=open(os.devnull, "w"))
    console.print(t)
    text = console.export_text()
    return text + "* p99 from fewer than 662 per-call samples (or timed blocks): not reliable\n"


def _cmd_validate(a: argparse.Namespace) -> int:
    from effbench.suite import load_suite
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


COMMANDS = {"run": _cmd_run, "validate": _cmd_validate}


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
