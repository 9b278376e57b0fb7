"""The work figures of a cell's variant (MACs, FLOPs, BOPs, bytes), counted once per graph and batch size."""
from __future__ import annotations

from effbench.errors import UserError
from effbench.execution.pairing import FP32
from effbench.results.record import Cell, Energy, ModelStats, Record
from effbench.runners import runner_side
from effbench.variants import Variant, bits


class WorkCounter:
    """Counts a variant's work from its ONNX graph and keeps each count for the run."""

    def __init__(self) -> None:
        self.cache: dict = {}

    def of(self, variant: Variant, art, cell: Cell) -> ModelStats:
        """Work figures for this variant at this batch size, counted from its ONNX graph.

        The torch side of a variant runs the same operators as the FP32 graph at its own bit widths,
        so its MACs come from the FP32 graph and its BOPs from the variant's weight and activation bits.
        """
        from effbench.measure.flops import count_work
        graph = variant.own_graph(runner_side(cell.runner))
        path = graph or variant.base_graph or art.onnx_path  # base_graph: the pruned FP32 graph
        key = (path, cell.batch_size, variant.binary_nodes, tuple(sorted(variant.node_bits.items())))
        if key not in self.cache:
            try:
                wc = count_work(path, batch_size=cell.batch_size, dims=art.dims,
                                binary_nodes=set(variant.binary_nodes) or None, node_bits=variant.node_bits)
                self.cache[key] = wc.to_json()
            except UserError as e:
                self.cache[key] = {"error": e.one_line()}
            except Exception as e:  # a counting bug must not cost the measurement
                self.cache[key] = {"error": f"work count failed: {type(e).__name__}: {e}"}
        stats = dict(self.cache[key])
        stats["counted_on"] = "variant graph" if graph else f"pruned {FP32} graph" if variant.base_graph else f"{FP32} graph"
        side = variant.side_stats(runner_side(cell.runner))
        if not graph and "macs" in stats:
            # the module runs the FP32 graph's operators at the variant's bit widths (the registry's,
            # unless the saved weights say otherwise); a precision nobody registered counts as 32-bit
            wbits, abits = bits(cell.precision) or (32, 32)
            wbits = side.get("weight_bits") or wbits
            stats["weight_bits"] = wbits
            stats["activation_bits"] = abits
            stats["bops"] = int(stats["macs"] * wbits * abits)
        if side.get("size_bytes"):
            stats["size_bytes"] = side["size_bytes"]
        stats.pop("by_node", None)  # per-node detail stays in `effbench flops --by node`
        return ModelStats.from_json(stats)


def modeled_energy(record: Record, profiles: list, why_not_measured: str | None) -> Energy:
    """The record's energy modeled from the local profile's energy model (no counter here, or beside a measured
    figure), or why it is neither measured nor modeled."""
    from effbench.measure.energy import modeled_energy as model
    ms = record.model_stats
    local = next((p for p in profiles if p.id == "local"), None)
    device = record.cell.device
    if local is None or device != "cpu" or ms is None or ms.macs is None or not record.latency_ms:
        reason = ("no local profile in devices:" if local is None else
                  f"the local profile describes this machine's CPU, the cell ran on {device}; its device "
                  "profile's projection models it" if device != "cpu" else "no work count for this variant")
        return Energy(reason=f"energy not measured ({why_not_measured}) and not modeled ({reason})")
    b = record.cell.batch_size
    out = model(macs=ms.macs // b, bytes_moved=(ms.bytes_moved or 0) // b, precision=record.cell.precision,
                seconds_per_inference=record.latency_ms.median / 1e3 / b, model=local.energy(), profile_id="local")
    if out.get("j_per_inference") is not None:
        out["reason"] = f"no energy counter here: {why_not_measured}" if why_not_measured else None
    elif why_not_measured:
        out["reason"] = f"energy not measured ({why_not_measured}) and {out['reason']}"
    return Energy.from_json(out)
