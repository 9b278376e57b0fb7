"""The parent side of a generative group (`task: generate`): preparing the model, each precision's own
worker (memory, quality against FP32), one timing worker per round (`effbench.workloads.worker`), and the
records: a `generation` section with paired speedups vs FP32 and modeled energy per token.

`effbench.execution.run.SuiteRun` hands a group here when its model generates; nothing else changes there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from effbench.execution.generation_load import offline_batch_sizes
from effbench.execution.pairing import FP32, group_seed, unpaired_comparison
from effbench.execution.progress import Progress
from effbench.execution.workers import BUILD_TIMEOUT_S, Outcome, run_in_worker
from effbench.measure.generation import bandwidth_utilization
from effbench.measure.stats import SCOPE_ONE_MOMENT, with_floor, within_one_round
from effbench.models.llm import decoder_kv_figures as _kv_figures
from effbench.models.llm import decoder_macs as _macs
from effbench.results.record import (
    Cell,
    Comparison,
    Energy,
    Generation,
    Latency,
    Memory,
    ModelStats,
    Offline,
    Record,
    Server,
    VariantInfo,
)
from effbench.scenarios.plan import OFFLINE, SERVER, SINGLE_STREAM, load_plan
from effbench.variants.generative import generative_precisions
from effbench.workloads.generate import generative_runtimes
from effbench.workloads.worker import PROMPT_SOURCE

# Paired per cycle: a time's speedup is FP32 / variant, a rate's variant / FP32 (above 1 = faster)
PAIRED_FIGURES = {"ttft_ms": "time", "tpot_ms": "time", "e2e_ms": "time", "decode_tokens_per_s": "rate",
                  "prefill_tokens_per_s": "rate"}
# offline through LoadGen: output tokens/s per run, paired per cycle (every precision runs once per cycle)
LOAD_PAIRED = {"output_tokens_per_s": "rate"}
LOAD_ENERGY = ("not given for a generative offline or server cell: its times include queueing and LoadGen's "
               "own runs (see the single-stream cells)")


@dataclass(frozen=True)
class LlmArtifact:
    """A prepared generative model: the `LlmModel` as JSON (its HF folder, shape, what FP32 is)."""

    model: dict[str, Any]

    @property
    def shape(self) -> dict[str, Any]:
        return self.model["shape"]


def runner_options_of(cell: Cell) -> dict[str, Any]:
    """The session options a generative runtime takes from the runner's typed options."""
    from effbench.runners import runner_options
    opts = runner_options(cell.runner, cell.runner_options)
    return opts.session_options() if hasattr(opts, "session_options") else {}


