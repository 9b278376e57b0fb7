"""The profiles a suite or the CLI names: the shipped YAML, a user's file, or `local` (this machine,
detected and calibrated), and their text for `effbench profiles list|show`.
"""
from __future__ import annotations

from pathlib import Path

from effbench.devices.detect import local_profile
from effbench.devices.profile import (
    LOCAL_ID,
    Fact,
    Figure,
    Profile,
    load_profile_file,
    looks_like_path,
    profiles_dir,
    shipped_ids,
)
from effbench.errors import UserError, did_you_mean
from effbench.units import fmt_bytes, fmt_si


def load_profiles(names: list[str], *, base_dir: Path | None = None, suite_file: str | None = None,
                  cache_dir: Path | None = None, quick: bool = False) -> list[Profile]:
    """Profiles for a suite's `devices:` list: shipped ids, `local` (detected), or YAML paths
    (relative to `base_dir`, the suite's folder)."""
    known = shipped_ids()
    out: list[Profile | None] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        field = f"devices[{i}]"
        if not isinstance(name, str) or not name:
            raise UserError(f"a device must be a profile id or a YAML path, got {name!r}", file=suite_file,
                            field=field, fix=f"use one of {', '.join(known)}")
        if name == LOCAL_ID:
            prof = None  # detected last, after every other name has been checked
        elif looks_like_path(name):
            p = Path(name)
            if not p.is_absolute() and base_dir is not None:
                p = Path(base_dir) / p
            if not p.exists():
                raise UserError(f"device profile '{name}' not found (looked at {p})", file=suite_file,
                                field=field, fix="check the path; it is relative to the suite file")
            prof = load_profile_file(p)
        else:
            path = profiles_dir() / f"{name}.yaml"
            if not path.exists():
                raise UserError(f"unknown device '{name}'{did_you_mean(name, known)}", file=suite_file,
                                field=field, fix=f"use one of {', '.join(known)} or a path to a profile YAML")
            prof = load_profile_file(path, expect_id=name)
        pid = prof.id if prof is not None else LOCAL_ID
        if pid in seen:
            raise UserError(f"device '{pid}' is listed twice (also devices[{seen[pid]}])",
                            file=suite_file, field=field, fix="keep one")
        seen[pid] = i
        out.append(prof)
    if LOCAL_ID in seen:
        out[seen[LOCAL_ID]] = local_profile(cache_dir=cache_dir, quick=quick)
    return out


def load_shipped(profile_id: str) -> Profile:
    if profile_id == LOCAL_ID:
        return local_profile()
    return load_profiles([profile_id])[0]


# -- text for the CLI -----------------------------------------------------------------------------

def _si(x: float | None, unit: str) -> str:
    return fmt_si(x, unit, absent="-")


def _bytes(x: float | None) -> str:
    return fmt_bytes(x, absent="-")


