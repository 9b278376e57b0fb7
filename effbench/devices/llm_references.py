"""Published LLM tokens/s against the generative projection (`effbench profiles check`, LLM references).

Each profile's `llm_references` (a decoder LLM run on the real device: llama.cpp's llama-bench `tgN` /
`ppN`, or another tool's decode rate, with its source and quote) is projected with the arithmetic
`project_generation` ships (`effbench.devices.llm_roofline.generation_times`): decode tokens/s = 1 / TPOT,
TPOT = max(bytes one decode step reads / bandwidth, its MACs x 2 / peak) + one forward's overhead; prefill
tokens/s = N / TTFT, TTFT = max(the prompt's MACs x 2 / peak, weight bytes / bandwidth) + one forward's
overhead. The work comes from the reference's shape, as a record's generation section counts it
(`effbench.execution.generation`): weights at `bits_per_weight` over every parameter (one decode step reads
an untied embedding's one row), the KV cache at `kv_bytes_per_element` over the decode's mean context.

Each reference is projected uncalibrated (derate 1) and as shipped (the profile's derate, fitted on CNN
references): x = published / projected tokens/s (= projected / published time, the CNN check's x),
error % = (projected - published) / published tokens/s. Nothing is fitted on these references: the
generative projection's error band stays the CNN one, and `project_generation` says how its profile's
LLM references score (`llm_reference_note`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

from effbench.devices.profile import Derate, LlmReference, Profile


def reference_work(ref: LlmReference) -> dict[str, float]:
    """The generation section's work counts for the run the reference measured (see the module doc)."""
    from effbench.models.llm import decoder_kv_figures as _kv_figures
    from effbench.models.llm import decoder_macs as _macs
    shape = ref.llm_shape()
    prompt, new = ref.context
    bits = ref.bits_per_weight / 8
    weight_bytes = shape.params() * bits
    decode_weight_bytes = shape.decode_params_read() * bits
    kv_total, per_token = _kv_figures(shape.to_json(), {"kv_bytes_per_element": ref.kv_bytes_per_element}, prompt,
                                      new, round(decode_weight_bytes))
    return {"layers": float(shape.layers), "prefill_macs": float(_macs(shape.to_json(), prompt, 0)),
            "decode_macs_per_token": float(_macs(shape.to_json(), 1, prompt + new // 2)),
            "weight_bytes": weight_bytes, "decode_weight_bytes": decode_weight_bytes,
            "decode_bytes_per_token": float(per_token), "kv_cache_bytes": float(kv_total),
            "prompt_tokens": float(prompt), "new_tokens": float(new)}


def projected_tokens_per_s(ref: LlmReference, profile: Profile) -> tuple[float | None, str | None, str | None]:
    """(tokens/s, the roof that bounds it, why none) of `ref`'s test projected on `profile` as it is."""
    from effbench.devices.llm_roofline import generation_times
    w = reference_work(ref)
    times = generation_times(profile, ref.compute_precision, ref.runner, layers=int(w["layers"]),
                             prefill_macs=w["prefill_macs"], weight_bytes=w["weight_bytes"],
                             decode_macs_per_token=w["decode_macs_per_token"],
                             decode_bytes_per_token=w["decode_bytes_per_token"])
    if isinstance(times, tuple):
        return None, None, times[1]
    if ref.phase == "prefill":
        bound = "compute" if times.prefill_compute_s >= times.prefill_memory_s else "memory"
        return w["prompt_tokens"] / times.ttft_s, bound, None
    bound = "memory" if times.decode_memory_s >= times.decode_compute_s else "compute"
    return 1.0 / times.tpot_s, bound, None


def _fold(x: float) -> float:
    return max(x, 1 / x)


@dataclass(frozen=True)
class LlmCheck:
    profile: str
    kind: str
    ref: LlmReference
    projected_tps: float | None          # uncalibrated (derate 1)
    shipped_tps: float | None            # the profile as shipped (its CNN-fitted derate)
    bound: str | None = None             # the roof that bounds the uncalibrated projection
    kv_share: float | None = None        # decode: the KV cache's share of the bytes one step reads
    reason: str | None = None

    @property
    def published_tps(self) -> float:
        return self.ref.tokens_per_s

    @property
    def factor(self) -> float | None:
        """published / projected tokens/s (= projected / published time): above 1 projects too slow."""
        return self.published_tps / self.projected_tps if self.projected_tps else None

    @property
    def shipped_factor(self) -> float | None:
        return self.published_tps / self.shipped_tps if self.shipped_tps else None

    @property
    def error_pct(self) -> float | None:
        return (self.projected_tps - self.published_tps) / self.published_tps * 100 if self.projected_tps else None

    @property
    def shipped_error_pct(self) -> float | None:
        return (self.shipped_tps - self.published_tps) / self.published_tps * 100 if self.shipped_tps else None


def check_one(ref: LlmReference, shipped: Profile) -> LlmCheck:
    bare = shipped.with_derate(Derate())
    raw, bound, why = projected_tokens_per_s(ref, bare)
    as_shipped, _, why2 = projected_tokens_per_s(ref, shipped)
    share = None
    if ref.phase == "decode":
        w = reference_work(ref)
        share = (w["decode_bytes_per_token"] - round(w["decode_weight_bytes"])) / w["decode_bytes_per_token"]
    return LlmCheck(shipped.id, shipped.kind, ref, raw, as_shipped, bound, share, why or why2)


def _stats(xs: list[float]) -> tuple[float | None, float | None]:
    return (median(xs), max(xs)) if xs else (None, None)


@dataclass
class LlmCheckReport:
    checks: list[LlmCheck] = field(default_factory=list)

    def summary(self, phase: str | None = None) -> dict[str, float | int | None]:
        cs = [c for c in self.checks if phase is None or c.ref.phase == phase]
        raw = [c for c in cs if c.factor]
        shipped = [c for c in cs if c.shipped_factor]
        med, worst = _stats([_fold(c.factor) for c in raw])  # type: ignore[arg-type]
        smed, sworst = _stats([_fold(c.shipped_factor) for c in shipped])  # type: ignore[arg-type]
        return {"references": len(cs), "projected": len(raw), "profiles": len({c.profile for c in raw}),
                "median_factor": med, "max_factor": worst,
                "median_error_pct": median([c.error_pct for c in raw]) if raw else None,  # type: ignore[type-var]
                "shipped_median_factor": smed, "shipped_max_factor": sworst,
                "shipped_median_error_pct": (median([c.shipped_error_pct for c in shipped])  # type: ignore[type-var]
                                             if shipped else None)}

    def to_json(self) -> dict:
        return {"summary": {"all": self.summary(), "decode": self.summary("decode"),
                            "prefill": self.summary("prefill")},
                "checks": [{"profile": c.profile, "model": c.ref.model, "shape": c.ref.shape_name,
                            "quant": c.ref.quant, "bits_per_weight": c.ref.bits_per_weight, "backend": c.ref.backend,
                            "compute_precision": c.ref.compute_precision, "test": c.ref.test,
                            "context": list(c.ref.context), "published_tokens_per_s": c.published_tps,
                            "projected_tokens_per_s": c.projected_tps, "published_over_projected": c.factor,
                            "error_pct": c.error_pct, "bound": c.bound, "kv_share_of_decode_bytes": c.kv_share,
                            "shipped_tokens_per_s": c.shipped_tps, "shipped_published_over_projected": c.shipped_factor,
                            "shipped_error_pct": c.shipped_error_pct, "reason": c.reason, "source": c.ref.source}
                           for c in self.checks]}

    def text(self) -> str:
        def n(v: float | None, fmt: str = ".3g") -> str:
            return format(v, fmt) if v is not None else "-"

        lines = ["LLM references (tokens/s; x = published / projected, above 1 projects too slow; error % = "
                 "projected vs published; uncalibrated = derate 1, shipped = the profile's CNN-fitted derate):",
                 f"{'profile':<20} {'model':<14} {'quant':<7} {'test':<5} {'published':>9} {'uncalib.':>9} {'x':>6} "
                 f"{'error':>7} {'shipped':>9} {'x':>6} {'error':>7}  bound / backend"]
        for c in self.checks:
            lines.append(f"{c.profile:<20} {c.ref.model[:14]:<14} {c.ref.quant:<7} {c.ref.test:<5} "
                         f"{c.published_tps:>9.3g} {n(c.projected_tps):>9} {n(c.factor, '.2f'):>6} "
                         f"{n(c.error_pct, '+.0f'):>6}% {n(c.shipped_tps):>9} {n(c.shipped_factor, '.2f'):>6} "
                         f"{n(c.shipped_error_pct, '+.0f'):>6}%  {c.bound or '-'} / {c.ref.backend}"
                         + (f"  ({c.reason})" if c.reason else ""))
        for phase in ("decode", "prefill"):
            s = self.summary(phase)
            if s["median_factor"]:
                lines.append(f"{phase}: {s['projected']} of {s['references']} references on {s['profiles']} profiles: "
                             f"uncalibrated off by a median factor {s['median_factor']:.2f} (worst "
                             f"{s['max_factor']:.1f}), median error {s['median_error_pct']:+.0f}%; as shipped "
                             + (f"{s['shipped_median_factor']:.2f} (worst {s['shipped_max_factor']:.1f}), median error "
                                f"{s['shipped_median_error_pct']:+.0f}%" if s["shipped_median_factor"] else "-"))
        lines.append("sources, quotes and what each run assumed: llm_references in device_profiles/<profile>.yaml")
        return "\n".join(lines)


def check_llm_references(profiles: list[Profile]) -> LlmCheckReport:
    """Every LLM reference of `profiles`, projected uncalibrated and as shipped."""
    return LlmCheckReport([check_one(ref, p) for p in profiles for ref in p.llm_references])


def llm_reference_note(profile: Profile) -> str:
    """How `profile`'s decode LLM references score against the generative projection as shipped: what
    `project_generation`'s band_source says beside the CNN band (computed, never a stored figure)."""
    cs = [check_one(r, profile) for r in profile.llm_references if r.phase == "decode"]
    ok = [c for c in cs if c.shipped_factor]
    if not ok:
        return "not checked against LLM references (this profile has no published decode tokens/s)"
    errs = [c.shipped_error_pct for c in ok]
    facs = [_fold(c.shipped_factor) for c in ok]  # type: ignore[arg-type]
    return (f"checked on {len(ok)} published LLM decode reference{'s' if len(ok) != 1 else ''} of this profile "
            f"(llm_references, `effbench profiles check`): projected tokens/s off by a median factor "
            f"{median(facs):.2f} (worst {max(facs):.2f}), median error {median(errs):+.0f}%")  # type: ignore[type-var]
