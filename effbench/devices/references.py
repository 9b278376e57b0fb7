"""Published measurements against projections (`effbench profiles check`), and the derates and error
bands the shipped profiles carry, fitted on them (`bench/reference_check.py` regenerates those).

Each profile's `references` (a standard model run on the real device, with its source and quote) are
projected with the profile uncalibrated (derate 1). The fit that ships is one derate for both roofs,
chosen by least squares on log(projected / published) through the projection itself (per-node and
per-call overheads are not derated), on the profile's own references; a profile with none ships no
derate (its vendor peaks, uncalibrated). Leave-one-out scores that same procedure: each reference is
projected by the fit made without it (uncalibrated where its profile has no other reference). A fit
pooled over the other profiles' references is reported too (leave-one-profile-out): it was no better
than no derate, so nothing ships it. Where a reference also gives the power measured on the device, the
power the shipped projection implies is compared with it.

Work comes from the zoo's random-weight copy of the architecture (`effbench.models.standard`), exported
and counted at the reference's batch size; a reference at int8 moves its weights and activations at
the precision's registered bit widths (the count itself is on the FP32 graph).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from effbench.devices.profile import Derate, ErrorBand, Figure, Profile, Reference

# A derate is searched in [1e-3, 1e3]: a reference the per-node overhead alone makes slower than
# published pins the fit at the upper bound instead of running off to infinity.
DERATE_BOUNDS = (1e-3, 1e3)
# The published power and the power the projection implies may differ by this factor either way before
# the check says so (the idle and load figures themselves are often whole-board or whole-system).
POWER_TOLERANCE = 1.5
# Band percentiles, and the fewest references a band is computed from.
BAND_QUANTILES = (0.1, 0.9)
BAND_MIN_REFERENCES = 3
# How the regenerated figures are rounded in the YAML (and how close a shipped one must be to the data).
SIGNIFICANT = 4
FIGURE_REL_TOLERANCE = 1e-3
BENCH = "bench/reference_check.py"
TEST = "tests/devices/test_reference_fit.py"


def work_key(ref: Reference) -> str:
    """The key a reference's counted work is stored under (bench/reference_check.json `work`)."""
    return f"{ref.model}/b{ref.batch}/{ref.precision}"


def derate_of(d: float, source: str = "fitted on published references") -> Derate:
    """One derate on both roofs (compute and memory): what a profile's fit ships."""
    return Derate(compute=Figure(value=d, source=source, derived=True),
                  memory=Figure(value=d, source=source, derived=True))


@dataclass(frozen=True)
class _Point:
    """One projectable reference: its profile without a derate, and the work of its model."""

    index: int            # into CheckReport.checks
    profile: Profile      # derate 1
    ref: Reference
    work: dict

    def seconds(self, d: float) -> float | None:
        """Per inference, projected with derate `d` on both roofs."""
        from effbench.devices.project import project_work
        proj = project_work(self.work, self.ref.precision, None, self.profile.with_derate(derate_of(d)))
        return proj.latency_ms / 1e3 / self.ref.batch if proj.status == "ok" and proj.latency_ms else None


def fit_derate(points: list[_Point]) -> float | None:
    """The derate (both roofs) minimising the sum over `points` of log(projected / published)^2: the
    objective `effbench profiles calibrate` minimises, with one parameter, through the projection."""
    if not points:
        return None
    from scipy.optimize import least_squares
    lo, hi = (math.log(b) for b in DERATE_BOUNDS)

    def resid(x: np.ndarray) -> np.ndarray:
        d = math.exp(float(x[0]))
        return np.array([math.log(p.seconds(d) / p.ref.seconds_per_inference) for p in points])  # type: ignore[operator]

    # start where the busy part alone would match: the geometric mean of projected / published at derate 1
    start = float(np.clip(np.mean([math.log(p.seconds(1.0) / p.ref.seconds_per_inference) for p in points]),  # type: ignore[operator]
                          lo, hi))
    sol = least_squares(resid, [start], bounds=([lo], [hi]), xtol=1e-12, ftol=1e-12, gtol=1e-12)
    return math.exp(float(sol.x[0]))


