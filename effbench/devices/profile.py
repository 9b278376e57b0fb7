"""The device-profile schema and its loading: shipped `device_profiles/<id>.yaml` or a user's YAML path.

Every number in a profile is a `Figure` (value, source, derived), so a reader can check each one.
Throughput is quoted in ops/s as vendors quote it: one multiply-accumulate (MAC) = 2 ops.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from effbench.config.yamlsource import LineMap, dotted, load_yaml
from effbench.errors import UserError, did_you_mean

KINDS = ("cpu", "gpu", "npu", "tpu", "mcu")
OPS_PER_MAC = 2  # vendors' TOPS/TFLOPS count a multiply-accumulate as two operations
LOCAL_ID = "local"

def _known_precision(name: str) -> str:
    from effbench.variants.specs import precision_names
    if name not in precision_names():
        raise ValueError(f"unknown precision '{name}'{did_you_mean(name, precision_names())}")
    return name


# A key naming a registered precision (effbench.variants.specs): checked when the profile is loaded.
Precision = Annotated[str, AfterValidator(_known_precision)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Figure(_Strict):
    """One number and where it comes from; `derived: true` when it was computed from other figures."""

    value: float
    source: str = Field(min_length=3)
    derived: bool = False

    @field_validator("value")
    @classmethod
    def _finite_nonnegative(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError("must be a finite number >= 0")
        return v


class Fact(_Strict):
    """A non-numeric datum that still needs a source (e.g. a process node)."""

    value: str
    source: str = Field(min_length=3)


class Peak(_Strict):
    """Peak throughput at one precision in ops/s. `dense: null` = runs it, but no figure is published."""

    dense: Figure | None
    sparse: Figure | None = None
    unpublished: str | None = None  # why dense is null

    @model_validator(mode="after")
    def _null_needs_reason(self) -> Peak:
        if self.dense is None and not self.unpublished:
            raise ValueError("dense is null: add `unpublished: <why no figure exists>`")
        return self


class Memory(_Strict):
    bandwidth_bytes_per_s: Figure
    capacity_bytes: Figure | None = None        # None: bounded only by the host (e.g. a USB accelerator)
    sram_bytes: Figure | None = None            # on-chip memory (caches, scratchpad)
    sram_bandwidth_bytes_per_s: Figure | None = None  # used when weights + activations fit in sram_bytes
    flash_bytes: Figure | None = None           # MCUs: weights live in flash, activations in RAM


class Power(_Strict):
    tdp_w: Figure | None = None
    idle_w: Figure | None = None      # what the device draws doing nothing (modeled energy needs it)
    load_w: Figure | None = None      # what it draws at full load, when measured (else tdp_w stands in)
    modes: dict[str, Figure] = Field(default_factory=dict)


class EnergySpec(_Strict):
    """Energy per operation. `base: horowitz-45nm` fills whatever the vendor does not publish."""

    base: Literal["horowitz-45nm"] | None = None
    process_node: Fact | None = None
    pj_per_mac: dict[Precision, Figure] = Field(default_factory=dict)
    pj_per_dram_byte: Figure | None = None
    pj_per_sram_byte: Figure | None = None
    static_w: Figure | None = None

    @model_validator(mode="after")
    def _complete_without_base(self) -> EnergySpec:
        if self.base is None:
            missing = [k for k in ("pj_per_dram_byte", "pj_per_sram_byte") if getattr(self, k) is None]
            if not self.pj_per_mac:
                missing.insert(0, "pj_per_mac")
            if missing:
                raise ValueError(f"without `base: horowitz-45nm` these are required: {', '.join(missing)}")
        return self


class Derate(_Strict):
    """Achieved / peak efficiency. 1 until calibrated; `compute_by` keys: 'int8', 'onnxruntime/int8' or
    'onnxruntime/int8/conv' (a class of op: conv, matmul); `memory_by` keys: a runner (each runtime
    streams its tensors at its own fraction of the bandwidth)."""

    compute: Figure = Figure(value=1.0, source="default: uncalibrated (peak assumed reachable)")
    memory: Figure = Figure(value=1.0, source="default: uncalibrated (peak assumed reachable)")
    compute_by: dict[str, Figure] = Field(default_factory=dict)
    memory_by: dict[str, Figure] = Field(default_factory=dict)

    @field_validator("compute", "memory")
    @classmethod
    def _positive(cls, f: Figure) -> Figure:
        if f.value <= 0:
            raise ValueError("a derate must be > 0")
        return f

    @field_validator("compute_by")
    @classmethod
    def _keys(cls, d: dict[str, Figure]) -> dict[str, Figure]:
        for key, f in d.items():
            from effbench.variants.specs import precision_names
            parts = key.split("/")
            prec = parts[1] if len(parts) == 3 else parts[-1]
            if prec not in precision_names() or len(parts) > 3:
                raise ValueError(f"key '{key}' must be PRECISION, RUNNER/PRECISION or RUNNER/PRECISION/CLASS with a "
                                 f"precision in {', '.join(precision_names())}")
            if f.value <= 0:
                raise ValueError(f"derate '{key}' must be > 0")
        return d


class ErrorBand(_Strict):
    """How far this profile's projections are from what was measured: the 10th and 90th percentiles of
    measured / projected over held-out checks (leave-one-out), and what they were."""

    low: float = Field(gt=0)
    high: float = Field(gt=0)
    source: str = Field(min_length=3)

    @model_validator(mode="after")
    def _ordered(self) -> ErrorBand:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


class Reference(_Strict):
    """A published measurement of a standard model on this device: what `effbench profiles check`
    projects and compares with. Exactly one of `latency_ms` (per call at `batch`) and `throughput_ips`."""

    model: str                      # a zoo model with random weights: resnet50, mobilenet-v2, mobilenet-v1, resnet8
    batch: int = Field(default=1, ge=1)
    precision: Precision
    runtime: str                    # what the publisher ran: "TensorRT 10", "TFLite XNNPACK, 4 threads"
    scenario: Literal["single-stream", "offline"] = "single-stream"
    latency_ms: float | None = Field(default=None, gt=0)
    throughput_ips: float | None = Field(default=None, gt=0)
    # average power measured on the device while it ran this workload, where the publisher gives one:
    # `effbench profiles check` compares it with the power the projection implies
    power_w: float | None = Field(default=None, gt=0)
    power_source: str | None = Field(default=None, min_length=8)   # the URL (or repository and path) it was read from
    power_quote: str | None = Field(default=None, min_length=8)    # the words that state it, verbatim
    # published time per inference x scale = this profile's device: 80 for a throughput of 80 cores
    # when the profile is one core, 280/480 for a 280 MHz part when the profile's runs at 480 MHz
    scale: float = Field(default=1.0, gt=0)
    note: str | None = None             # what differs from the profile's device, how the scale was derived
    source: str = Field(min_length=8)   # the URL (or repository and path) it was read from
    quote: str = Field(min_length=8)    # the words that state the figure, verbatim

    @field_validator("model")
    @classmethod
    def _zoo_model(cls, v: str) -> str:
        from effbench.models.standard_names import STANDARD_NAMES
        if v not in STANDARD_NAMES:
            raise ValueError(f"unknown reference model '{v}'{did_you_mean(v, STANDARD_NAMES)}; "
                             f"expected one of {', '.join(STANDARD_NAMES)}")
        return v

    @model_validator(mode="after")
    def _one_figure(self) -> Reference:
        if (self.latency_ms is None) == (self.throughput_ips is None):
            raise ValueError("give exactly one of latency_ms and throughput_ips")
        if self.scale != 1.0 and not self.note:
            raise ValueError("a scale needs a note saying how it was derived")
        if self.power_w is not None and not (self.power_source and self.power_quote):
            raise ValueError("power_w needs power_source (where it was published) and power_quote (the words "
                             "that state it)")
        if self.power_w is None and (self.power_source or self.power_quote):
            raise ValueError("power_source and power_quote describe power_w: give power_w too, or remove them")
        return self

    @property
    def seconds_per_inference(self) -> float:
        """Per inference on the profile's device: the published figure, times `scale`."""
        s = self.latency_ms / 1e3 / self.batch if self.latency_ms else 1.0 / self.throughput_ips  # type: ignore[operator]
        return s * self.scale


