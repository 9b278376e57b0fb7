"""OpenVINO and NNCF imported with their telemetry off: the OpenVINO runner's `runtime_module`, which a
measuring worker imports before it reads its baseline memory.

`import openvino` itself imports `openvino.tools.ovc`, which starts OpenVINO's telemetry and sends an
"import" event; `import nncf` starts NNCF's. Both decide consent once, at that import, from
`$HOME/intel/openvino_telemetry`, and both treat a missing file as consent (tried here with openvino
2026.4.1, nncf 3.4.0, openvino-telemetry 2025.2.0: a HOME without the file got `openvino_ga_cid` and
`stats` written and `consent = True`). There is no environment switch, and the documented
`opt_in_out --opt_out` itself sends an opt-out event. So each import runs with HOME pointing at a
folder of ours whose consent file says 0, and HOME is restored right after: the consent is read then
and never again, and nothing is written into the user's own HOME.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# "0": declined (openvino_telemetry.utils.opt_in_checker writes "1" or "0"; anything else asks again)
_CONSENT = "0"


def telemetry_home() -> Path:
    """A HOME whose `intel/openvino_telemetry` says 0 (the opt-out), created once per machine."""
    home = Path(tempfile.gettempdir()) / "effbench-openvino-home"
    consent = home / "intel" / "openvino_telemetry"
    if not consent.is_file() or consent.read_text().strip() != _CONSENT:
        consent.parent.mkdir(parents=True, exist_ok=True)
        tmp = consent.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_CONSENT)
        tmp.replace(consent)
    return home


@contextlib.contextmanager
def _declining_home() -> Iterator[None]:
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(telemetry_home())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old


def import_quietly(name: str):
    """`importlib.import_module(name)` for openvino or nncf, their telemetry declined (see the module
    docstring); a module imported earlier is returned as it is (`telemetry_state` says whether it sends)."""
    if name in sys.modules:
        return sys.modules[name]
    with _declining_home():
        return importlib.import_module(name)


def telemetry_state() -> dict[str, Any]:
    """Whether OpenVINO's and NNCF's telemetry objects in this process hold consent (they send only
    with it). A module not imported yet is left out. A consent found on (the module was imported
    before `import_quietly`, under a HOME without the opt-out) is switched off here and said so."""
    out: dict[str, Any] = {}
    ovc = sys.modules.get("openvino.tools.ovc")
    if ovc is not None and getattr(ovc, "telemetry", None) is not None:
        out["openvino"] = _decline(ovc.telemetry)
    wrapper = sys.modules.get("nncf.telemetry.wrapper")
    if wrapper is not None:
        impl = getattr(wrapper.telemetry, "_impl", None)
        out["nncf"] = _decline(impl) if impl is not None else "off (NNCF's stub: it sends nothing)"
    return out


def _decline(tm) -> str:
    if not getattr(tm, "consent", False):
        return "off (consent file says 0)"
    tm.consent = False  # imported before import_quietly: no event leaves from here on
    return "was on (imported under a HOME without the opt-out); switched off in this process"


openvino = import_quietly("openvino")