@dataclass(frozen=True)
class ReferenceCheck:
    profile: str
    kind: str
    ref: Reference
    projected_s: float | None            # per inference, uncalibrated (derate 1)
    reason: str | None = None            # why there is no projection
    shipped_s: float | None = None       # per inference, with the profile as shipped (its derate)
    loo_s: float | None = None           # per inference, by the fit made without this reference
    loo_from: str | None = None          # "own" (fitted on its profile's other references) or "uncalibrated" (none)
    lopo_s: float | None = None          # per inference, by the fit pooled over the other profiles' references
    power_w: float | None = None         # the shipped projection's implied average power (system energy / time)
    power_same_as: str | None = None     # the profile's power field that cites the same measurement as power_w

    @property
    def published_s(self) -> float:
        return self.ref.seconds_per_inference

    @property
    def factor(self) -> float | None:
        """projected / published: above 1 projects too slow, below 1 too fast."""
        return self.projected_s / self.published_s if self.projected_s else None

    @property
    def shipped_factor(self) -> float | None:
        return self.shipped_s / self.published_s if self.shipped_s else None

    @property
    def loo_factor(self) -> float | None:
        return self.loo_s / self.published_s if self.loo_s else None

    @property
    def lopo_factor(self) -> float | None:
        return self.lopo_s / self.published_s if self.lopo_s else None

    @property
    def power_factor(self) -> float | None:
        """implied / published average power."""
        return self.power_w / self.ref.power_w if self.power_w and self.ref.power_w else None

    @property
    def power_off(self) -> bool:
        """The implied power is more than POWER_TOLERANCE away from the published one, either way."""
        f = self.power_factor
        return f is not None and _fold(f) > POWER_TOLERANCE  # type: ignore[operator]


@dataclass(frozen=True)
class ProfileFit:
    """The derate and error band the data give one profile (what its YAML should carry)."""

    profile: str
    derate: float | None                 # None: no projectable reference of its own (or nothing projects)
    basis: str                           # "own" | "uncalibrated" (no reference of its own) | "none" (nothing projects)
    references: int                      # how many references the derate was fitted on
    profiles: int                        # over how many profiles
    shipped_derate: float | None         # what the profile as loaded carries (None: no single derate)
    band: tuple[float, float] | None = None
    band_references: int = 0
    band_profiles: int = 0
    why_none: str | None = None

    @property
    def matches(self) -> bool:
        """The shipped derate is what the data give (to the YAML's rounding)."""
        if self.derate is None:
            return self.shipped_derate is None
        return self.shipped_derate is not None and math.isclose(self.shipped_derate, self.derate,
                                                                rel_tol=FIGURE_REL_TOLERANCE)


def _fold(f: float | None) -> float | None:
    """How far off, whichever way: 2.0 for both half and double."""
    return max(f, 1 / f) if f else None


def _band(xs: list[float]) -> tuple[float, float] | None:
    if len(xs) < BAND_MIN_REFERENCES:
        return None
    return float(np.quantile(xs, BAND_QUANTILES[0])), float(np.quantile(xs, BAND_QUANTILES[1]))


def _single_derate(p: Profile) -> float | None:
    """The profile's derate when it is one number on both roofs (what a fit ships), else None."""
    d = p.derate
    if d.compute_by or d.memory_by or not math.isclose(d.compute.value, d.memory.value, rel_tol=1e-9):
        return None
    if d.compute.value == 1.0 and d.compute.source.startswith("default"):
        return None   # the schema's default: no derate shipped
    return d.compute.value


