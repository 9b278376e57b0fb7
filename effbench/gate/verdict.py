"""The gate's answer: a `Verdict` (rows per cell and metric, warnings, summary, exit code) and how it
reads: the terminal table, the Markdown of a CI job summary and the JSON for machines. The report's
regression view (`effbench.report`) draws its own table from the verdict's rows.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effbench.errors import UserError, did_you_mean
from effbench.gate.rules import Rule
from effbench.units import fmt_bytes, fmt_si

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


FORMATS = ("table", "md", "json")


def render_verdict(v: Verdict, fmt: str = "table") -> str:
    """`fmt` is table, md or json; anything else is a UserError naming --format."""
    if fmt == "json":
        return json.dumps(v.to_json(), indent=2, allow_nan=False)
    if fmt == "md":
        return render_md(v)
    if fmt == "table":
        return render_table(v)
    raise UserError(f"unknown format '{fmt}'{did_you_mean(fmt, list(FORMATS))}",
                    field="--format", fix="use table, md or json")


def _fmt_value(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if unit == "bytes":
        return fmt_bytes(v)
    if unit == "pp":
        return f"{v * 100:.2f}%"
    if unit == "ms":
        return f"{v:.4g} ms"
    if unit == "MACs":
        return fmt_si(v, digits=4)
    return f"{v:.4g}"


def _fmt_change(d: dict[str, Any]) -> str:
    if d["metric"] == "status":
        return "-"
    if d["unit"] == "pp" and d["threshold"].endswith("pp"):
        return "-" if d["delta"] is None else f"{d['delta']:+.2f} pp"
    r = d["ratio"]
    if r is None:
        return "-"
    if not math.isfinite(r):
        return "new"
    return f"{(r - 1) * 100:+.1f}%"


def _fmt_p(d: dict[str, Any]) -> str:
    p = d["p_holm"] if d["p_holm"] is not None else d["p_value"]
    return "-" if p is None else f"{p:.2g}"


_MARK = {"regressed": "REGRESSED", "improved": "improved", "unchanged": "unchanged", "unstable": "unstable"}
_HEAD = ["cell", "metric", "base", "new", "change", "threshold", "p (Holm)", "test", "verdict", "note"]


def headline(v: Verdict) -> str:
    """`PASS: 0 regressed, 3 improved, ...; geomean latency ratio ...`: the verdict in one line."""
    c = v.summary.get("counts", {})
    g = v.summary.get("geomean_latency_ratio")
    parts = [f"{c.get(k, 0)} {k}" for k in VERDICTS]
    geo = f"; geomean latency ratio {g:.3f} over {v.summary['latency_cells']} cells" if g else ""
    cells = f"; {len(v.added)} added, {len(v.removed)} removed" if (v.added or v.removed) else ""
    status = "FAIL" if v.exit_code else "PASS"
    return f"{status}: {', '.join(parts)}{geo}{cells}"


def _table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[d["cell_id"], d["metric"], _fmt_value(d["base"], d["unit"]), _fmt_value(d["new"], d["unit"]),
             _fmt_change(d), d["threshold"], _fmt_p(d), d["test"], _MARK[d["verdict"]], d["note"]]
            for d in rows]


def render_table(v: Verdict) -> str:
    """Warnings, one aligned line per row, added/removed cells, then the headline."""
    lines = [f"warning: {w}" for w in v.warnings]
    body = _table_rows(v.rows)
    if body:
        cols = [_HEAD, *body]
        widths = [max(len(r[i]) for r in cols) for i in range(len(_HEAD) - 1)]
        for r in cols:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1])
    lines += [f"added: {c}" for c in v.added] + [f"removed: {c}" for c in v.removed]
    lines.append(headline(v))
    return "\n".join(lines)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _md_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    for r in _table_rows(rows):
        r[0] = f"`{r[0]}`"
        if r[8] == "REGRESSED":
            r[8] = "**regressed**"
        out.append("| " + " | ".join(_md_escape(c) for c in r) + " |")
    return out


def render_md(v: Verdict) -> str:
    """A CI job summary: headline, warnings, rules, the rows that changed, then every row folded."""
    title = "effbench gate (A/B)" if v.mode == "ab" else "effbench gate"
    icon = ":x:" if v.exit_code else ":white_check_mark:"
    lines = [f"## {icon} {title}: {headline(v)}", ""]
    if v.warnings:
        lines += [f"> **warning:** {_md_escape(w)}" for w in v.warnings] + [""]
    lines.append(f"Rules: {', '.join(f'`{r}`' for r in v.rules)}; alpha {v.alpha:g}, Holm-corrected.")
    lines.append("")
    notable = [d for d in v.rows if d["verdict"] != "unchanged"]
    if notable:
        lines += _md_table(notable) + [""]
    elif v.rows:
        lines += ["Every compared metric is unchanged.", ""]
    if v.added or v.removed:
        lines += [f"- added: `{c}`" for c in v.added] + [f"- removed: `{c}`" for c in v.removed] + [""]
    if v.rows:
        lines += ["<details><summary>All rows</summary>", ""] + _md_table(v.rows) + ["", "</details>"]
    return "\n".join(lines) + "\n"
