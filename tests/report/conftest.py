"""Fixtures of the report tests; the record builders live in report_fixtures.py."""
from __future__ import annotations

from pathlib import Path

import pytest
from report_fixtures import make_records, write_store

from effbench.results.store import load


@pytest.fixture
def small_store(tmp_path: Path) -> Path:
    return write_store(tmp_path / "a" / "results.jsonl", make_records())


@pytest.fixture
def small_results(small_store: Path):
    return load(small_store)