@dataclass
class CheckReport:
    checks: list[ReferenceCheck]
    fits: dict[str, ProfileFit] = field(default_factory=dict)
    work: dict[str, dict] = field(default_factory=dict)   # work_key -> the counted work the projections used

    def _ratios(self, attr: str) -> list[float]:
        return [1 / f for c in self.checks if (f := getattr(c, attr))]

    def bands(self) -> dict[str, tuple[float, float] | None]:
        """10th-90th percentile of published / projected: uncalibrated (the band a profile without
        references ships); leave-one-out (the band a profile with references ships); leave-one-profile-out
        (a fit pooled over the other profiles': the evidence that pooling does not help)."""
        return {"uncalibrated": _band(self._ratios("factor")),
                "leave_one_out": _band(self._ratios("loo_factor")),
                "leave_one_profile_out": _band(self._ratios("lopo_factor"))}

    def power_checks(self) -> list[ReferenceCheck]:
        return [c for c in self.checks if c.ref.power_w is not None]

    def summary(self) -> dict[str, float | int | None]:
        def stats(attr: str) -> tuple[float | None, float | None]:
            xs = [_fold(getattr(c, attr)) for c in self.checks if getattr(c, attr)]
            return (float(np.median(xs)), max(xs)) if xs else (None, None)  # type: ignore[type-var]
        raw, shipped, loo, lopo = stats("factor"), stats("shipped_factor"), stats("loo_factor"), stats("lopo_factor")
        power = self.power_checks()
        compared = [c for c in power if c.power_factor]
        return {"references": len(self.checks), "projected": sum(1 for c in self.checks if c.factor),
                "profiles": len({c.profile for c in self.checks if c.factor}),
                "median_factor": raw[0], "max_factor": raw[1],
                "shipped_median_factor": shipped[0], "shipped_max_factor": shipped[1],
                "loo_median_factor": loo[0], "loo_max_factor": loo[1],
                "lopo_median_factor": lopo[0], "lopo_max_factor": lopo[1],
                "with_published_power": len(power), "power_compared": len(compared),
                "power_independent": sum(1 for c in compared if not c.power_same_as),
                "power_off": sum(1 for c in compared if c.power_off), "power_tolerance": POWER_TOLERANCE,
                "derates_differing": sum(1 for f in self.fits.values() if not f.matches)}

    def to_json(self) -> dict:
        def ms(s: float | None) -> float | None:
            return s * 1e3 if s else None
        return {"summary": self.summary(), "bands": self.bands(),
                "fits": {pid: {"derate": f.derate, "basis": f.basis, "references": f.references,
                               "profiles": f.profiles, "shipped_derate": f.shipped_derate, "matches": f.matches,
                               "band": f.band, "band_references": f.band_references,
                               "band_profiles": f.band_profiles, "why_none": f.why_none}
                         for pid, f in self.fits.items()},
                "checks": [{"profile": c.profile, "model": c.ref.model, "batch": c.ref.batch,
                            "precision": c.ref.precision, "runtime": c.ref.runtime, "scenario": c.ref.scenario,
                            "published_ms_per_inference": c.published_s * 1e3,
                            "projected_ms_per_inference": ms(c.projected_s), "projected_over_published": c.factor,
                            "shipped_ms_per_inference": ms(c.shipped_s), "shipped_over_published": c.shipped_factor,
                            "loo_ms_per_inference": ms(c.loo_s), "loo_over_published": c.loo_factor,
                            "loo_fitted_on": c.loo_from,
                            "lopo_ms_per_inference": ms(c.lopo_s), "lopo_over_published": c.lopo_factor,
                            "implied_power_w": c.power_w, "published_power_w": c.ref.power_w,
                            "implied_over_published_power": c.power_factor, "power_off": c.power_off,
                            "power_same_measurement_as": c.power_same_as,
                            "power_source": c.ref.power_source, "reason": c.reason, "source": c.ref.source}
                           for c in self.checks]}

    def text(self) -> str:
        def ms(s: float | None) -> str:
            return f"{s * 1e3:.4g} ms" if s else "-"

        def x(f: float | None) -> str:
            return f"{f:.2f}" if f else "-"
        lines = [(f"{'profile':<23} {'model':<13} {'b':>4} {'prec':<5} {'published':>11} {'uncalib.':>11} {'x':>6} "
                  f"{'shipped':>11} {'x':>6} {'LOO':>11} {'x':>6}  runtime")]
        for c in self.checks:
            lines.append(f"{c.profile:<23} {c.ref.model:<13} {c.ref.batch:>4} {c.ref.precision:<5} "
                         f"{ms(c.published_s):>11} {ms(c.projected_s):>11} {x(c.factor):>6} {ms(c.shipped_s):>11} "
                         f"{x(c.shipped_factor):>6} {ms(c.loo_s):>11} {x(c.loo_factor):>6}  {c.ref.runtime}"
                         + (f"  ({c.reason})" if c.reason else ""))
        s = self.summary()
        if s["median_factor"]:
            lines.append(f"\n{s['projected']} of {s['references']} references on {s['profiles']} profiles, published "
                         f"vs projected (x = projected / published, off by a median factor / the worst): uncalibrated "
                         f"{s['median_factor']:.2f} / {s['max_factor']:.1f}; as shipped (in-sample) "
                         + (f"{s['shipped_median_factor']:.2f} / {s['shipped_max_factor']:.1f}"
                            if s["shipped_median_factor"] else "-")
                         + "; leave-one-out of the least-squares fit that ships "
                         + (f"{s['loo_median_factor']:.2f} / {s['loo_max_factor']:.1f}" if s["loo_median_factor"]
                            else "- (too few references)"))
        for name, b in self.bands().items():
            if b:
                lines.append(f"published / projected, 10th-90th percentile ({name.replace('_', '-')}): "
                             f"{b[0]:.2f} to {b[1]:.2f}")
        for pid, f in self.fits.items():
            shipped = "none" if f.shipped_derate is None else f"{f.shipped_derate:.4g}"
            fitted = (f"no derate ({f.why_none})" if f.derate is None else
                      f"least-squares derate {f.derate:.4g} (on its {f.references} "
                      f"reference{'s' if f.references != 1 else ''})")
            lines.append(f"  {pid}: {fitted}; shipped {shipped}"
                         + ("" if f.matches else f"  DIFFERS: regenerate with {BENCH}"))
        power = self.power_checks()
        if power:
            lines.append(f"\npublished power on the device vs the power the shipped projection implies (flagged when "
                         f"off by more than x{POWER_TOLERANCE:g} either way):")
            for c in power:
                head = (f"  {c.profile} {c.ref.model} b{c.ref.batch} {c.ref.precision}: "
                        f"published {c.ref.power_w:.4g} W, ")
                if c.power_factor is None:
                    lines.append(head + f"implied - ({c.reason or 'the projection gives no system energy'})")
                    continue
                lines.append(head + f"implied {c.power_w:.4g} W: {(c.power_factor - 1) * 100:+.0f}%"
                             + ("  OFF" if c.power_off else "")
                             + (f"  (the same measurement as {c.power_same_as}: not an independent check)"
                                if c.power_same_as else ""))
            lines.append(f"  {s['power_compared']} compared ({s['power_independent']} independent of the profile's own "
                         f"power figures), {s['power_off']} off by more than x{POWER_TOLERANCE:g}")
        lines.append("published figures, their sources and quotes: `effbench profiles show ID`")
        return "\n".join(lines)


