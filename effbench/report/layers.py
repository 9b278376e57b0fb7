"""The report's "Where time goes" section: the per-layer profiles `effbench layers` wrote beside the
store (layers/<cell>/layers.json), top layers first, with the time the MAC count does not explain."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

TOP = 12


def load_profiles(out_dir: Path) -> list[dict[str, Any]]:
    """Every layers.json under out_dir/layers/ that reads as one (a broken file is left out, never fatal)."""
    out = []
    for p in sorted((Path(out_dir) / "layers").glob("*/layers.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("rows"), list) and isinstance(data.get("summary"), dict):
            out.append(data)
    return out


def _num(x: Any, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and not isinstance(x, bool) else "—"


def section(profiles: list[dict[str, Any]]) -> str:
    if not profiles:
        return ""
    e = lambda x: html.escape(str(x), quote=True)  # noqa: E731
    parts = []
    for prof in profiles:
        s = prof["summary"]
        rows = []
        for r in prof["rows"][:TOP]:
            if not isinstance(r, dict):
                continue
            added = " (added by the runtime)" if r.get("added_by_runtime") else ""
            rows.append(f"<tr><td>{e(r.get('layer'))}{e(added)}</td><td>{e(r.get('op_type') or '')}</td>"
                        f"<td>{e(r.get('kernel'))}</td><td>{_num(r.get('time_us'), '.1f')}</td>"
                        f"<td>{_num(r.get('share'), '.1%')}</td><td>{_num(r.get('macs'), ',')}</td>"
                        f"<td>{_num(r.get('gflops'), '.1f')}</td></tr>")
        parts.append(
            f"<h3>{e(prof.get('cell_id'))}</h3><p class=\"muted\">{_num(s.get('total_us'), '.1f')} us of kernel time per "
            f"call ({e(prof.get('timing', ''))}); {_num(s.get('share_without_macs'), '.0%')} in layers without MACs and "
            f"{_num(s.get('share_added_by_runtime'), '.0%')} in kernels the runtime added: time the MAC count does not "
            "explain.</p><div class=\"scroll short\"><table class=\"eb-table compact\"><thead><tr><th>layer</th>"
            "<th>op</th><th>kernel</th><th>us</th><th>share</th><th>MACs</th><th>GFLOP/s</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div>")
    return ('<section id="layers"><h2>Where time goes</h2><p class="muted">Per-layer profiles written by '
            "<code>effbench layers</code>: the runtime's own per-kernel durations folded onto the graph's layers, "
            "each with its MACs and the rate it achieved.</p>" + "".join(parts) + "</section>")
