"""The one way a figure becomes text: SI prefixes for counts, rates and energy; IEC (KiB, MiB, GiB) for
bytes, everywhere (report, CLI, gate, profiles), so a size reads the same wherever a user sees it.
"""
from __future__ import annotations

_SI = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")]
_IEC = [(2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")]


def fmt_si(x: float | None, unit: str = "", digits: int = 3, *, absent: str = "—", sep: str = " ") -> str:
    """1234567 -> '1.23 M' + unit; 0.00042 J -> '420 µJ'; `absent` when None."""
    if x is None:
        return absent
    if x == 0:
        return f"0{sep}{unit}".strip()
    ax = abs(x)
    for scale, prefix in _SI:
        if ax >= scale * 0.9995:
            return f"{x / scale:.{digits}g}{sep}{prefix}{unit}".strip()
    return f"{x:.{digits}g}{sep}{unit}".strip()


def fmt_bytes(x: float | None, *, absent: str = "—") -> str:
    """Bytes in IEC units: 1536 -> '1.5 KiB'."""
    if x is None:
        return absent
    for scale, unit in _IEC:
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"