def reference_work(model: str, batch: int, precision: str, cache_dir: Path) -> dict[str, float | None]:
    """Work of one call of zoo `model` at `batch`, bytes at `precision`'s registered bit widths."""
    from effbench.config.suite import ModelSpec
    from effbench.measure.flops import count_work
    from effbench.models.sources import prepare
    from effbench.variants.specs import bits
    art = prepare(ModelSpec.model_validate({"id": model, "source": {"builtin": model}}), 0, base_dir=Path.cwd(),
                  suite_file="<profiles check>", cache_dir=cache_dir)
    w = count_work(art.onnx_path, batch_size=batch, dims=art.dims)
    wbits, abits = bits(precision) or (32, 32)
    weights = w.weight_bytes * wbits / 32
    acts = w.activation_bytes * abits / 32
    moved = weights + max(0, w.bytes_moved - w.weight_bytes) * abits / 32
    node_work = [[c, float(m), wb * wbits / 32, ab * abits / 32, float(n)] for c, m, wb, ab, n in w.node_work]
    whole = sum(m * n for _, m, _, _, n in node_work) == w.macs
    return {"batch": float(batch), "macs": float(w.macs), "bytes_moved": moved, "weight_bytes": weights,
            "activation_bytes": acts, "nodes": float(w.nodes), "node_work": node_work if whole else None}