class GenerationGroups:
    """A run's generative groups: one model on one runner, every precision and prompt length."""

    def __init__(self, run: Any) -> None:
        """`run`: the `execution.run.SuiteRun` it serves (its suite, options, store, logs, profiles)."""
        self.run = run
        self.profiles: dict[tuple, Outcome] = {}     # (model, precision label, runner label) -> own worker's answer

    def prepare(self, index: int, progress: Progress) -> LlmArtifact | Outcome:
        run = self.run
        spec = run.suite.spec.models[index]
        progress.start(f"preparing {spec.id}")
        out = run_in_worker("effbench.workloads.worker:prepare_llm",
                            {"source": {spec.source.kind: spec.source.value}, "model_id": spec.id,
                             "base_dir": str(run.suite.base_dir), "cache_dir": str(run.opts.cache_dir)},
                            timeout_s=BUILD_TIMEOUT_S, log_path=run.logs / f"prepare-{spec.id}.log")
        if out.kind == "user_error":
            e = out.value      # about the model's own files: say which suite entry named them
            if e.field in (None, "hf", "gguf", "builtin", "source", "tokenizer"):
                e.field = f"models[{index}].source.{spec.source.kind}"
            raise e
        return LlmArtifact(out.value) if out.kind == "ok" else out

    # -- one round of one group
    def do_group(self, rnd: int, cells: list[Cell], progress: Progress,
                 paired: dict[str, dict] | None = None) -> list[Record]:
        """One round of one generative group; `paired`: A/B mode's paired pass per cell id (`pair_pass`),
        kept as the record's `paired_ratios`."""
        return self._do_group(rnd, cells, progress, paired or {})

    def pair_pass(self, rnd: int, cell: Cell, other: Any, other_cell: Cell, progress: Progress) -> dict | None:
        """A/B mode: `other`'s (the baseline run's) session of the cell and this run's, sent the same requests
        in alternating order in one worker (`workloads.worker.measure_generation_pair`). None when either
        side's model could not be prepared or the pass fails (the gate then uses the round medians)."""
        sides = []
        for r, c in ((other, other_cell), (self.run, cell)):
            art = r.artifacts[c.model]
            if isinstance(art, Outcome):
                return None
            sides.append({"runtime": c.runner, "threads": c.threads or 1, "options": runner_options_of(c),
                          "model": art.model, "precision": c.variant})
        run = self.run
        spec = run.suite.model(cell.model).requests
        progress.start(f"{cell.cell_id} paired A/B requests (round {rnd + 1}/{run.rounds})")
        out = run_in_worker("effbench.workloads.worker:measure_generation_pair",
                            {"sides": sides, "prompt_tokens": cell.prompt_tokens, "new_tokens": spec.new_tokens,
                             "pairs": spec.requests, "cache_dir": str(run.opts.cache_dir),
                             "load_reversed": rnd % 2 == 1},
                            timeout_s=max(run.timeout_s, BUILD_TIMEOUT_S) * 2,
                            log_path=run.logs / (cell.cell_id.replace("/", "_") + "-ab.log"),
                            memory_limit_mb=run.memory_limit_mb)
        if out.kind != "ok":
            progress.warn(f"warning: {cell.cell_id} round {rnd + 1}: paired A/B pass {out.kind}: {out.reason}; the "
                          "gate uses the two workers' round medians for this cell")
            return None
        return out.value

    def _do_group(self, rnd: int, cells: list[Cell], progress: Progress, paired: dict[str, dict]) -> list[Record]:
        run = self.run
        first = cells[0]
        if not run.suite.model(first.model).generates:     # a classifier on a runner that serves LLMs only
            why = f"the {first.runner} runner serves generative models only (task: generate)"
            return [run.finish(run.record(rnd, c, status="unsupported", reason=why), progress) for c in cells]
        art = run.artifacts[first.model]
        if isinstance(art, Outcome):
            return [run.finish(run.record(rnd, c, reason=f"model could not be prepared: {art.reason}"), progress)
                    for c in cells]
        records, ready = [], []
        for cell in cells:
            why = self._cannot(cell)
            if why:
                records.append(run.finish(run.record(rnd, cell, status="unsupported", reason=why), progress))
            elif cell.cell_id in run.broken:
                records.append(run.finish(run.record(
                    rnd, cell, reason=f"{run.broken[cell.cell_id]} (in an earlier round of this run; not run again)"),
                    progress))
            else:
                ready.append(cell)
        if not ready:
            return records
        spec = run.suite.model(first.model)
        prompts = sorted({c.prompt_tokens for c in ready})
        labels = list(dict.fromkeys([FP32] + [c.variant for c in ready]))   # FP32: every pairing's reference
        for label in labels:                        # own workers once per run, FP32's first (it writes the reference)
            self._profile(first, label, art, max(prompts), progress)
        members = [{"key": f"{label}/p{p}", "label": label, "precision": label, "prompt_tokens": p}
                   for label in labels for p in prompts]
        if first.scenario != SINGLE_STREAM:
            return records + self._do_load(rnd, first, ready, art, members, len(labels), progress)
        what = f"{first.model}/*/{first.runner_label}/{first.scenario}"
        progress.start(f"{what}: {len(members)} generative cells, requests interleaved"
                       + (f" (round {rnd + 1}/{run.rounds})" if run.rounds > 1 else ""))
        g = spec.requests
        out = run_in_worker("effbench.workloads.worker:measure_generation",
                            {"runtime": first.runner, "threads": first.threads or 1,
                             "options": runner_options_of(first), "model": art.model, "members": members,
                             "new_tokens": g.new_tokens, "requests": g.requests, "cache_dir": str(run.opts.cache_dir),
                             "seed": group_seed(run.run_id, rnd, what), "load_reversed": rnd % 2 == 1},
                            timeout_s=max(run.timeout_s, BUILD_TIMEOUT_S) * len(labels),
                            log_path=run.logs / f"{first.model}_{first.runner_label}_generate.log",
                            memory_limit_mb=run.memory_limit_mb)
        if out.kind == "user_error":
            raise out.value
        if out.kind != "ok":
            for c in ready:
                run.broken[c.cell_id] = out.reason or out.kind
            return records + [run.finish(run.record(rnd, c, status="unsupported" if out.kind == "unsupported"
                                                    else "failed", reason=out.reason), progress) for c in ready]
        return records + [run.finish(_with_paired(self.record(rnd, c, art, out.value), paired.get(c.cell_id)),
                                     progress) for c in ready]

    def _cannot(self, cell: Cell) -> str | None:
        if cell.scenario not in (SINGLE_STREAM, OFFLINE, SERVER):
            return (f"the {cell.scenario} scenario is not defined for generative models (MLPerf's LLM benchmarks "
                    f"run {SINGLE_STREAM}, {OFFLINE} and {SERVER})")
        runtimes = generative_runtimes()
        if cell.runner not in runtimes:
            return (f"the {cell.runner} runner runs classifier graphs; a decoder LLM runs on "
                    f"{', '.join(runtimes)}")
        if cell.compile or cell.device != "cpu":
            return ("generative cells run the runtime's own decode loop on the CPU here: "
                    + ("torch.compile is not applied to it" if cell.compile else f"not on {cell.device}"))
        if cell.variant not in generative_precisions():
            return (f"'{cell.variant}' is not a precision of generative models: each runtime maps "
                    f"{', '.join(generative_precisions())} to its own kernels")
        return None

    def _profile(self, first: Cell, label: str, art: LlmArtifact, prompt_tokens: int, progress: Progress) -> Outcome:
        run = self.run
        key = (first.model, label, first.runner_label)
        if key not in self.profiles:
            spec = run.suite.model(first.model)
            progress.start(f"memory and quality {first.model}/{label}/{first.runner_label}")
            ref_dir = run.logs / "generation-reference" / f"{first.model}_{first.runner_label}"
            if label == FP32:
                for f in ("fp32-logits.npy", "fp32-continuation.json"):
                    (ref_dir / f).unlink(missing_ok=True)     # never score against another run's reference
            self.profiles[key] = run_in_worker(
                "effbench.workloads.worker:generation_profile",
                {"runtime": first.runner, "threads": first.threads or 1, "options": runner_options_of(first),
                 "model": art.model, "precision": label, "prompt_tokens": prompt_tokens,
                 "new_tokens": spec.requests.new_tokens, "quality_positions": spec.requests.quality_positions,
                 "reference_dir": str(ref_dir), "cache_dir": str(run.opts.cache_dir)},
                timeout_s=BUILD_TIMEOUT_S, log_path=run.logs / f"profile-{first.model}-{label}-{first.runner_label}.log",
                memory_limit_mb=run.memory_limit_mb)
        return self.profiles[key]

    # -- the record
    def record(self, rnd: int, cell: Cell, art: LlmArtifact, res: dict) -> Record:
        run = self.run
        m = res["members"][f"{cell.variant}/p{cell.prompt_tokens}"]
        if m["status"] != "ok":
            return run.record(rnd, cell, status=m["status"], reason=m["reason"])
        fig = m["figures"]
        shape, kernel = art.shape, m["kernel"]
        new, prompt = fig["new_tokens"], fig["prompt_tokens"]
        kv_analytic, per_token = _kv_figures(shape, kernel, prompt, new, m["decode_weight_bytes"])
        bw = res["bandwidth"]
        tps = fig["decode_tokens_per_s"]
        fp32 = res["members"].get(f"{FP32}/p{cell.prompt_tokens}")
        speedups = {} if cell.variant == FP32 else {k: self._paired(cell, k, m, fp32).to_json() for k in PAIRED_FIGURES}
        memory, quality = self._own_worker(cell)
        gen = Generation(
            prompt_tokens=prompt, new_tokens=new, requests=fig["requests"],
            **{k: fig[k] for k in ("ttft_ms", "tpot_ms", "e2e_ms", "prefill_tokens_per_s", "decode_tokens_per_s")},
            itl_ms=fig["itl_ms"], ci_scope=SCOPE_ONE_MOMENT,
            round_values={k: [fig[k]] for k in ("ttft_ms", "tpot_ms", "e2e_ms", "prefill_tokens_per_s",
                                                "decode_tokens_per_s")},
            kv_cache_bytes_analytic=kv_analytic, kv_cache_bytes_measured=m["kv_cache_bytes_measured"],
            kv_measured=m["kv_measured"], kv_context_tokens=prompt + new, weight_bytes=m["weight_bytes"],
            decode_bytes_per_token=per_token, bandwidth_bytes_per_s=bw["bytes_per_s"], bandwidth_method=bw["method"],
            bandwidth_utilization=bandwidth_utilization(tps, bw["bytes_per_s"], per_token) if tps else None,
            kernel=kernel, speedup_vs_fp32=speedups, quality=quality, threads=cell.threads,
            reference=art.model.get("reference"), prompt=PROMPT_SOURCE, extra={"thread_state": res["threads"]},
            **_work(shape, prompt, new))
        gen = self._energy(cell, gen, art)
        from effbench.measure.latency import LatencyStats
        e2e = m["per_request"]["e2e_ms"]
        lat = LatencyStats.from_samples_ms(e2e).to_json()
        record = run.record(
            rnd, cell, status="ok", reason=None,
            **_variant_sections(cell, m, shape),
            latency_ms=Latency.from_json({**lat, "ci_scope": SCOPE_ONE_MOMENT,
                                          "extra": {"what": "end-to-end request latency (prompt in, last token out)"}}),
            samples_ms=tuple(e2e),
            comparison=(None if cell.variant == FP32 else Comparison.from_json(speedups["e2e_ms"])),
            memory=Memory.from_json(memory) if memory else Memory(reason=quality.get("reason") if quality else None),
            energy=Energy(source=gen.energy_source, reason=gen.energy_reason,
                          j_per_inference=_request_j(gen),
                          extra={"unit": "one request (prefill + every output token)"}),
            generation=gen)
        if run.profiles:        # TTFT and TPOT projected onto the suite's device profiles (modelled)
            from effbench.devices.project import project_generation
            record = record.replace(projections=project_generation(record, run.profiles))
        return record

    def _own_worker(self, cell: Cell) -> tuple[dict | None, dict | None]:
        """(memory, quality) from the precision's own worker (once per run), or the reason it gave none."""
        prof = self.profiles.get((cell.model, cell.variant, cell.runner_label))
        value = prof.value if prof is not None and prof.kind == "ok" else None
        quality = (value or {}).get("quality")
        if prof is not None and prof.kind != "ok":
            quality = {"reason": f"its own worker {prof.kind}: {prof.reason}"}
        return (value or {}).get("memory"), quality

    # -- offline and server: MLPerf LoadGen with token latencies (effbench.execution.generation_load)
    def _do_load(self, rnd: int, first: Cell, ready: list[Cell], art: LlmArtifact, members: list[dict],
                 n_labels: int, progress: Progress) -> list[Record]:
        run = self.run
        spec = run.suite.model(first.model)
        plan = load_plan(run.suite.scenario(first.scenario), run.budget, run.timeout_s, run.opts.quick)
        what = f"{first.model}/*/{first.runner_label}/{first.scenario}"
        folder = f"{first.model}_{first.runner_label}_{first.scenario}"
        # offline sweeps batch sizes: each size's runs and warm-up
        sweep = len(offline_batch_sizes(plan.options)) if first.scenario == OFFLINE else 1
        progress.start(f"{what}: {len(members)} generative cells through LoadGen"
                       + (f" (round {rnd + 1}/{run.rounds})" if run.rounds > 1 else ""))
        out = run_in_worker("effbench.execution.generation_load:serve_generation",
                            {"runtime": first.runner, "threads": first.threads or 1,
                             "options": runner_options_of(first), "model": art.model, "members": members,
                             "new_tokens": spec.requests.new_tokens, "scenario": first.scenario,
                             "scenario_options": plan.options, "cache_dir": str(run.opts.cache_dir),
                             "seed": group_seed(run.run_id, rnd, what),
                             "log_dir": str(run.opts.out_dir / "loadgen" / folder / f"round-{rnd}"),
                             "load_reversed": rnd % 2 == 1},
                            timeout_s=BUILD_TIMEOUT_S * n_labels + plan.timeout_s_per_member * len(members) * sweep,
                            log_path=run.logs / f"{folder}.log", memory_limit_mb=run.memory_limit_mb)
        if out.kind == "user_error":
            raise out.value
        if out.kind != "ok":
            for c in ready:
                run.broken[c.cell_id] = out.reason or out.kind
            return [run.finish(run.record(rnd, c, status="unsupported" if out.kind == "unsupported" else "failed",
                                          reason=out.reason), progress) for c in ready]
        return [run.finish(self.load_record(rnd, c, art, out.value), progress) for c in ready]

    def load_record(self, rnd: int, cell: Cell, art: LlmArtifact, res: dict) -> Record:
        """A generative offline or server cell's record: LoadGen's figures in the `offline` / `server`
        section (tokens/s; max QPS with TTFT and TPOT at the percentile, every rate's verdict), the model's
        and kernel's in `generation`, how the runtime served concurrent requests in `generation.extra`."""
        run = self.run
        key = f"{cell.variant}/p{cell.prompt_tokens}"
        m = res["members"][key]
        if m["status"] != "ok":
            return run.record(rnd, cell, status=m["status"], reason=m["reason"])
        shape, kernel = art.shape, m["kernel"]
        new, prompt = run.suite.model(cell.model).requests.new_tokens, cell.prompt_tokens
        kv_analytic, per_token = _kv_figures(shape, kernel, prompt, new, m["decode_weight_bytes"])
        memory, quality = self._own_worker(cell)
        comparison, speedups = None, {}
        if cell.variant != FP32 and cell.scenario == OFFLINE:
            fp32 = res["members"].get(f"{FP32}/p{cell.prompt_tokens}")
            comparison = self._paired(cell, "output_tokens_per_s", {"per_request": m["per_cycle"]},
                                      fp32 and {**fp32, "per_request": fp32.get("per_cycle")})
            speedups = {"output_tokens_per_s": comparison.to_json()}
        elif cell.variant != FP32:
            comparison = unpaired_comparison(cell, "server: each precision's peak rate comes from its own search, so "
                                                   "there is no paired speedup; compare max_qps and its CI over rounds")
        gen = Generation(
            prompt_tokens=prompt, new_tokens=new, requests=m["requests"], kv_cache_bytes_analytic=kv_analytic,
            kv_cache_bytes_measured=m["kv_cache_bytes_measured"], kv_measured=m["kv_measured"],
            kv_context_tokens=prompt + new, weight_bytes=m["weight_bytes"], decode_bytes_per_token=per_token,
            kernel=kernel, speedup_vs_fp32=speedups, quality=quality, threads=cell.threads,
            reference=art.model.get("reference"), prompt=PROMPT_SOURCE, energy_reason=LOAD_ENERGY,
            **_work(shape, prompt, new),
            extra={"scenario": cell.scenario, "serving": m["serving"], "concurrency": m["concurrency"],
                   "service_ms": m["service_ms"], "service_ttft_ms": m.get("service_ttft_ms"),
                   "service_tpot_ms": m.get("service_tpot_ms"),
                   "service_note": "the session's own stamps of the requests LoadGen issued (queueing excluded); "
                                   "LoadGen's TTFT and TPOT, queueing included, are in the scenario's section"})
        lat = m.get("latency_ms") or m.get("service_latency_ms")
        sections: dict[str, Any] = {}
        if cell.scenario == OFFLINE:
            sections["offline"] = Offline.from_json(m["offline"])
            sections["throughput_ips"] = m["offline"].get("samples_per_s")
        else:
            sections["server"] = Server.from_json(m["server"])
        return run.record(
            rnd, cell, status="ok", reason=None, **_variant_sections(cell, m, shape),
            latency_ms=(Latency.from_json({**lat, "ci_scope": SCOPE_ONE_MOMENT})
                        if lat and lat.get("median") is not None else None),
            comparison=comparison, memory=Memory.from_json(memory) if memory else None,
            energy=Energy(reason=LOAD_ENERGY), generation=gen, **sections)

    def _paired(self, cell: Cell, figure: str, member: dict, fp32: dict | None) -> Comparison:
        """This round's paired speedup of one figure: per ABBA cycle, FP32's mean over its requests against
        this precision's in the same cycle; the median over cycles with its one-worker CI (widened to the
        floor between runs), merged over rounds like every speedup (`results.merge`)."""
        if fp32 is None or fp32.get("status") != "ok":
            why = f"the FP32 twin is {fp32['status']}: {fp32.get('reason')}" if fp32 else "no FP32 twin"
            return unpaired_comparison(cell, why)
        kind = {**PAIRED_FIGURES, **LOAD_PAIRED}[figure]
        mine, ref = _per_cycle(member["per_request"], figure), _per_cycle(fp32["per_request"], figure)
        ratios = [(ref[c] / mine[c] if kind == "time" else mine[c] / ref[c])
                  for c in sorted(set(mine) & set(ref)) if mine[c] and ref[c]]
        est = within_one_round(ratios)
        if est is None:
            return unpaired_comparison(cell, "no cycle timed both sides")
        est = with_floor(est)
        cell_fp32 = cell.replace(variant=FP32, precision=FP32, method=None)
        return Comparison(baseline=cell_fp32.cell_id, speedup=est.value, ci=(est.lo, est.hi), ci_level=est.level,
                          ci_scope=est.scope, ci_method=est.method, rounds=1, method="paired", cycles=est.n,
                          note=f"{figure}: " + ("FP32 / this" if kind == "time" else "this / FP32"))

    def _energy(self, cell: Cell, gen: Generation, art: LlmArtifact) -> Generation:
        """Energy per output and per prompt token, modeled from the local profile (no counter is read for
        generative cells yet): prefill over TTFT, each decode step over TPOT, MACs from the shape."""
        from effbench.measure.energy import detect_meter, modeled_energy
        meter = detect_meter(gpu=False)
        why = ("energy counters are not read for generative cells yet" if meter.available
               else f"no energy counter here: {meter.reason}")
        local = next((p for p in self.run.profiles if p.id == "local"), None)
        if local is None:
            return gen.replace(energy_reason=f"{why}; not modeled either: no local profile in devices:")
        if not gen.ttft_ms or not gen.tpot_ms:
            return gen.replace(energy_reason=f"{why}; no TTFT/TPOT to model it over")
        shape = art.shape
        model = local.energy()
        prompt, new = gen.prompt_tokens, gen.new_tokens
        prefill = modeled_energy(macs=_macs(shape, prompt, 0), bytes_moved=gen.weight_bytes or 0,
                                 precision=cell.precision, seconds_per_inference=gen.ttft_ms / 1e3, model=model,
                                 profile_id="local")
        decode = modeled_energy(macs=_macs(shape, 1, prompt + new // 2), bytes_moved=gen.decode_bytes_per_token or 0,
                                precision=cell.precision, seconds_per_inference=gen.tpot_ms / 1e3, model=model,
                                profile_id="local")
        if prefill.get("j_per_inference") is None or decode.get("j_per_inference") is None:
            # the arithmetic and DRAM traffic alone, kept beside the reason (never shown as the whole)
            dynamic = {k: v for k, v in (("dynamic_j_per_output_token", decode.get("dynamic_j_per_inference")),
                                         ("dynamic_j_per_prompt_token", (prefill.get("dynamic_j_per_inference") or 0)
                                          / prompt or None)) if v is not None}
            return gen.replace(energy_reason=f"{why}; {decode.get('reason') or prefill.get('reason')}",
                               extra={**gen.extra, **dynamic})
        return gen.replace(j_per_output_token=decode["j_per_inference"], j_per_prompt_token=prefill["j_per_inference"] / prompt,
                           energy_source=decode["source"], energy_reason=why)


def _with_paired(record: Record, paired: dict | None) -> Record:
    """A/B mode: the paired pass's ratio (candidate / baseline request latency) on the candidate's record."""
    if not paired or not paired.get("ratio") or not record.ok:
        return record
    return record.replace(paired_ratios=(paired["ratio"],))


def _work(shape: dict, prompt: int, new: int) -> dict[str, int]:
    """The generation section's work counts, from the model's shape (what the device projections use)."""
    return {"prefill_macs": _macs(shape, prompt, 0), "decode_macs_per_token": _macs(shape, 1, prompt + new // 2),
            "layers": int(shape["layers"])}


def _variant_sections(cell: Cell, m: dict, shape: dict) -> dict[str, Any]:
    """The record's variant and model_stats sections from what the session ran."""
    kernel = m["kernel"]
    return {"variant": VariantInfo(label=cell.variant, precision=cell.precision, method=kernel.get("quantization"),
                                   build=kernel, runtime=m["info"], weight_bytes=m["weight_bytes"],
                                   params=_params(shape)),
            "model_stats": ModelStats(params=_params(shape), weight_bytes=m["weight_bytes"],
                                      counted_on="the model's shape (config.json)")}


def _per_cycle(per_request: dict, figure: str) -> dict[int, float]:
    sums: dict[int, list[float]] = {}
    for c, v in zip(per_request["cycle"], per_request[figure]):
        if v is not None:
            sums.setdefault(c, []).append(v)
    return {c: sum(v) / len(v) for c, v in sums.items()}


def _params(shape: dict) -> int:
    from effbench.models.llm import LlmShape
    return LlmShape(**shape).params()


def _request_j(gen: Generation) -> float | None:
    if gen.j_per_prompt_token is None or gen.j_per_output_token is None:
        return None
    return gen.j_per_prompt_token * gen.prompt_tokens + gen.j_per_output_token * (gen.new_tokens - 1)
