"""The gate's answer: a `Verdict` (rows per cell and metric, warnings, summary, exit code) and its JSON.

Its terminal table and Markdown live in `effbench.gate.render`; `Verdict.render` dispatches there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effbench.gate.rules import Rule

VERDICTS = ("regressed", "improved", "unchanged", "unstable")
TESTS = ("mann-whitney-rounds", "mann-whitney-samples", "ci-overlap", "wilcoxon-paired-rounds",
         "ci-paired-rounds", "exact", "none")


@dataclass
class Verdict:
    """Rows per (cell_id, metric), cells present on one side only, warnings, summary and exit code."""

    rows: list[dict[str, Any]]
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0
    rules: list[Rule] = field(default_factory=list)
    alpha: float = 0.01
    mode: str = "stores"  # "stores" | "ab"

    @property
    def regressed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["verdict"] == "regressed"]

    def to_json(self) -> dict[str, Any]:
        return _clean({"schema": "effbench.verdict/1", "mode": self.mode, "exit_code": self.exit_code,
                       "alpha": self.alpha, "rules": [str(r) for r in self.rules],
                       "summary": self.summary, "warnings": self.warnings, "added": self.added,
                       "removed": self.removed, "rows": self.rows})

    def render(self, fmt: str = "table") -> str:
        """The verdict as `table` (terminal), `md` (a CI job summary) or `json`."""
        # imported here: the renderer reads this module's Verdict and VERDICTS
        from effbench.gate.render import render_verdict
        return render_verdict(self, fmt)


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (np.floating, np.integer)):
        return _clean(x.item())
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x