# Named decoder shapes an LLM reference may cite instead of spelling its shape out: each from the model's
# published config.json (HF hub), the numbers `effbench.models.llm.LlmShape` takes.
LLM_SHAPES: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-2-7b-hf config.json: 32 layers, hidden 4096, 32 heads (no GQA), intermediate 11008,
    # vocab 32000, untied embeddings (6.74 B parameters; llama-bench prints "6.74 B")
    "llama-2-7b": {"layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 32, "ffn": 11008, "vocab": 32000,
                   "tied_embeddings": False},
    # meta-llama/Llama-2-13b-hf config.json: 40 layers, hidden 5120, 40 heads (no GQA), intermediate 13824
    "llama-2-13b": {"layers": 40, "hidden": 5120, "heads": 40, "kv_heads": 40, "ffn": 13824, "vocab": 32000,
                    "tied_embeddings": False},
    # meta-llama/Llama-3.2-3B config.json: 28 layers, hidden 3072, 24 heads, 8 KV heads, intermediate 8192,
    # vocab 128256, tied embeddings (3.21 B parameters; llama-bench prints "3.21 B")
    "llama-3.2-3b": {"layers": 28, "hidden": 3072, "heads": 24, "kv_heads": 8, "ffn": 8192, "vocab": 128256,
                     "tied_embeddings": True},
    # meta-llama/Llama-3.1-8B config.json: 32 layers, hidden 4096, 32 heads, 8 KV heads, intermediate 14336,
    # vocab 128256, untied embeddings (8.03 B parameters)
    "llama-3.1-8b": {"layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8, "ffn": 14336, "vocab": 128256,
                     "tied_embeddings": False},
    # TinyLlama/TinyLlama-1.1B-Chat-v1.0 config.json: 22 layers, hidden 2048, 32 heads, 4 KV heads,
    # intermediate 5632, vocab 32000, untied embeddings (1.10 B parameters)
    "tinyllama-1.1b": {"layers": 22, "hidden": 2048, "heads": 32, "kv_heads": 4, "ffn": 5632, "vocab": 32000,
                       "tied_embeddings": False},
}