_URL = re.compile(r"https?://[^\s,;)'\"]+")


def _same_measurement(p: Profile, ref: Reference) -> str | None:
    """The profile's power field whose source cites the document the reference's power comes from: a
    comparison of the two is no independent check of the model."""
    urls = {u.rstrip(".") for u in _URL.findall(ref.power_source or "")}
    for name in ("load_w", "idle_w", "tdp_w"):
        f = getattr(p.power, name)
        if f is not None and urls & {u.rstrip(".") for u in _URL.findall(f.source)}:
            return f"power.{name}"
    return None


def check_references(profiles: list[Profile], cache_dir: Path | None = None, *,
                     work: Mapping[str, dict] | None = None) -> CheckReport:
    """Project every reference of `profiles` uncalibrated and as shipped; fit each profile's derate on
    its references (pooled over the others' where it has none) and leave each reference out of the fit
    that projects it; compare published power with the power the shipped projection implies.

    `work`: counted work by `work_key` (bench/reference_check.json keeps it); what is missing is counted
    here (exports the zoo model into `cache_dir`)."""
    from effbench.devices.project import project_work
    counted: dict[str, dict] = dict(work or {})
    checks: list[ReferenceCheck] = []
    points: list[_Point] = []
    for shipped in profiles:
        bare = shipped.with_derate(Derate())
        for ref in shipped.references:
            key = work_key(ref)
            if key not in counted:
                if cache_dir is None:
                    raise KeyError(f"no counted work for {key} and no cache folder to count it in")
                counted[key] = reference_work(ref.model, ref.batch, ref.precision, cache_dir)
            proj = project_work(counted[key], ref.precision, None, bare)
            s = proj.latency_ms / 1e3 / ref.batch if proj.status == "ok" and proj.latency_ms else None
            as_shipped = project_work(counted[key], ref.precision, None, shipped)
            ok = as_shipped.status == "ok" and as_shipped.latency_ms
            check = ReferenceCheck(shipped.id, shipped.kind, ref, s, None if s else (proj.reason or proj.status),
                                   shipped_s=as_shipped.latency_ms / 1e3 / ref.batch if ok else None,  # type: ignore[operator]
                                   power_w=as_shipped.avg_power_w if ok and ref.power_w else None,
                                   power_same_as=_same_measurement(shipped, ref) if ref.power_w else None)
            if s:
                points.append(_Point(len(checks), bare, ref, counted[key]))
            checks.append(check)

    cache: dict[frozenset[int], float | None] = {}

    def fit(pts: list[_Point]) -> float | None:
        key = frozenset(p.index for p in pts)
        if key not in cache:
            cache[key] = fit_derate(pts)
        return cache[key]

    by_profile: dict[str, list[_Point]] = {}
    for pt in points:
        by_profile.setdefault(pt.profile.id, []).append(pt)
    for pt in points:
        c = checks[pt.index]
        own = [q for q in by_profile[pt.profile.id] if q is not pt]
        others = [q for q in points if q.profile.id != pt.profile.id]
        d_others = fit(others)
        lopo = pt.seconds(d_others) if d_others else None
        d_loo = fit(own) if own else None
        loo = pt.seconds(d_loo) if d_loo else c.projected_s
        checks[pt.index] = _replace(c, loo_s=loo, loo_from="own" if own else "uncalibrated", lopo_s=lopo)

    report = CheckReport(checks, work=counted)
    bands = report.bands()
    n_prof = len(by_profile)
    for p in profiles:
        own = by_profile.get(p.id, [])
        shipped_d = _single_derate(p)
        if own:
            report.fits[p.id] = ProfileFit(p.id, fit(own), "own", len(own), 1, shipped_d, bands["leave_one_out"],
                                           len(points), n_prof)
        elif any(pk.dense is not None for pk in p.peak_ops.values()):
            report.fits[p.id] = ProfileFit(p.id, None, "uncalibrated", 0, 0, shipped_d, bands["uncalibrated"],
                                           len(points), n_prof,
                                           why_none="no projectable published reference of its own: its vendor "
                                                    "peaks, uncalibrated")
        else:
            report.fits[p.id] = ProfileFit(p.id, None, "none", 0, 0, shipped_d,
                                           why_none="it publishes no throughput, so nothing projects on it")
    return report


