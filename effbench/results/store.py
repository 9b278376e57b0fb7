"""The JSONL results store, merging rounds, provenance, and the DataFrame view.

One schema, one place (`effbench.results.record`): the runner writes `Record.to_json()`, the reporter and the
gate read `Record.from_json()`. A store holds one line per cell *and round*; `load()` merges rounds.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effbench.errors import UserError
from effbench.results.merge import merge_rounds
from effbench.results.record import SCHEMA, STATUSES, Record

__all__ = ["SCHEMA", "STATUSES", "Record", "Results", "Store", "load", "merge_rounds"]


def _dumps(record: Record) -> str:
    def clean(x: Any) -> Any:  # JSON has no NaN/inf: absent is None
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    return json.dumps(clean(record.to_json()), separators=(",", ":"), allow_nan=False)


class Store:
    """An append-only `results.jsonl`: whole lines, flushed and fsynced as each cell ends."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, record: Record) -> None:
        line = (_dumps(record) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            # A whole line per record in O_APPEND mode (the run's OutputLock makes us the only writer):
            # a crash leaves the line whole, absent, or cut (healed below and reported on load).
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot write results: {e.strerror or e}", file=self.path,
                            fix="free disk space or choose a writable output folder with -o") from e
        try:
            self._heal_torn_tail(fd)
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:  # a disk that fills mid-line writes part of it; the next write says why
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                # Take the partial line back: the store keeps only whole records (issue 8).
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
            if created:
                _fsync_dir(self.path.parent)  # the new file's name survives a power cut too
        except OSError as e:
            raise UserError(f"cannot write results: {e.strerror or e}", file=self.path,
                            fix="free disk space or choose a writable output folder with -o") from e
        finally:
            os.close(fd)

    def _heal_torn_tail(self, fd: int) -> None:
        """If a killed writer left a line without its newline, end it so the next line stays whole."""
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
            os.write(fd, b"\n")

    def iter_lines(self) -> Iterator[tuple[int, Record | None, str | None, bool]]:
        """(line number, record or None, problem or None, torn) for every non-blank line; torn means the
        line is not JSON at all (cut short by a killed writer), as opposed to a foreign JSON object."""
        if not self.path.exists():
            return
        if not self.path.is_file():  # /dev/zero or a FIFO would be read forever
            raise UserError("the results store is not a regular file", file=self.path,
                            fix="point at a results.jsonl written by effbench")
        with open(self.path, "rb") as f:
            raw = f.read().split(b"\n")
        for i, line in enumerate(raw, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                yield i, None, str(e), True
                continue
            try:
                yield i, Record.from_json(obj), None, False
            except (ValueError, TypeError) as e:
                yield i, None, str(e), False

    def records(self, *, strict: bool = True) -> tuple[list[Record], list[str]]:
        """Every stored line as a record, plus warnings for torn lines a killed run left behind."""
        records, warnings = [], []
        for lineno, rec, problem, torn in self.iter_lines():
            if rec is not None:
                records.append(rec)
                continue
            msg = f"{self.path}:{lineno}: skipped an unreadable line ({problem}); a run was probably killed mid-write"
            if strict and not torn:
                raise UserError(f"line {lineno} is not an effbench result record ({problem})",
                                file=self.path, fix="point at a results.jsonl written by effbench")
            warnings.append(msg)
        return records, warnings


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class Results:
    """A loaded store: merged records (one per cell) and what loading noticed."""

    records: list[Record]
    raw: list[Record] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def by_id(self) -> dict[str, Record]:
        return {r.cell_id: r for r in self.records}

    def to_frame(self):
        """A flat pandas DataFrame, one row per merged record (the CSV report is this)."""
        import pandas as pd
        rows = []
        for r in self.records:
            row: dict[str, Any] = {"cell_id": r.cell_id, "status": r.status, "reason": r.reason,
                                   "rounds": r.rounds, "throughput_ips": r.throughput_ips}
            for section in ("cell", "variant", "model_stats", "latency_ms", "comparison", "memory", "energy",
                            "quality", "drift", "offline", "server", "single_stream", "multi_stream", "generation"):
                value = getattr(r, section)
                for k, v in _flatten(value.to_json() if value else {}).items():
                    row[f"{section}.{k}"] = v
            # the suite's compare: pairings (another runtime's or model's FP32), one column group per baseline
            for key, comp in (r.comparisons or {}).items():
                for k, v in _flatten(comp.to_json()).items():
                    row[f"comparisons.{key}.{k}"] = v
            for pid, proj in r.projections.items():
                for k, v in _flatten(proj.to_json()).items():
                    row[f"projections.{pid}.{k}"] = v
            row["round_medians_ms"] = json.dumps(r.round_medians_ms) if r.round_medians_ms else None
            # what differed between the rounds merged into this row (--allow-mixed); empty: one provenance
            row["mixed"] = json.dumps(r.mixed) if r.mixed else None
            rows.append(row)
        return pd.DataFrame(rows)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def resolve_store_path(path: str | Path) -> Path:
    """A results.jsonl, or a report folder holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.jsonl"
    if not p.exists():
        raise UserError("no such results store", file=p,
                        fix="pass a results.jsonl or a report folder that holds one")
    return p


def load(*paths: str | Path, allow_mixed: bool = False) -> Results:
    """Load and merge one or more stores (e.g. from several machines) into one Results. A cell's rounds
    merge within a store, only where their provenance agrees unless `allow_mixed` (`merge_rounds`); the
    same cell in two stores stays two records (one per machine), never one."""
    merged, raw, warnings, sources = [], [], [], []
    for path in paths:
        p = resolve_store_path(path)
        recs, warns = Store(p).records()
        merged.extend(merge_rounds(recs, allow_mixed=allow_mixed, source=str(p)))
        raw.extend(recs)
        warnings.extend(warns)
        sources.append(str(p))
    return Results(records=merged, raw=raw, warnings=warnings, sources=sources)