class LlmShapeSpec(_Strict):
    """A decoder's shape spelt out (the numbers of its config.json) where no named shape fits."""

    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    ffn: int = Field(gt=0)
    vocab: int = Field(gt=0)
    tied_embeddings: bool
    head_dim: int | None = Field(default=None, gt=0)
    source: str = Field(min_length=8)   # the config.json it was read from


class LlmReference(_Strict):
    """A published tokens/s of a decoder LLM on this device (`effbench profiles check`, LLM references):
    projected with the model `project_generation` uses and compared with the published figure.

    `test`: llama-bench's names, `tgN` (N tokens generated after an empty prompt: decode, tokens/s =
    1 / TPOT) or `ppN` (one N-token prompt: prefill, tokens/s = N / TTFT); `eval` for a decode rate some
    other tool reports (Ollama's "eval rate"), with `prompt_tokens` and `new_tokens` stating the context
    it ran at. Weights are read at `bits_per_weight` (bits over all parameters, as the GGUF stores them)."""

    model: str                            # what the publisher ran: "Llama 2 7B", "llama3.2:3b"
    shape: str | LlmShapeSpec             # a name in LLM_SHAPES, or the shape spelt out
    quant: str = Field(min_length=2)      # the weight type: Q4_0, Q8_0, F16, Q4_K_M
    bits_per_weight: float = Field(gt=0, le=32)
    bits_source: str = Field(min_length=8)    # where bits_per_weight comes from (the format, or a published size)
    backend: str = Field(min_length=3)    # what ran it: "llama.cpp CPU, 4 threads", "llama.cpp Metal"
    runner: str = Field(min_length=2)     # the effbench runner whose per-call overhead applies (if calibrated)
    # the precision the arithmetic runs at, whose peak projects it (llama.cpp's quantized CPU kernels: int8
    # dot products; Apple GPUs: the profile's fp32 GPU peak): what a record's kernel.compute_precision says
    compute_precision: Precision
    test: str = Field(pattern=r"^(tg[1-9][0-9]*|pp[1-9][0-9]*|eval)$")
    prompt_tokens: int | None = Field(default=None, ge=0)   # only for `eval` (tg/pp state their own)
    new_tokens: int | None = Field(default=None, ge=2)      # only for `eval`
    kv_bytes_per_element: float = Field(default=2.0, gt=0)  # llama.cpp's default KV cache is F16
    tokens_per_s: float = Field(gt=0)
    note: str | None = None               # what differs from the profile's device, what was assumed
    source: str = Field(min_length=8)     # the URL (or repository and path) it was read from
    quote: str = Field(min_length=8)      # the words that state the figure, verbatim

    @field_validator("shape")
    @classmethod
    def _known_shape(cls, v: str | LlmShapeSpec) -> str | LlmShapeSpec:
        if isinstance(v, str) and v not in LLM_SHAPES:
            raise ValueError(f"unknown LLM shape '{v}'{did_you_mean(v, list(LLM_SHAPES))}; expected one of "
                             f"{', '.join(LLM_SHAPES)} or the shape spelt out (layers, hidden, heads, kv_heads, ffn, "
                             "vocab, tied_embeddings, source)")
        return v

    @model_validator(mode="after")
    def _context_stated(self) -> LlmReference:
        if self.test == "eval":
            if self.prompt_tokens is None or self.new_tokens is None:
                raise ValueError("test: eval needs prompt_tokens and new_tokens (the context the rate was measured "
                                 "at), and a note saying where they come from")
            if not self.note:
                raise ValueError("test: eval needs a note saying how prompt_tokens and new_tokens were chosen")
        elif self.prompt_tokens is not None or self.new_tokens is not None:
            raise ValueError(f"test: {self.test} states its own context: remove prompt_tokens and new_tokens")
        return self

    @property
    def phase(self) -> Literal["decode", "prefill"]:
        return "prefill" if self.test.startswith("pp") else "decode"

    @property
    def context(self) -> tuple[int, int]:
        """(prompt tokens, new tokens) of the run the figure comes from: tgN = (0, N), ppN = (N, 1)."""
        if self.test == "eval":
            return self.prompt_tokens or 0, self.new_tokens or 2
        n = int(self.test[2:])
        return (0, n) if self.test.startswith("tg") else (n, 1)

    def llm_shape(self):
        """The shape as an `effbench.models.llm.LlmShape`."""
        from effbench.models.llm import LlmShape
        if isinstance(self.shape, str):
            return LlmShape(**LLM_SHAPES[self.shape])
        return LlmShape(**self.shape.model_dump(exclude={"source"}))

    @property
    def shape_name(self) -> str:
        return self.shape if isinstance(self.shape, str) else f"{self.shape.layers}L-{self.shape.hidden}"


