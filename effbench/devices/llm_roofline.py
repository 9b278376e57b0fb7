"""A decoder LLM request's roofline on a device profile: the arithmetic `project.project_generation` ships
and `llm_references` checks against published tokens/s (one module both import, so neither imports the
other)."""
from __future__ import annotations

from dataclasses import dataclass

from effbench.devices.profile import OPS_PER_MAC, Profile

# ops of one Llama decoder layer as a runtime dispatches them (2 RMSNorms, Q/K/V/O projections, 2 rotary
# embeddings, QK^T, softmax, AV, gate, up, activation, multiply, down, 2 residual adds: 17), plus the
# embedding lookup, final norm and LM head per forward: what the per-op overhead is charged on (modelled)
DECODER_OPS_PER_LAYER = 17
DECODER_OPS_PER_FORWARD = 3


@dataclass(frozen=True)
class GenerationTimes:
    """One forward's roofline terms (seconds): prefill's compute and memory, one decode step's compute and
    memory, and the per-forward overhead; TTFT and TPOT as `project_generation` states them."""

    prefill_compute_s: float
    prefill_memory_s: float
    decode_compute_s: float
    decode_memory_s: float
    overhead_s: float
    precision: str

    @property
    def ttft_s(self) -> float:
        return max(self.prefill_compute_s, self.prefill_memory_s) + self.overhead_s

    @property
    def tpot_s(self) -> float:
        return max(self.decode_compute_s, self.decode_memory_s) + self.overhead_s


def generation_times(profile: Profile, precision: str, runner: str | None, *, layers: int, prefill_macs: float,
                     weight_bytes: float, decode_macs_per_token: float, decode_bytes_per_token: float,
                     compute: str | None = None) -> GenerationTimes | tuple[str, str]:
    """GENERATION_MODEL's arithmetic for one generative request's work on `profile`: what
    `project_generation` ships and what `effbench.devices.llm_references` checks against published
    tokens/s. (status, reason) where it cannot project. `compute`: the kernel's arithmetic, for the reason."""
    peak = profile.peak_ops_per_s(precision, runner)
    if precision not in profile.peak_ops and precision not in profile.peak_ops_by_runner.get(runner or "", {}):
        return "unsupported", (f"{profile.id} declares no {precision} peak (this kernel's arithmetic: "
                               f"{compute or precision})")
    if not peak:
        return "no-data", f"{profile.id} runs {precision} but publishes no throughput for it"
    rate = peak * profile.compute_derate(precision, runner)
    bandwidth = profile.memory.bandwidth_bytes_per_s.value * profile.memory_derate(runner)
    if bandwidth <= 0:
        return "no-data", f"{profile.id} declares zero memory bandwidth"
    overhead_s = (profile.call_overhead_s(runner)
                  + (DECODER_OPS_PER_LAYER * layers + DECODER_OPS_PER_FORWARD) * profile.per_op_overhead_s.value)
    return GenerationTimes(prefill_compute_s=prefill_macs * OPS_PER_MAC / rate, prefill_memory_s=weight_bytes / bandwidth,
                           decode_compute_s=decode_macs_per_token * OPS_PER_MAC / rate,
                           decode_memory_s=decode_bytes_per_token / bandwidth, overhead_s=overhead_s,
                           precision=precision)
