"""What a run shows and where it writes: the progress display (a live bar or plain log lines, one line
per record) and the lock that keeps two runs out of one output folder.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sys
from pathlib import Path

from effbench.errors import UserError
from effbench.results.store import Record


class OutputLock:
    """An flock on DIR/.effbench.lock: the kernel drops it when its holder dies, so a stale lock of a
    dead process is taken over automatically; a live holder makes the second run refuse."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / ".effbench.lock"
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot create the output folder or its lock: {e.strerror}", file=self.path.parent,
                            field="-o", fix="choose a writable output folder with -o") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (pid {int(os.pread(self.fd, 32, 0).decode().split()[0])})"
            os.close(self.fd)
            self.fd = None
            raise UserError(f"another effbench run{holder} is writing to this folder", file=self.path.parent,
                            field="-o", fix="wait for it to finish, or choose another folder with -o") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None



class Progress:
    """A live bar on a terminal (rich), plain log lines otherwise."""

    def __init__(self, total: int, enabled: bool, stream=None) -> None:
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.live = enabled and self.stream.isatty()
        self.enabled = enabled
        self._bar = None
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress
            self._bar = RichProgress(TextColumn("[bold]effbench"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                     TextColumn("{task.description}"), console=Console(file=self.stream),
                                     transient=False)
            self._task = self._bar.add_task("", total=total)
            self._bar.start()

    def log(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def start(self, what: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=what)

    def advance(self, line: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1)
            self._bar.console.print(line, markup=False, highlight=False)
        elif self.enabled:
            print(f"[{self.done}/{self.total}] {line}", file=self.stream, flush=True)

    def warn(self, text: str) -> None:
        """A warning: above the bar or in the log, and on stderr even without a progress display."""
        if self.enabled:
            self.log(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def record_line(r: Record) -> str:
    """The line the display prints for a finished record."""
    where = f" (round {r.round + 1}/{r.rounds})" if r.rounds > 1 else ""
    if r.ok and r.latency_ms:
        lat = r.latency_ms
        flag = " UNSTABLE" if lat.unstable else ""
        sp = r.comparison.speedup if r.comparison else None
        vs = f", {sp:.3g}x vs FP32 (paired)" if sp else ""
        ci = f" [{lat.ci[0]:.4g}, {lat.ci[1]:.4g}]" if lat.ci else ""
        if r.server:  # its latencies are from scheduled arrival at the peak rate
            s = r.server
            peak = f"max {s.max_qps:.4g} queries/s within {s.latency_bound_ms:g} ms" if s.max_qps else s.reason
            return f"{r.cell_id}{where}: ok {peak} (p{s.percentile:g} {s.percentile_ms or math.nan:.4g} ms){flag}"
        if r.offline and r.offline.samples_per_s:
            vs += f", {r.offline.samples_per_s:.4g} samples/s offline"
        for name, lg in (("multi-stream", r.multi_stream), ("single-stream", r.single_stream)):
            if lg is not None and lg.percentile_ms is not None:  # LoadGen's own headline and verdict
                vs += f", LoadGen {name} p{lg.percentile:g} {lg.percentile_ms:.4g} ms {lg.verdict or ''}".rstrip()
        return f"{r.cell_id}{where}: ok {lat.median:.4g} ms{ci} n={lat.n}{vs}{flag}"
    return f"{r.cell_id}{where}: {r.status}: {r.reason}"
