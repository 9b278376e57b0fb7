"""Speedup vs FP32 from paired blocks: each variant and FP32 of the same cell loaded in one fresh worker and
timed in alternating blocks (effbench's A/B paired pass, `measuring.measure_pair`), one worker per round.

Why: on this machine a cell measured in its own worker lands in one of two speed states that last
seconds, so a ratio of two cells' medians (even per round, interleaved) swung 1.6x-2.4x for MiniLM bf16
on torch. Alternating blocks in one worker see the same state on both sides.

    .venv/bin/python bench/paired_speedup.py [--suite suites/minilm.yaml] [--rounds 8]
        [--cell minilm/bf16/torch/b32/single-stream ...] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CELLS = ["minilm/bf16/torch/b32/single-stream", "minilm/int8/torch/b32/single-stream",
                 "minilm/int8/onnxruntime/b32/single-stream"]


def fp32_of(cell_id: str) -> str:
    """The FP32 cell of the same model, runner, batch size and scenario."""
    model, _, *rest = cell_id.split("/")
    return "/".join([model, "fp32", *rest])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default=str(ROOT / "suites" / "minilm.yaml"))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--cell", action="append", default=None)
    ap.add_argument("--cache-dir", default=None)
    a = ap.parse_args()
    from effbench.config.suite import load_suite
    from effbench.execution.progress import Progress
    from effbench.execution.run import RunOptions, SuiteRun
    from effbench.models.sources import default_cache_dir
    wanted = a.cell or DEFAULT_CELLS
    suite = load_suite(a.suite)
    fp32_ids = sorted({fp32_of(c) for c in wanted})
    with tempfile.TemporaryDirectory() as td:
        opts = RunOptions(out_dir=Path(td), cache_dir=Path(a.cache_dir) if a.cache_dir else default_cache_dir(),
                          only=wanted + fp32_ids, rounds=1, progress=False)
        r = SuiteRun(suite, opts, [])
        todo = r.plan()
        bar = Progress(0, False)
        r.setup(todo, bar)
        cells = {c.cell_id: c for _, c in todo}
        speedups: dict[str, list[float]] = {c: [] for c in wanted}
        for rnd in range(a.rounds):
            for cid in wanted:
                c = cells[cid]
                f = cells[fp32_of(cid)]
                res = r.pair_pass(rnd, c, r, f, bar)   # base = fp32, new = the variant
                if res:
                    speedups[cid].append(1 / res["ratio"])
            print(f"round {rnd + 1}: " + ", ".join(f"{k.split('/')[1]}/{k.split('/')[2]} {v[-1]:.2f}x"
                                                   for k, v in speedups.items() if v), flush=True)
    for cid, v in speedups.items():
        if v:
            print(f"{cid}: paired speedup vs FP32 {statistics.median(v):.2f}x [{min(v):.2f}-{max(v):.2f}] "
                  f"over {len(v)} rounds")
        else:
            print(f"{cid}: no paired pass ran (see the logs)")


if __name__ == "__main__":
    main()
