"""The precision registry: everything effbench knows about a precision, in one `PrecisionSpec`.

Suite validation, BOPs, the energy model, device profiles, the local device's micro-benchmarks and the
report read this registry instead of lists of their own; a family module (`floating`, `integer`,
`binary`) registers how each runtime builds its precisions (`variants.builder`). A new precision is
one `register_precision(PrecisionSpec(...))` and one builder, from anywhere (a test registers a toy).

Pure Python: importing it imports no runtime.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PrecisionSpec:
    name: str
    weight_bits: int                  # bits per stored weight (BOPs, size)
    activation_bits: int              # bits of the activations the MACs consume (BOPs)
    methods: tuple[str, ...] = ()     # label suffixes the suite accepts: int8-static, int8-dynamic
    options: dict[str, tuple[type, Any]] = field(default_factory=dict)   # suite options: (type, default)
    check: Callable[[dict[str, Any]], None] | None = None   # ValueError (one line) for a bad combination
    pj_per_mac_45nm: float | None = None    # default energy per MAC (HOROWITZ_45NM's class); None: not modeled
    energy_note: str = ""                    # where pj_per_mac_45nm comes from
    matmul_dtype: str | None = None          # torch dtype of the local device's matmul micro-benchmark
    reference: bool = False                  # the FP32 reference every speedup and quality is against
    order: int = 100                         # position in tables and legends
    headline: bool = False                   # a column of `effbench profiles list`
    # where this machine has no kernel of its own: (the precision whose local peak stands in, why)
    local_peak_from: tuple[str, str] | None = None
    # an ONNX graph of one n x n x n matrix product in this precision (variants.microgemm): what a graph
    # runtime achieves with its own kernels, for the local profile's per-runtime peak
    onnx_matmul: Callable[[int], tuple[bytes, dict[str, Any], str]] | None = None
    # an ONNX graph of one 3x3 convolution in this precision (variants.microgemm.conv), with its MACs:
    # the runtime's convolution kernels, which a CNN's projection uses for its Conv nodes
    onnx_conv: Callable[[], tuple[bytes, dict[str, Any], str]] | None = None
    # options that name a file: the suite resolves them against its own folder and checks they exist
    path_options: tuple[str, ...] = ()

    def labels(self) -> tuple[str, ...]:
        return (self.name,) + tuple(f"{self.name}-{m}" for m in self.methods)


PRECISIONS: dict[str, PrecisionSpec] = {}


def register_precision(spec: PrecisionSpec) -> PrecisionSpec:
    PRECISIONS[spec.name] = spec
    return spec


def precision_spec(name: str) -> PrecisionSpec | None:
    return PRECISIONS.get(name)


def precision_names() -> tuple[str, ...]:
    return tuple(sorted(PRECISIONS, key=lambda n: (PRECISIONS[n].order, n)))


def precision_labels() -> tuple[str, ...]:
    return tuple(label for n in precision_names() for label in PRECISIONS[n].labels())


def reference_precision() -> str:
    """The precision every variant is compared against (FP32)."""
    return next(s.name for s in PRECISIONS.values() if s.reference)


def label_order(label: str) -> tuple[int, int, str]:
    """Sort key of a variant label: its precision's order, then the bare precision before its methods."""
    precision, _, method = label.partition("-")
    spec = PRECISIONS.get(precision)
    return (spec.order if spec else 10_000, 1 if method else 0, label)


def bits(precision: str) -> tuple[int, int] | None:
    """(weight bits, activation bits), or None for a precision nobody registered."""
    spec = PRECISIONS.get(precision)
    return (spec.weight_bits, spec.activation_bits) if spec else None


# ----------------------------------------------------------------------------- the shipped precisions

def _check_int8(opts: dict[str, Any]) -> None:
    if opts.get("calibration_samples", 1) <= 0:
        raise ValueError("option 'calibration_samples' for int8 must be > 0")


def _check_int4(opts: dict[str, Any]) -> None:
    bs = opts.get("block_size", 32)
    if bs < 16 or bs & (bs - 1):
        raise ValueError(f"option 'block_size' for int4 must be a power of two >= 16 (MatMulNBits), got {bs}")
    if not 0 <= opts.get("accuracy_level", 4) <= 4:
        raise ValueError("option 'accuracy_level' for int4 must be 0..4 (MatMulNBits)")