def profiles_list_text(profiles: list[Profile] | None = None) -> str:
    """A table of the shipped profiles (the local one without running its micro-benchmark)."""
    if profiles is None:
        profiles = [load_profile_file(profiles_dir() / f"{i}.yaml", expect_id=i)
                    for i in shipped_ids() if i != LOCAL_ID]
    from effbench.variants.specs import PRECISIONS
    headline = sorted((s for s in PRECISIONS.values() if s.headline), key=lambda s: -s.order)
    head = ("id", "kind", *(f"{s.name.upper()} ops/s" for s in headline), "bandwidth", "TDP")
    rows = [head]
    for p in profiles:
        peak = lambda prec: ("n/a" if prec not in p.peak_ops else  # noqa: E731
                             _si(p.peak_ops_per_s(prec), "ops/s") if p.peak_ops_per_s(prec) else "unpublished")
        rows.append((p.id, p.kind, *(peak(s.name) for s in headline),
                     _si(p.memory.bandwidth_bytes_per_s.value, "B/s"),
                     f"{p.power.tdp_w.value:g} W" if p.power.tdp_w else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("local: this machine, detected and micro-benchmarked on first use (effbench profiles show local)")
    lines.append("n/a: the device cannot run that precision; unpublished: it can, but no vendor figure exists")
    return "\n".join(lines)


def profile_show_text(profile_id: str, profile: Profile | None = None) -> str:
    """Every field of one profile with its source."""
    p = profile or load_shipped(profile_id)
    out = [f"{p.id}: {p.name} ({p.kind})"]
    if p.path:
        out.append(f"  file: {p.path}")
    if p.notes:
        out.append(f"  notes: {' '.join(p.notes.split())}")

    def fig(label: str, f: Figure | Fact | None, unit: str = "") -> None:
        if f is None:
            return
        val = f.value if isinstance(f, Fact) else f"{f.value:.6g}{(' ' + unit) if unit else ''}"
        tag = " [derived]" if isinstance(f, Figure) and f.derived else ""
        out.append(f"  {label} = {val}{tag}")
        out.append(f"      source: {' '.join(f.source.split())}")

    for prec, peak in p.peak_ops.items():
        if peak.dense is None:
            out.append(f"  peak_ops.{prec}.dense = unpublished")
            out.append(f"      why: {' '.join((peak.unpublished or '').split())}")
        fig(f"peak_ops.{prec}.dense", peak.dense, "ops/s")
        fig(f"peak_ops.{prec}.sparse", peak.sparse, "ops/s")
    from effbench.variants.specs import precision_names
    absent = [x for x in precision_names() if x not in p.peak_ops]
    if absent:
        out.append(f"  (cannot run: {', '.join(absent)})")
    m = p.memory
    fig("memory.bandwidth_bytes_per_s", m.bandwidth_bytes_per_s, "B/s")
    fig("memory.capacity_bytes", m.capacity_bytes, "B")
    fig("memory.sram_bytes", m.sram_bytes, "B")
    fig("memory.sram_bandwidth_bytes_per_s", m.sram_bandwidth_bytes_per_s, "B/s")
    fig("memory.flash_bytes", m.flash_bytes, "B")
    fig("power.tdp_w", p.power.tdp_w, "W")
    fig("power.idle_w", p.power.idle_w, "W")
    fig("power.load_w", p.power.load_w, "W")
    for mode, f in p.power.modes.items():
        fig(f"power.modes.{mode}", f, "W")
    e = p.energy_model
    if e.base:
        out.append(f"  energy_model.base = {e.base} (Horowitz, 'Computing's energy problem', ISSCC 2014: "
                   "used where the vendor publishes no energy per operation)")
    fig("energy_model.process_node", e.process_node)
    for prec, f in e.pj_per_mac.items():
        fig(f"energy_model.pj_per_mac.{prec}", f, "pJ")
    fig("energy_model.pj_per_dram_byte", e.pj_per_dram_byte, "pJ")
    fig("energy_model.pj_per_sram_byte", e.pj_per_sram_byte, "pJ")
    fig("energy_model.static_w", e.static_w, "W")
    try:
        em = p.energy()
        out.append(f"  energy model in use: {em.source}")
        out.append("      pJ/MAC: " + ", ".join(f"{k} {v:g}" for k, v in em.pj_per_mac.items())
                   + f"; pJ/DRAM byte {em.pj_per_dram_byte:g}; pJ/SRAM byte {em.pj_per_sram_byte:g}; "
                   f"static {em.static_w:g} W")
    except ImportError:
        out.append("  energy model in use: unavailable (effbench.measure.energy is not installed)")
    fig("derate.compute", p.derate.compute)
    fig("derate.memory", p.derate.memory)
    for k, f in p.derate.compute_by.items():
        fig(f"derate.compute_by.{k}", f)
    for k, f in p.derate.memory_by.items():
        fig(f"derate.memory_by.{k}", f)
    fig("per_op_overhead_s", p.per_op_overhead_s, "s")
    out.append(f"  meters: {', '.join(p.meters) if p.meters else 'none'}")
    if p.error_band:
        out.append(f"  error_band = measured x{p.error_band.low:g} to x{p.error_band.high:g} of the projection")
        out.append(f"      source: {p.error_band.source}")
    for i, r in enumerate(p.references):
        figure = f"{r.latency_ms:g} ms per call" if r.latency_ms else f"{r.throughput_ips:g} inferences/s"
        out.append(f"  references[{i}] = {r.model} batch {r.batch} {r.precision} ({r.runtime}, {r.scenario}): {figure}"
                   + (f" at {r.power_w:g} W" if r.power_w else ""))
        if r.scale != 1.0 or r.note:
            out.append(f"      scale {r.scale:g}: {r.note}")
        out.append(f"      source: {r.source}")
        out.append(f"      quote: \"{r.quote}\"")
        if r.power_w is not None:
            out.append(f"      power source: {r.power_source}")
            out.append(f"      power quote: \"{r.power_quote}\"")
    return "\n".join(out)
