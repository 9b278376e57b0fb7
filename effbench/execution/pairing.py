"""How a run pairs its cells and what a record says about the pairing: groups and their members, each
variant's paired speedup vs its FP32 twin (or why it has none), and the drift sentinel's verdict.
"""
from __future__ import annotations

from effbench.results.record import Cell, Comparison, Drift
from effbench.variants import Variant, reference_precision

FP32 = reference_precision()  # the precision every variant is compared against
# The sentinel moving by more than this while a group was measured flags its cells' absolute latency.
DRIFT_THRESHOLD = 0.10


def group_key(cell: Cell) -> tuple:
    """The cells timed in one worker: one model, runner and scenario."""
    return (cell.model, cell.runner_label, cell.scenario)


def member_key(label: str, batch_size: int) -> str:
    return f"{label}/b{batch_size}"


def group_seed(run_id: str, rnd: int, what: str) -> int:
    """The interleaving order's seed of one group and round: different in every run (its run id), fixed within it."""
    import hashlib
    return int.from_bytes(hashlib.sha256(f"{run_id}/{rnd}/{what}".encode()).digest()[:4], "little")


def fp32_twin(cell: Cell) -> Cell:
    """The FP32 cell of the same model, runner, batch size and scenario."""
    return cell.replace(variant=FP32, precision=FP32, method=None)


def fp32_id(cell: Cell) -> str:
    return fp32_twin(cell).cell_id


def unpaired_comparison(cell: Cell, reason: str) -> Comparison:
    return Comparison(baseline=fp32_id(cell), reason=reason)


def paired_comparison(cell: Cell, variant: Variant, member: dict, fp32: dict | None) -> Comparison:
    """This round's speedup vs FP32: the median over cycles of FP32's block median / this block median,
    both timed in one worker within one cycle. Emulated variants get no speedup: their speed is that
    of the float kernels that emulate them."""
    if fp32 is None or fp32.get("status") != "ok":
        why = f"the FP32 twin is {fp32['status']}: {fp32.get('reason')}" if fp32 else "no FP32 variant to compare with"
        return paired_against(fp32_id(cell), variant, member, None, why)
    return paired_against(fp32_id(cell), variant, member, fp32)


def paired_against(baseline_id: str, variant: Variant, member: dict, base: dict | None,
                   missing: str = "no baseline to compare with") -> Comparison:
    """This round's speedup vs the baseline member `base` timed in the same worker (the FP32 twin, or a
    baseline runner's or model's FP32 session held beside the group's: `execution.crosspairs`): the median
    over cycles of the baseline's block median / this block median. `missing`: why there is none."""
    from effbench.measure.latency import block_ratios
    from effbench.measure.stats import with_floor, within_one_round
    if variant.emulated:
        return Comparison(baseline=baseline_id, reason="emulated: this precision runs as float kernels that "
                                                       "emulate it, so its speed is not the speed of native kernels")
    if base is None:
        return Comparison(baseline=baseline_id, reason=missing)
    est = within_one_round(block_ratios(base["block_ms"], member["block_ms"]))
    if est is None:
        return Comparison(baseline=baseline_id, reason="no cycle timed both sides")
    est = with_floor(est)
    return Comparison(baseline=baseline_id, speedup=est.value, ci=(est.lo, est.hi), ci_level=est.level,
                      ci_scope=est.scope, ci_method=est.method, rounds=1, method="paired", cycles=est.n)


def drift_section(sentinel: dict) -> Drift:
    """The record's `drift` section: the sentinel before and after the group, flagged past the threshold."""
    change = sentinel.get("change")
    return Drift(threshold=DRIFT_THRESHOLD, rounds=[sentinel], max_abs_change=abs(change) if change is not None else None,
                 flagged=bool(change is not None and abs(change) > DRIFT_THRESHOLD))