def _check_binary(opts: dict[str, Any]) -> None:
    bad = [x for x in opts.get("keep_fp32", []) if not isinstance(x, str)]
    if bad:
        raise ValueError(f"option 'keep_fp32' for binary lists layer names or first/last, got {bad[0]!r}")


# Energy per MAC, M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
# 45 nm, 0.9 V (the table reproduced in Sze et al., Proc. IEEE 2017): fp32 mult 3.7 pJ + add 0.9 pJ;
# fp16 mult 1.1 + add 0.4; int8 mult 0.2 + add 0.03. bf16 = fp16 (same 16-bit datapath class); int4 =
# int8 with the multiplier scaled by bits^2 and the adder by bits (0.2/4 + 0.03/2); binary = XNOR +
# popcount, the same scaling to 1 bit (0.2/64 + 0.03/8): derived, and labelled so.
_HOROWITZ = "Horowitz ISSCC 2014, 45 nm"


def _check_mixed(options: dict[str, Any]) -> None:
    if not options.get("plan"):
        raise ValueError("mixed needs a plan: {mixed: {plan: path/to/plan.json}} (written by effbench advise)")


def _microgemm(elem: str):
    """A precision's `onnx_matmul`: variants.microgemm's graph for `elem`, imported when first used."""
    def build(n: int):
        from effbench.variants.microgemm import matmul
        return matmul(elem, n)
    return build


def _microconv(elem: str):
    """A precision's `onnx_conv`: variants.microgemm's 3x3 convolution for `elem`."""
    def build():
        from effbench.variants.microgemm import conv
        return conv(elem)
    return build


for _spec in (
    PrecisionSpec("fp32", 32, 32, pj_per_mac_45nm=4.6, energy_note=_HOROWITZ, matmul_dtype="float32",
                  reference=True, order=0, headline=True, onnx_matmul=_microgemm("float"),
                  onnx_conv=_microconv("float")),
    PrecisionSpec("fp16", 16, 16, options={"keep_io_types": (bool, True)}, pj_per_mac_45nm=1.5,
                  energy_note=_HOROWITZ, matmul_dtype="float16", order=1, headline=True,
                  onnx_matmul=_microgemm("float16"), onnx_conv=_microconv("float16")),
    PrecisionSpec("bf16", 16, 16, options={"keep_io_types": (bool, True)}, pj_per_mac_45nm=1.5,
                  energy_note=_HOROWITZ + "; bf16 taken as fp16 (same 16-bit datapath class)",
                  matmul_dtype="bfloat16", order=2, onnx_matmul=_microgemm("bfloat16")),
    PrecisionSpec("int8", 8, 8, methods=("dynamic", "static"),
                  options={"per_channel": (bool, True), "calibration_samples": (int, 256)}, check=_check_int8,
                  pj_per_mac_45nm=0.23, energy_note=_HOROWITZ, matmul_dtype="int8", order=3, headline=True,
                  onnx_matmul=_microgemm("int8"), onnx_conv=_microconv("int8")),
    # a per-layer plan from `effbench advise`: int8 except the layers it keeps in FP32
    PrecisionSpec("mixed", 8, 8, options={"plan": (str, ""), "calibration_samples": (int, 256)}, check=_check_mixed,
                  pj_per_mac_45nm=0.23, energy_note=_HOROWITZ + "; taken as int8 (the plan's FP32 layers cost more)",
                  order=7, path_options=("plan",),
                  local_peak_from=("int8", "a plan is int8 except the layers it keeps in FP32")),
    # weight-only int4: the MACs consume fp32 activations
    PrecisionSpec("int4", 4, 32, options={"block_size": (int, 32), "symmetric": (bool, True),
                                          "accuracy_level": (int, 4)}, check=_check_int4,
                  pj_per_mac_45nm=0.065, energy_note=_HOROWITZ + "; int4 derived from int8 by bit-width scaling",
                  local_peak_from=("int8", "no int4 matrix kernel runs on this CPU; ONNX Runtime's MatMulNBits "
                                           "(accuracy_level 4) unpacks int4 weights and computes in int8"),
                  order=4),
    # binary weights, fp32 activations (XNOR-popcount would need binary activations too)
    PrecisionSpec("binary", 1, 32, options={"keep_fp32": (list, ["first", "last"])}, check=_check_binary,
                  pj_per_mac_45nm=0.006875,
                  energy_note=_HOROWITZ + "; binary derived as XNOR + popcount by bit-width scaling", order=5),
):
    register_precision(_spec)
