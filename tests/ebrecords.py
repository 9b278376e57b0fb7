"""Records for tests, read through the one schema (`Record.from_json`): sections given as JSON-shaped
dicts, the cell filled in from the cell id where a test does not care about it."""
from __future__ import annotations

from typing import Any

from effbench.results.record import SCHEMA, Record


def cell_from_id(cell_id: str, **over: Any) -> dict[str, Any]:
    parts = (cell_id.split("/") + ["", "", "", "", ""])[:5]
    model, variant, runner_label, batch, scenario = parts
    variant = variant or "fp32"
    batch_size = int(batch[1:]) if batch.startswith("b") and batch[1:].isdigit() else 1
    cell = {"model": model or "m", "variant": variant, "precision": variant.split("-")[0], "method": None,
            "runner": (runner_label or "onnxruntime").split("-")[0], "runner_label": runner_label or "onnxruntime",
            "threads": 1, "batch_size": batch_size, "scenario": scenario or "single-stream"}
    return {**cell, **over}


def make(cell_id: str = "m/fp32/onnxruntime/b1/single-stream", *, cell: dict | None = None,
         status: str = "ok", **fields: Any) -> Record:
    """A record as a store line would give it; `cell` overrides the fields derived from the id. An ok
    record without a given latency gets a 1 ms median (the schema requires one)."""
    if status == "ok" and "latency_ms" not in fields:
        fields["latency_ms"] = {"median": 1.0}
    return Record.from_json({"schema": SCHEMA, "cell_id": cell_id, "config_hash": fields.pop("config_hash", "h"),
                             "status": status, "cell": cell_from_id(cell_id, **(cell or {})), **fields})
