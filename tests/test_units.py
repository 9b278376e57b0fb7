"""One formatter per kind of figure (issue 13): the report, the profiles and the gate agree on units."""
from effbench.devices.catalog import _bytes, _si
from effbench.gate.verdict import _fmt_value
from effbench.units import fmt_bytes, fmt_si


def test_bytes_are_iec_everywhere():
    assert fmt_bytes(1536) == "1.5 KiB" and fmt_bytes(3 * 2**20) == "3 MiB" and fmt_bytes(512) == "512 B"
    assert _bytes(3 * 2**20) == "3 MiB" and _fmt_value(3 * 2**20, "bytes") == "3 MiB"
    assert fmt_bytes(None) == "—" and _bytes(None) == "-"


def test_si_prefixes_up_and_down():
    assert fmt_si(1234567, "MAC") == "1.23 MMAC" and fmt_si(0.00042, "J") == "420 µJ"
    assert fmt_si(2e15, "FLOP/s") == "2 PFLOP/s" and _si(2e12, "FLOP/s") == "2 TFLOP/s"
    assert fmt_si(0, "J") == "0 J" and fmt_si(1.5e9, sep="") == "1.5G"