def _replace(c: ReferenceCheck, **kw) -> ReferenceCheck:
    import dataclasses
    return dataclasses.replace(c, **kw)


def _sig(v: float) -> float:
    return float(f"{v:.{SIGNIFICANT}g}")


def shipped_figures(report: CheckReport) -> dict[str, dict[str, Derate | ErrorBand | None]]:
    """The `derate` and `error_band` each profile's YAML carries: what the data give, rounded to
    SIGNIFICANT digits, with a source that states the model. None: the profile carries none."""
    out: dict[str, dict[str, Derate | ErrorBand | None]] = {}
    for pid, f in report.fits.items():
        derate = band = None
        if f.derate is not None:
            derate = derate_of(_sig(f.derate), (
                f"least-squares fit on its {f.references} published reference{'s' if f.references != 1 else ''} "
                "(references below): one derate for both roofs (compute and memory; per-node and per-call "
                "overheads are not derated), minimising the sum of squared log(projected / published) through the "
                f"projection; regenerated by {BENCH} from the references and their counted work, checked by {TEST}"))
        if f.band:
            each = ("each projected by the fit made without it (on its profile's other references; uncalibrated "
                    "where its profile has no other)" if f.basis == "own" else
                    "each projected uncalibrated, as this profile's are (it has no published reference of its own, "
                    "so no derate)")
            band = ErrorBand(low=_sig(f.band[0]), high=_sig(f.band[1]),
                             source=f"10th-90th percentile of published / projected latency over the "
                                    f"{f.band_references} projectable published references of {f.band_profiles} "
                                    f"profiles, {each}; {BENCH}, checked by {TEST}")
        out[pid] = {"derate": derate, "error_band": band}
    return out


def differences(profiles: list[Profile], figures: Mapping[str, Mapping[str, Derate | ErrorBand | None]]) -> list[str]:
    """Where a profile's `derate` or `error_band` is not what `figures` (`shipped_figures`) say: one line
    each, naming the profile, the field, the value and the value the data give."""
    out: list[str] = []
    close = lambda a, b: math.isclose(a, b, rel_tol=FIGURE_REL_TOLERANCE)  # noqa: E731
    for p in profiles:
        want = figures.get(p.id)
        if want is None:
            out.append(f"{p.id}: no figures computed for it")
            continue
        d, band = want["derate"], want["error_band"]
        if d is None:
            if p.derate != Derate():
                out.append(f"{p.id}: derate: ships compute {p.derate.compute.value:g}, memory "
                           f"{p.derate.memory.value:g}, the references give none")
        else:
            assert isinstance(d, Derate)
            for name in ("compute", "memory"):
                f, g = getattr(p.derate, name), getattr(d, name)
                if not close(f.value, g.value):
                    out.append(f"{p.id}: derate.{name}: ships {f.value:g}, the references give {g.value:g}")
                elif f.source != g.source:
                    out.append(f"{p.id}: derate.{name}.source does not state how it was computed")
            if p.derate.compute_by or p.derate.memory_by:
                out.append(f"{p.id}: derate: compute_by/memory_by are not what the references fit")
        if band is None:
            if p.error_band is not None:
                out.append(f"{p.id}: error_band: ships [{p.error_band.low:g}, {p.error_band.high:g}], "
                           "the references give none")
        else:
            assert isinstance(band, ErrorBand)
            if p.error_band is None:
                out.append(f"{p.id}: error_band: ships none, the references give [{band.low:g}, {band.high:g}]")
            elif not (close(p.error_band.low, band.low) and close(p.error_band.high, band.high)):
                out.append(f"{p.id}: error_band: ships [{p.error_band.low:g}, {p.error_band.high:g}], the references "
                           f"give [{band.low:g}, {band.high:g}]")
            elif p.error_band.source != band.source:
                out.append(f"{p.id}: error_band.source does not state how it was computed")
    return out
