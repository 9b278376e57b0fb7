"""A/B mode (`effbench run --ab BASE_SUITE`): the baseline's and the candidate's cells measured interleaved in
one job, with a paired pass per cell and round, for the gate's signed-rank test.
"""
from __future__ import annotations

from pathlib import Path

from effbench.config.suite import Suite, load_suite
from effbench.errors import UserError
from effbench.execution.progress import OutputLock, Progress
from effbench.execution.run import RunOptions, SuiteRun
from effbench.results.store import Results, load
from effbench.scenarios.plan import SINGLE_STREAM

# Wilcoxon's smallest two-sided p with n rounds is 2 / 2**n: 12 rounds reach 0.01 / 16 cells (Holm).
AB_MIN_ROUNDS = 12


def run_ab(suite: Suite | str | Path, base_suite: Suite | str | Path, *, out_dir: str | Path | None = None,
           only: str | list[str] | None = None, rounds: int | None = None, quick: bool = False,
           cache_dir: str | Path | None = None, progress: bool = True,
           timeout_s: float | None = None) -> tuple[Results, Results, list[str]]:
    """A/B mode: the baseline's and the candidate's cells measured interleaved in one job.

    Round r runs base(c1), new(c1), base(c2), new(c2) ... each in its own fresh worker (every figure of
    a normal run), and between them a paired pass: both variants of the cell in one worker, timed in
    alternating blocks, whose median block ratio is the candidate record's `paired_ratios` entry for
    the round. docs/runtime-notes.md: this machine flips between two speeds within seconds, so even back-to-back
    workers' round medians disagreed by +-25% here; alternating blocks see the same state. Stores:
    DIR/base/ and DIR/. Returns (base results, new results, notes).
    """
    from effbench.models.sources import default_cache_dir
    new_s = suite if isinstance(suite, Suite) else load_suite(suite)
    base_s = base_suite if isinstance(base_suite, Suite) else load_suite(base_suite)
    out = Path(out_dir) if out_dir else Path("reports") / f"{new_s.name}-ab"
    notes = []
    n_rounds = rounds or max(new_s.spec.measure.rounds, base_s.spec.measure.rounds, AB_MIN_ROUNDS)
    if n_rounds < AB_MIN_ROUNDS:
        notes.append(f"{n_rounds} rounds: the signed-rank test needs about {AB_MIN_ROUNDS} to reach alpha 0.01 "
                     f"after Holm over a few cells; cells it cannot decide are reported unstable")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    mk = lambda d: RunOptions(out_dir=d, cache_dir=cache, only=[only] if isinstance(only, str) else only,  # noqa: E731
                                 rounds=n_rounds, quick=quick, progress=progress, timeout_s=timeout_s)
    with OutputLock(out):
        new_r = SuiteRun(new_s, mk(out), [])
        base_r = SuiteRun(base_s, mk(out / "base"), [])
        new_todo, base_todo = new_r.plan(), base_r.plan()
        base_ids = {c.cell_id for _, c in base_todo}
        shared = [(r, c) for r, c in new_todo if c.cell_id in base_ids]
        missing = sorted({c.cell_id for _, c in new_todo} ^ {c.cell_id for _, c in base_todo})
        if not shared:
            raise UserError("the two suites share no cell id", file=base_s.path, field="--ab",
                            fix="give both suites the same model ids, precisions, runners and batch sizes")
        if missing:
            notes.append(f"{len(missing)} cell(s) exist in one suite only and are not measured: {', '.join(missing[:5])}")
        base_by = {(r, c.cell_id): c for r, c in base_todo}
        bar = Progress(2 * len(shared), progress)
        try:
            new_r.setup(shared, bar)
            base_r.setup([(r, base_by[(r, c.cell_id)]) for r, c in shared], bar)
            for r, c in shared:
                bc = base_by[(r, c.cell_id)]
                if new_s.model(c.model).generates and base_s.model(bc.model).generates:
                    _generative_pair(r, c, bc, new_r, base_r, bar)
                    continue
                b_rec = base_r.do_cell(r, bc, bar)
                # offline and server cells run their own scenario's worker, alone: no paired single-call pass
                paired = new_r.pair_pass(r, c, base_r, bc, bar) if b_rec.ok and c.scenario == SINGLE_STREAM else None
                new_r.do_cell(r, c, bar, paired=paired)
        finally:
            bar.close()
        return load(base_r.store.path), load(new_r.store.path), notes


def _generative_pair(rnd: int, cell, base_cell, new_r: SuiteRun, base_r: SuiteRun, bar: Progress) -> None:
    """A generative cell (task: generate) in A/B mode: each side's own generative worker (its FP32 twin, memory
    and quality workers once per run), then, single-stream only, both sides' sessions sent the same requests
    in alternating order in one worker (`GenerationGroups.pair_pass`): the candidate's `paired_ratios`."""
    b_rec = base_r.generation.do_group(rnd, [base_cell], bar)[0]
    paired = (new_r.generation.pair_pass(rnd, cell, base_r, base_cell, bar)
              if b_rec.ok and cell.scenario == SINGLE_STREAM else None)
    new_r.generation.do_group(rnd, [cell], bar, paired={cell.cell_id: paired} if paired else None)
