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
    # takes the `prune:` option (pruning runs on the FP32 model before this precision's own build)
    prunable: bool = True

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
    """Sort key of a variant label: its precision's order, then the bare precision before its methods and
    its pruned forms ("fp32+channel30")."""
    base, _, pruned = label.partition("+")
    precision, _, method = base.partition("-")
    spec = PRECISIONS.get(precision)
    return (spec.order if spec else 10_000, (1 if method else 0) + (2 if pruned else 0), label)


def bits(precision: str) -> tuple[int, int] | None:
    """(weight bits, activation bits), or None for a precision nobody registered."""
    spec = PRECISIONS.get(precision)
    return (spec.weight_bits, spec.activation_bits) if spec else None


# ---------------------------------------------------------------------- pruning: a transform of any variant
# `prune:` is an option of every prunable precision ({int8: {prune: {method: channel, amount: 0.3}}}): the
# FP32 model is pruned first, then the precision builds from the pruned model (variants.prune).
# method -> its keys: (type, default, allowed values); an amount has no default (2:4 takes none: it is half).
PRUNE_METHODS: dict[str, dict[str, tuple[type, Any, tuple[str, ...]]]] = {
    "magnitude": {"amount": (float, None, ()), "scope": (str, "layer", ("layer", "global"))},
    # round_to: kept channels rounded up to a multiple (kernels blocked by 8 or 16 channels run odd counts slower)
    "channel": {"amount": (float, None, ()), "norm": (str, "l1", ("l1", "l2")), "round_to": (int, 1, ())},
    "2:4": {},
}
PRUNE_EXAMPLE = "{method: magnitude, amount: 0.5}"


def check_prune(precision: str, value: Any) -> dict[str, Any]:
    """The `prune:` option with its defaults filled in; ValueError (one line: the field and the fix)."""
    from effbench.errors import did_you_mean
    spec = PRECISIONS.get(precision)
    if spec is not None and not spec.prunable:
        raise ValueError(f"option 'prune' is not available for {precision}; prune an fp32 or int8 variant instead")
    if not isinstance(value, dict):
        raise ValueError(f"option 'prune' for {precision} must be a mapping, got {value!r}; write prune: {PRUNE_EXAMPLE}")
    method = value.get("method")
    if method == 124:  # YAML 1.1 reads an unquoted 2:4 as a base-60 number
        raise ValueError("option 'prune.method' is 124 because YAML reads an unquoted 2:4 as a number; "
                         "write method: '2:4' in quotes")
    if method not in PRUNE_METHODS:
        names = ", ".join(PRUNE_METHODS)
        hint = did_you_mean(str(method), list(PRUNE_METHODS)) if method is not None else ""
        raise ValueError(f"option 'prune.method' for {precision} must be one of {names}, got {method!r}{hint}; "
                         f"write prune: {PRUNE_EXAMPLE}")
    keys = PRUNE_METHODS[method]
    out: dict[str, Any] = {"method": method}
    for key, given in value.items():
        if key == "method":
            continue
        if key not in keys:
            takes = ", ".join(["method", *keys])
            raise ValueError(f"option 'prune.{key}' is not a {method} pruning option{did_you_mean(str(key), list(keys))}; "
                             f"{method} takes {takes}")
        typ, _, allowed = keys[key]
        if typ is float:
            if isinstance(given, bool) or not isinstance(given, (int, float)) or not 0 < given < 1:
                raise ValueError(f"option 'prune.{key}' for {precision} must be a fraction between 0 and 1 "
                                 f"(exclusive), got {given!r}; write {key}: 0.5 for half")
            given = float(given)
        elif typ is int:
            if isinstance(given, bool) or not isinstance(given, int) or not 1 <= given <= 1024:
                raise ValueError(f"option 'prune.{key}' for {precision} must be a whole number from 1 to 1024, "
                                 f"got {given!r}; write {key}: 8 to keep multiples of 8 channels")
        elif given not in allowed:
            raise ValueError(f"option 'prune.{key}' for {precision} must be one of {', '.join(allowed)}, got {given!r}")
        out[key] = given
    for key, (_, default, _) in keys.items():
        if key not in out:
            if default is None:
                raise ValueError(f"option 'prune' for {precision} needs {key} with method {method}; write "
                                 f"prune: {{method: {method}, {key}: 0.5}}")
            out[key] = default
    return out