class Profile(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    name: str
    kind: Literal["cpu", "gpu", "npu", "tpu", "mcu"]
    notes: str | None = None
    peak_ops: dict[Precision, Peak]
    # a runtime's own achieved peaks where they differ from the device's (the local profile measures
    # each runner's kernels: ONNX Runtime's MLAS int8 is not torch._int_mm); projection prefers them
    peak_ops_by_runner: dict[str, dict[Precision, Peak]] = Field(default_factory=dict)
    memory: Memory
    power: Power = Power()
    energy_model: EnergySpec = EnergySpec(base="horowitz-45nm")
    derate: Derate = Derate()
    per_op_overhead_s: Figure
    # fitted by `effbench profiles calibrate` on the local profile: one call's fixed cost per runner, and
    # per-node costs per runner and class of op (conv, matmul, other) where they differ from per_op
    call_overhead_by_runner: dict[str, Figure] = Field(default_factory=dict)
    node_overhead_by_runner: dict[str, dict[Literal["conv", "matmul", "other"], Figure]] = Field(default_factory=dict)
    meters: list[str] = Field(default_factory=list)
    # The names NVML reports for this GPU (nvidia-smi's "name"): a cell run on CUDA on a machine with one
    # of them is a measurement of this device, and its projection is compared with it (error_pct).
    gpu_names: list[str] = Field(default_factory=list)
    # published measurements of standard models on this device (`effbench profiles check`)
    references: list[Reference] = Field(default_factory=list)
    # published tokens/s of decoder LLMs on this device (`effbench profiles check`, LLM references)
    llm_references: list[LlmReference] = Field(default_factory=list)
    # the projection's prediction interval: every projection's latency x [low, high]
    error_band: ErrorBand | None = None
    path: str | None = Field(default=None, exclude=True)  # where it was loaded from (not a YAML key)

    @model_validator(mode="after")
    def _has_some_peak(self) -> Profile:
        if not self.peak_ops:
            raise ValueError("peak_ops is empty: a profile must declare at least one precision")
        return self

    # -- the figures projection needs -------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.id == LOCAL_ID

    def describes(self, record) -> bool:
        """True when the record was measured on the device this profile describes: the local profile for a
        cell run on this machine's CPU, a GPU profile for a CUDA cell on a GPU named in `gpu_names`."""
        device = record.cell.device
        if self.is_local:
            return device == "cpu"
        if self.kind != "gpu" or not self.gpu_names or device != "cuda":
            return False
        gpus = record.provenance.gpus
        return any(g.get("name") in self.gpu_names for g in gpus if isinstance(g, dict))

    def peak_ops_per_s(self, precision: str, runner: str | None = None, op_class: str | None = None) -> float | None:
        """The achieved peak for this precision: the runner's own for this class of op ("conv"), else the
        runner's own (its matrix products), else the device's."""
        for key in ((f"{runner}/{op_class}", runner) if op_class else (runner,)):
            own = self.peak_ops_by_runner.get(key or "", {}).get(precision)  # type: ignore[call-overload]
            if own is not None and own.dense is not None:
                return own.dense.value
        peak = self.peak_ops.get(precision)  # type: ignore[call-overload]
        return peak.dense.value if peak is not None and peak.dense is not None else None

    def compute_derate(self, precision: str, runner: str | None = None, op_class: str | None = None) -> float:
        by = self.derate.compute_by
        for key in (f"{runner}/{precision}/{op_class}", f"{runner}/{precision}", precision):
            if key in by:
                return by[key].value
        return self.derate.compute.value

    def memory_derate(self, runner: str | None = None) -> float:
        by = self.derate.memory_by
        return by[runner].value if runner in by else self.derate.memory.value

    def call_overhead_s(self, runner: str | None) -> float:
        """The fixed cost of one call into the runtime (0 where nobody measured it)."""
        f = self.call_overhead_by_runner.get(runner or "")
        return f.value if f is not None else 0.0

    def node_overhead_s(self, runner: str | None, op_class: str) -> float:
        f = self.node_overhead_by_runner.get(runner or "", {}).get(op_class)
        return f.value if f is not None else self.per_op_overhead_s.value

    def energy(self):
        """This profile's energy model as an `effbench.measure.energy.EnergyModel`."""
        from effbench.measure.energy import EnergyModel
        from effbench.variants.specs import horowitz_45nm
        spec = self.energy_model
        base = horowitz_45nm() if spec.base == "horowitz-45nm" else None
        pj_per_mac = dict(base.pj_per_mac) if base else {}
        pj_per_mac.update({p: f.value for p, f in spec.pj_per_mac.items()})
        static = spec.static_w or self.power.idle_w
        parts = []
        if base:
            own = [k for k in ("pj_per_mac", "pj_per_dram_byte", "pj_per_sram_byte") if getattr(spec, k)]
            parts.append("Horowitz ISSCC 2014 45 nm table (the vendor publishes no energy per operation)"
                         + (f", overridden by the vendor's {', '.join(own)}" if own else ""))
        else:
            parts.append("vendor figures (see the profile's sources)")
        if static is not None:
            parts.append(f"static power {static.value:g} W from {'energy_model.static_w' if spec.static_w else 'power.idle_w'}")
        return EnergyModel(
            pj_per_mac=pj_per_mac,
            pj_per_dram_byte=(spec.pj_per_dram_byte.value if spec.pj_per_dram_byte else base.pj_per_dram_byte),
            pj_per_sram_byte=(spec.pj_per_sram_byte.value if spec.pj_per_sram_byte else base.pj_per_sram_byte),
            static_w=static.value if static is not None else (base.static_w if base else 0.0),
            source=f"{self.id}: " + "; ".join(parts),
            load_w=(self.power.load_w or self.power.tdp_w).value if (self.power.load_w or self.power.tdp_w) else None,
        )

    def with_derate(self, derate: Derate, per_op_overhead_s: Figure | None = None) -> Profile:
        update: dict[str, Any] = {"derate": derate}
        if per_op_overhead_s is not None:
            update["per_op_overhead_s"] = per_op_overhead_s
        return self.model_copy(update=update)


# -- locating and loading ---------------------------------------------------------------------------

def profiles_dir() -> Path:
    """The shipped profiles: `effbench/devices/device_profiles` (a symlink to the repo's
    `device_profiles/` in a checkout, real files in a wheel), else the repo root's folder."""
    here = Path(__file__).resolve().parent
    for cand in (here / "device_profiles", here.parents[1] / "device_profiles"):
        if cand.is_dir():
            return cand
    try:  # an installed package whose data went through importlib.resources
        from importlib.resources import files
        cand = Path(str(files("effbench.devices") / "device_profiles"))
        if cand.is_dir():
            return cand
    except (ModuleNotFoundError, TypeError):
        pass
    return here / "device_profiles"


def shipped_ids() -> list[str]:
    return sorted([LOCAL_ID] + [p.stem for p in profiles_dir().glob("*.yaml")])


def looks_like_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or "/" in name or "\\" in name


def load_profile_file(path: str | Path, *, expect_id: str | None = None) -> Profile:
    """Load and validate one profile YAML; every mistake is a one-line UserError with its line."""
    data, lines = load_yaml(path, what="device profile")
    return validate_profile(data, lines, file=str(path), expect_id=expect_id)


def validate_profile(data: Any, lines: LineMap | None = None, *, file: str, expect_id: str | None = None) -> Profile:
    lines = lines or LineMap()
    if not isinstance(data, dict):
        raise UserError("a device profile must be a YAML mapping (id, name, kind, peak_ops, memory, ...)",
                        file=file, line=lines.line(()), fix="start from a file in device_profiles/")
    try:
        profile = Profile.model_validate({**data, "path": file} if "path" not in data else data)
    except ValidationError as e:
        raise _user_error(e, lines, file) from None
    if expect_id is not None and profile.id != expect_id:
        raise UserError(f"id '{profile.id}' does not match the file name '{expect_id}'", file=file,
                        line=lines.line(("id",)), field="id", fix=f"set id: {expect_id}")
    return profile


_FIELD_HINTS = {
    "peak_ops": "keys are precisions as a suite's precisions: names them, each {dense: {value, source}}",
    "kind": f"one of {', '.join(KINDS)}",
    "source": "cite a datasheet URL or a paper; write the arithmetic when derived: true",
    "references": "a reference gives model, precision, runtime, latency_ms or throughput_ips, source and quote, and "
                  "power_w only with power_source and power_quote (see device_profiles/cortex-m7.yaml)",
    "llm_references": "an LLM reference gives model, shape, quant, bits_per_weight, bits_source, backend, "
                      "compute_precision, test, tokens_per_s, source and quote (see device_profiles/raspberry-pi-5.yaml)",
    "quote": "the words that state the figure, verbatim, as published",
}


def _user_error(e: ValidationError, lines: LineMap, file: str) -> UserError:
    # a misspelt key also makes its correct name "missing": report the misspelling
    err = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")[0]
    loc = tuple(err["loc"])
    kind = err["type"]
    # pydantic puts union/literal-key detail after the real path: keep the YAML part only
    path = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    if kind == "extra_forbidden":
        parent, key = path[:-1], path[-1]
        allowed = _allowed_keys(parent)
        msg = f"unknown key '{key}'{did_you_mean(str(key), allowed)}"
        fix = f"allowed here: {', '.join(allowed)}" if allowed else "remove it"
    elif kind == "missing":
        msg = "required field is missing"
        fix = _FIELD_HINTS.get(str(path[-1]) if path else "", "add it (see device_profiles/ for examples)")
    elif len(path) >= 2 and path[-2] in ("peak_ops", "pj_per_mac") and "unknown precision" in err["msg"]:
        from effbench.variants.specs import precision_names
        msg = err["msg"].removeprefix("Value error, ")
        fix = f"expected one of {', '.join(precision_names())}"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        if "input" in err and not isinstance(err["input"], (dict, list)):
            msg += f" (got {str(err['input'])[:40]!r})"
        last = next((str(x) for x in reversed(path) if isinstance(x, str)), "")
        fix = _FIELD_HINTS.get(str(path[-1]) if path else "",
                               _FIELD_HINTS.get(last, "see device_profiles/ for the expected form"))
    return UserError(msg, file=file, line=lines.line(path), field=dotted(path), fix=fix)


def _allowed_keys(parent: tuple) -> list[str]:
    model: Any = Profile
    for p in parent:
        fields = getattr(model, "model_fields", None)
        if fields is None or p not in fields:
            # inside a dict (peak_ops.int8, power.modes.x): follow the dict's value type
            args = getattr(model, "__args__", ())
            model = args[-1] if args else None
            if model is None:
                return []
            model = _unwrap(model)
            continue
        model = _unwrap(fields[p].annotation)
    fields = getattr(model, "model_fields", None)
    return [k for k in fields if k != "path"] if fields else []


def _unwrap(tp: Any) -> Any:
    for a in getattr(tp, "__args__", ()) or ():
        if a is not type(None):
            if isinstance(a, type) and issubclass(a, BaseModel):
                return a
            if getattr(a, "__origin__", None) is dict:
                return a
    return tp


def apply_figures(profile: Profile, figures: dict[str, Any], src: str) -> Profile:
    """A profile with calibrated figures (`calibrate`'s, or a cached calibration's)."""
    fig = lambda v: Figure(value=max(float(v), 0.0), source=src, derived=True)  # noqa: E731
    eff = figures.get("compute_by") or {}
    derate = Derate(compute=fig(figures.get("compute") or (statistics.geometric_mean(eff.values()) if eff else 1.0)),
                    memory=fig(figures.get("memory") or 1.0),
                    compute_by={k: fig(v) for k, v in eff.items() if v > 0},
                    memory_by={k: fig(v) for k, v in (figures.get("memory_by") or {}).items() if v > 0})
    out = profile.with_derate(derate, fig(figures["per_op_overhead_s"]) if figures.get("per_op_overhead_s") is not None
                              else None)
    band = figures.get("error_band")
    return out.model_copy(update={
        "error_band": ErrorBand(low=band["low"], high=band["high"], source=f"{src}: {band['source']}") if band else None,
        "call_overhead_by_runner": {r: fig(v) for r, v in (figures.get("call_overhead_by_runner") or {}).items()},
        "node_overhead_by_runner": {r: {k: fig(v) for k, v in d.items()}
                                    for r, d in (figures.get("node_overhead_by_runner") or {}).items()}})
