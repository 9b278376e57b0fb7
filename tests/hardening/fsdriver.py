"""Run inside `unshare -m` with a small tmpfs mounted at OUT (see test_run_faults.py): make the output
folder fail mid-run, then report what the CLI and the store did.

    python fsdriver.py MODE OUT SUITE CACHE REPORT
MODE: full   -- after 2 records, fill the tmpfs (ENOSPC on the next append)
      store  -- Store only: fill the disk, then append a line bigger than the page slack left
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path


def fill(folder: Path) -> None:
    """Write a filler file until the file system refuses even one more byte."""
    with open(folder / "filler", "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError:
                    break


def main() -> int:
    mode, out, suite, cache, report = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4], Path(sys.argv[5])
    from effbench.cli import app as cli
    from effbench.execution import run as execute
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the record helper
    from ebrecords import make

    from effbench.results.store import Store
    if mode == "store":
        store = Store(out / "results.jsonl")
        store.append(make("a"))
        before = (out / "results.jsonl").read_bytes()
        fill(out)
        big = make("b", samples_ms=[1.2345678] * 20000)
        err = None
        try:
            store.append(big)
        except Exception as e:  # noqa: BLE001 - reported to the test, which judges it
            err = f"{type(e).__name__}: {e}"
        after = (out / "results.jsonl").read_bytes()
        report.write_text(json.dumps({"error": err, "unchanged": after == before, "before": len(before),
                                      "after": len(after)}))
        return 0
    appended = []
    real_finish = execute.SuiteRun.finish

    def finish(self, record, progress):
        if len(appended) == 2:
            fill(out)
        real_finish(self, record, progress)
        appended.append(record.cell_id)

    execute.SuiteRun.finish = finish
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(["run", suite, "-o", str(out / "run"), "--cache-dir", cache, "--no-progress", "--no-report"])
    store = out / "run" / "results.jsonl"
    report.write_text(json.dumps({"rc": rc, "stderr": err.getvalue(), "appended": appended,
                                  "store": store.read_text() if store.exists() else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
