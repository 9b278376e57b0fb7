"""Merging a cell's rounds into one record: latency, speedup and the load scenarios' figures with their
uncertainty over rounds (each round a fresh worker at another moment of the machine).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from effbench.errors import UserError
from effbench.measure.latency import LatencyStats
from effbench.results.record import Comparison, Drift, Generation, Latency, Offline, Provenance, Record, Server
from effbench.results.scenarios import MultiStream, SingleStream

# What the rounds of one cell must share to be merged into one figure (pyperf's Benchmark.add_run refuses a run
# whose metadata differ in the same way): the machine and the software that timed them. Not the hostname (the
# nodes of one device in a fleet are interchangeable machines), the speed index, the run id or the time.
COMPARED_HOST = ("cpu", "machine", "cores_logical", "isa_flags")
ALLOW_MIXED_FIX = ("measure the cell on one machine (a fresh -o folder), or pass --allow-mixed (effbench report, "
                   "compare, run --resume) to merge them, marked mixed")


def comparable(p: Provenance) -> dict[str, Any]:
    """The provenance fields rounds must agree on, flat: host.cpu, host.gpus, python, packages.onnxruntime, ..."""
    out: dict[str, Any] = {f"host.{k}": p.host.get(k) for k in COMPARED_HOST if p.host.get(k) is not None}
    if p.gpus:
        out["host.gpus"] = [f"{g.get('name')} (driver {g.get('driver')})" for g in p.gpus]
    out.update({"python": p.python, "effbench": p.effbench})
    out.update({f"packages.{k}": v for k, v in p.packages.items()})
    return {k: v for k, v in out.items() if v is not None}  # not recorded (an older store): nothing to compare


def provenance_differences(provenances: Sequence[Provenance]) -> dict[str, list[Any]]:
    """{field: its distinct values, in order} for each compared field (`comparable`) the provenances do not
    agree on, and then the hostnames where they differ too; {} when they may be merged. A field one side
    does not record (an older store) is not a difference."""
    flat = [comparable(p) for p in provenances]
    out: dict[str, list[Any]] = {}
    for key in dict.fromkeys(k for f in flat for k in f):
        values = [f[key] for f in flat if key in f]
        distinct = [v for i, v in enumerate(values) if v not in values[:i]]
        if len(distinct) > 1 and len(values) == len(flat):
            out[key] = distinct
    if out:
        names = [p.host.get("hostname") for p in provenances if p.host.get("hostname")]
        hosts = [h for i, h in enumerate(names) if h not in names[:i]]
        if len(hosts) > 1:
            out["host.hostname"] = hosts
    return out


def mixed_error(cell_id: str, diff: dict[str, list[Any]], *, what: str = "its rounds",
                file: str | None = None) -> UserError:
    """The one-line refusal to merge rounds of another machine or software into one cell."""
    key = next(iter(diff))
    shown = " vs ".join(_short(v) for v in diff[key][:3])
    return UserError(f"{cell_id}: {what} differ in {key} ({shown}): one CI over them would mix machines",
                     file=file, field=f"provenance.{key}", fix=ALLOW_MIXED_FIX)


def _short(v: Any) -> str:
    text = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def merge_rounds(records: Iterable[Record], *, allow_mixed: bool = False, source: str | None = None) -> list[Record]:
    """One record per cell: its rounds combined with the uncertainty over rounds (docs/measurement.md).

    Latency: the median of round medians with a CI over rounds (each round a fresh worker at another
    moment); the pooled samples keep the percentiles, and their one-worker CI stays as
    `within_round_ci`. Speedup: its per-round paired values combined the same way. Memory: the round that
    measured it (each run measures it once, in the variant's own worker).

    Ok rounds whose provenance differs (`provenance_differences`: another CPU, another runtime version; a
    --resume on another machine does this) are refused with a one-line UserError naming `source`, unless
    `allow_mixed`: then the merged record says what differed in `mixed`."""
    by_cell: dict[str, list[Record]] = {}
    for r in records:
        by_cell.setdefault(r.cell_id, []).append(r)
    merged = []
    for group in by_cell.values():
        group.sort(key=lambda r: r.round)
        # a cell re-run with another config (edited suite) keeps only its newest config
        newest = group[-1].config_hash
        group = [r for r in group if r.config_hash == newest]
        ok = [r for r in group if r.ok]
        if len(group) == 1:
            merged.append(group[0])
            continue
        diff = provenance_differences([r.provenance for r in ok])  # the rounds whose figures are merged
        if diff and not allow_mixed:
            raise mixed_error(group[0].cell_id, diff, file=source)
        one = group[-1] if not ok else _merged(group, ok)
        merged.append(one.replace(mixed=diff) if diff else one)
    return merged


def _merged(group: list[Record], ok: list[Record]) -> Record:
    last = ok[-1]
    round_medians = tuple(r.latency_ms.median for r in ok if r.latency_ms)
    paired = [r.paired_ratios for r in ok]
    samples = tuple(s for r in ok for s in r.samples_ms)
    latency = last.latency_ms
    if samples:
        lat0 = ok[0].latency_ms
        st = LatencyStats.from_samples_ms(list(samples), timing=lat0.timing if lat0 else "per-call",
                                          block_size=lat0.block_size if lat0 else 1,
                                          first_call_ns=((lat0.first_call if lat0 else None) or 0) * 1e6,
                                          unstable=any(r.unstable for r in ok))
        latency = Latency.from_json({**st.to_json(),
                                     "calls": sum((r.latency_ms.calls or 0) if r.latency_ms else 0 for r in ok),
                                     "elapsed_s": sum((r.latency_ms.elapsed_s or 0) if r.latency_ms else 0 for r in ok)})
    else:
        samples = last.samples_ms
    if latency:
        latency = _latency_over_rounds(latency, list(round_medians))
    drifts = [r.drift for r in ok if r.drift]
    tps = sorted(r.throughput_ips for r in ok if r.throughput_ips)
    measured = [r.memory for r in ok if r.memory and r.memory.peak_rss_bytes is not None]
    failed = [r for r in group if not r.ok]
    return last.replace(
        round=-1, rounds=len(group), round_medians_ms=round_medians,
        # paired only when every ok round has its ratio: the gate pairs them with the rounds
        paired_ratios=tuple(p[0] for p in paired) if paired and all(len(p) == 1 for p in paired) else (),
        samples_ms=samples, latency_ms=latency,
        comparison=_comparison_over_rounds([r.comparison for r in ok]),
        comparisons={k: c for k in dict.fromkeys(k for r in ok for k in r.comparisons)  # compare: (config.compare)
                     if (c := _comparison_over_rounds([r.comparisons.get(k) for r in ok])) is not None},
        drift=_drift_over_rounds(drifts) if drifts else None,
        throughput_ips=tps[len(tps) // 2] if tps else None,
        memory=measured[-1] if measured else last.memory, **merged_sections(ok),
        reason=f"{len(failed)} of {len(group)} rounds did not finish: {failed[0].reason}" if failed else last.reason)


def _latency_over_rounds(lat: Latency, round_medians: list[float]) -> Latency:
    """The headline median and CI over rounds; the pooled samples' CI is kept, labelled, beside it."""
    from effbench.measure.stats import UNSTABLE_REL_HALFWIDTH, over_rounds
    est = over_rounds(round_medians)
    if est is None:
        return lat
    unstable = est.rel_halfwidth > UNSTABLE_REL_HALFWIDTH
    return lat.replace(
        within_round_ci=lat.ci, median=est.value, ci=(est.lo, est.hi), ci_scope=est.scope, ci_method=est.method,
        rel_ci_halfwidth=est.rel_halfwidth, unstable=unstable,
        unstable_reason=(f"round medians spread: the 95% CI over {est.n} rounds is +-{est.rel_halfwidth:.0%} "
                         f"of the median (flagged above +-{UNSTABLE_REL_HALFWIDTH:.0%})" if unstable else None))


def _comparison_over_rounds(per_round: list[Comparison | None]) -> Comparison | None:
    """Per-round paired speedups combined: median with a CI over rounds; one round keeps its own
    within-worker CI and says it covers one moment; none with a number keeps the last round's reason."""
    from effbench.measure.stats import over_rounds, with_floor
    comps = [c for c in per_round if c]
    if not comps:
        return None
    values = [c.speedup for c in comps if c.speedup is not None]
    if len(values) < 2:
        return next((c for c in comps if c.speedup is not None), comps[-1])
    est = with_floor(over_rounds(values))
    return Comparison(
        baseline=comps[-1].baseline, speedup=est.value, ci=(est.lo, est.hi), ci_level=est.level,
        ci_scope=est.scope, ci_method=est.method, rounds=len(values), method=comps[-1].method or "paired",
        round_speedups=tuple(values), cycles=sum(c.cycles or 0 for c in comps),
        note=(f"{len(comps) - len(values)} round(s) without a paired value: {comps[-1].reason}"
              if len(values) < len(comps) else None), extra=[c for c in comps if c.speedup is not None][-1].extra)


def _drift_over_rounds(drifts: list[Drift]) -> Drift:
    rounds = [r for d in drifts for r in d.rounds]
    changes = [abs(r["change"]) for r in rounds if isinstance(r.get("change"), (int, float))]
    threshold = drifts[-1].threshold
    worst = max(changes) if changes else None
    return Drift(threshold=threshold, rounds=rounds, max_abs_change=worst,
                 flagged=bool(worst is not None and threshold is not None and worst > threshold))


def merged_sections(ok: Sequence[Record]) -> dict[str, Any]:
    """A cell's offline and server sections over its rounds: the median of the rounds' values with a
    t-interval on logs over them (`measure.stats.over_rounds`), as a latency median is merged."""
    out: dict[str, Any] = {}
    offs = [r.offline for r in ok if r.offline]
    if offs:
        out["offline"] = _merge_offline(offs)
    servers = [r.server for r in ok if r.server]
    if servers:
        out["server"] = _merge_server(servers)
    gens = [r.generation for r in ok if r.generation]
    if gens:
        out["generation"] = _merge_generation(gens)
    for name in ("single_stream", "multi_stream"):
        streams = [getattr(r, name) for r in ok if getattr(r, name)]
        if streams:
            out[name] = _merge_stream(streams)
    return out


def _merge_stream(rounds: list[SingleStream] | list[MultiStream]) -> SingleStream | MultiStream:
    """LoadGen's single- or multi-stream figure over rounds: the percentile latency's median with the CI
    over rounds; the other figures from the median round; VALID only if LoadGen called every round VALID."""
    done = [s for s in rounds if s.percentile_ms is not None]
    if not done:
        return rounds[-1]
    values = [s.percentile_ms for s in done]
    median_round = sorted(done, key=lambda s: s.percentile_ms)[(len(done) - 1) // 2]
    verdicts = tuple(v for s in done for v in (s.round_verdicts or (s.verdict,)) if v)
    est, unstable = _over_rounds(values)
    base = median_round.replace(round_percentile_ms=tuple(values), round_verdicts=verdicts,
                                verdict="VALID" if verdicts and all(v == "VALID" for v in verdicts) else "INVALID",
                                queries=sum(s.queries or 0 for s in done) or None)
    if isinstance(base, MultiStream):
        base = base.replace(runs=sum(s.runs or 0 for s in done), runs_valid=sum(s.runs_valid or 0 for s in done))
    if est is None:
        return base
    return base.replace(percentile_ms=est.value, ci=(est.lo, est.hi), ci_level=est.level, ci_scope=est.scope,
                        ci_method=est.method, unstable=unstable)


GENERATION_FIGURES = ("ttft_ms", "tpot_ms", "e2e_ms", "prefill_tokens_per_s", "decode_tokens_per_s")


def _merge_generation(gens: list[Generation]) -> Generation:
    """Each figure: the median of its round values with the CI over rounds, as a latency; the paired
    speedups vs FP32 as `comparison` sections are; ITL percentiles and the bandwidth: medians over rounds."""
    import statistics
    last = gens[-1]
    changes: dict[str, Any] = {"requests": sum(g.requests or 0 for g in gens)}
    rounds = {k: [v for g in gens for v in (g.round_values.get(k) or [getattr(g, k)]) if v is not None]
              for k in GENERATION_FIGURES}
    scope = method = None
    for k, values in rounds.items():
        est, _ = _over_rounds(values)
        if est is not None:
            changes[k], changes[f"{k}_ci"] = est.value, (est.lo, est.hi)
            scope, method = est.scope, est.method
    changes["round_values"] = {**last.round_values, **rounds}
    if scope:
        changes["ci_scope"], changes["ci_method"] = scope, method
    itl_keys = sorted({q for g in gens for q in g.itl_ms})
    changes["itl_ms"] = {q: statistics.median(g.itl_ms[q] for g in gens if q in g.itl_ms) for q in itl_keys}
    bws = [g.bandwidth_bytes_per_s for g in gens if g.bandwidth_bytes_per_s]
    if bws:
        changes["bandwidth_bytes_per_s"] = statistics.median(bws)
        tps, per_token = changes.get("decode_tokens_per_s", last.decode_tokens_per_s), last.decode_bytes_per_token
        if tps and per_token:
            changes["bandwidth_utilization"] = tps * per_token / changes["bandwidth_bytes_per_s"]
    for k in ("j_per_output_token", "j_per_prompt_token"):
        vals = [getattr(g, k) for g in gens if getattr(g, k) is not None]
        changes[k] = statistics.median(vals) if vals else None
    metrics = sorted({m for g in gens for m in g.speedup_vs_fp32})
    changes["speedup_vs_fp32"] = {
        m: c.to_json() for m in metrics
        if (c := _comparison_over_rounds([Comparison.from_json(g.speedup_vs_fp32[m]) if m in g.speedup_vs_fp32
                                          else None for g in gens])) is not None}
    return last.replace(**changes)


def _over_rounds(values: list[float]):
    from effbench.measure.stats import UNSTABLE_REL_HALFWIDTH, over_rounds
    est = over_rounds(values)
    return est, bool(est and est.rel_halfwidth > UNSTABLE_REL_HALFWIDTH)


def _merge_offline(offs: list[Offline]) -> Offline:
    values = [o.samples_per_s for o in offs if o.samples_per_s]
    last = offs[-1]
    est, unstable = _over_rounds(values)
    if est is None:
        return last
    return last.replace(samples_per_s=est.value, ci=(est.lo, est.hi), ci_level=est.level, ci_scope=est.scope,
                        ci_method=est.method, passes=sum(o.passes or 0 for o in offs),
                        elapsed_s=sum(o.elapsed_s or 0 for o in offs), round_samples_per_s=tuple(values),
                        unstable=unstable)


def _merge_server(servers: list[Server]) -> Server:
    """max_qps over rounds; the figures at the peak come from the median round; the curve holds every
    round's probes."""
    found = [s for s in servers if s.max_qps]
    last = servers[-1]
    if not found:
        return last
    values = [s.max_qps for s in found]
    median_round = sorted(found, key=lambda s: s.max_qps)[(len(found) - 1) // 2]
    est, unstable = _over_rounds(values)
    curve = tuple(sorted(p for s in servers for p in s.curve))
    probes = [{**p, "round": i} for i, s in enumerate(servers) for p in s.probes]
    note = (f"{len(servers) - len(found)} of {len(servers)} rounds found no rate within the bound"
            if len(found) < len(servers) else None)
    base = median_round.replace(curve=curve, probes=probes, round_max_qps=tuple(values),
                                reason=note or median_round.reason)
    if est is None:
        return base
    return base.replace(max_qps=est.value, max_qps_ci=(est.lo, est.hi), ci_level=est.level, ci_scope=est.scope,
                        ci_method=est.method, unstable=unstable)