def prune_suffix(prune: dict[str, Any] | None) -> str:
    """The label suffix of a pruned variant: "+magnitude50", "+magnitude50-global", "+channel30", "+2:4"."""
    if not prune:
        return ""
    method = prune["method"]
    if "amount" not in prune:
        return f"+{method}"
    out = f"+{method}{round(100 * prune['amount'], 1):g}"
    if prune.get("scope", "layer") != "layer":
        out += f"-{prune['scope']}"
    if prune.get("norm", "l1") != "l1":
        out += f"-{prune['norm']}"
    if prune.get("round_to", 1) != 1:
        out += f"-x{prune['round_to']}"
    return out


def split_label(label: str) -> tuple[str, str | None, str | None]:
    """(precision, method, pruning suffix without '+') of a variant label: "int8-static+channel30"."""
    base, plus, pruned = label.partition("+")
    precision, _, method = base.partition("-")
    return precision, method or None, (pruned if plus else None)


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


def _check_keep(precision: str) -> Callable[[dict[str, Any]], None]:
    def check(opts: dict[str, Any]) -> None:
        bad = [x for x in opts.get("keep_fp32", []) if not isinstance(x, str)]
        if bad:
            raise ValueError(f"option 'keep_fp32' for {precision} lists layer names or first/last, got {bad[0]!r}")
    return check


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
                  order=7, path_options=("plan",), prunable=False,
                  local_peak_from=("int8", "a plan is int8 except the layers it keeps in FP32")),
    # weight-only int4: the MACs consume fp32 activations
    PrecisionSpec("int4", 4, 32, options={"block_size": (int, 32), "symmetric": (bool, True),
                                          "accuracy_level": (int, 4)}, check=_check_int4,
                  pj_per_mac_45nm=0.065, energy_note=_HOROWITZ + "; int4 derived from int8 by bit-width scaling",
                  local_peak_from=("int8", "no int4 matrix kernel runs on this CPU; ONNX Runtime's MatMulNBits "
                                           "(accuracy_level 4) unpacks int4 weights and computes in int8"),
                  order=4),
    # binary weights, fp32 activations (XNOR-popcount would need binary activations too)
    PrecisionSpec("binary", 1, 32, options={"keep_fp32": (list, ["first", "last"])}, check=_check_keep("binary"),
                  pj_per_mac_45nm=0.006875,
                  energy_note=_HOROWITZ + "; binary derived as XNOR + popcount by bit-width scaling", order=5),
    # ternary weights {-a, 0, +a} (TWN), fp32 activations: 0.2 x (2/8)^2 + 0.03 x 2/8 = 0.02 pJ
    PrecisionSpec("ternary", 2, 32, options={"keep_fp32": (list, ["first", "last"])}, check=_check_keep("ternary"),
                  pj_per_mac_45nm=0.02,
                  energy_note=_HOROWITZ + "; ternary derived from int8 by bit-width scaling to 2 bits", order=6),
):
    register_precision(_spec)


# M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm, 0.9 V
# (the table reproduced in Sze et al., Proc. IEEE 2017, Fig. 5 / Han et al., ISCA 2016): each precision's
# energy per MAC is in its registry entry below (with what was derived and how);
#   32-bit SRAM (8 KB cache) read 5 pJ -> 1.25 pJ/byte; 32-bit DRAM read 640 pJ -> 160 pJ/byte.
#   static_w = 0: the paper gives dynamic energy only; static power is a device property its profile supplies.
def horowitz_45nm():
    """The Horowitz 45 nm model over every registered precision that states an energy per MAC."""
    from effbench.measure.energy import EnergyModel
    derived = [s.name for s in PRECISIONS.values() if "derived" in s.energy_note or "taken as" in s.energy_note]
    return EnergyModel(
        pj_per_mac={s.name: s.pj_per_mac_45nm for s in PRECISIONS.values() if s.pj_per_mac_45nm is not None},
        pj_per_dram_byte=160.0,
        pj_per_sram_byte=1.25,
        static_w=0.0,
        source=(f"Horowitz ISSCC 2014 (45 nm); {'/'.join(derived)} derived by bit-width scaling; "
                "static power not modeled"),
    )
