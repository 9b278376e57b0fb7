"""Hand-made profiles and synthetic records for the device tests."""
from __future__ import annotations

import pytest
from ebrecords import make

from effbench.devices.profile import Profile, validate_profile
from effbench.results.store import Record


def fig(v, src="hand-made test figure"):
    return {"value": v, "source": src}


def make_profile(**over) -> Profile:
    data = {
        "id": "toy", "name": "toy device", "kind": "cpu",
        "peak_ops": {"fp32": {"dense": fig(2e9)}, "int8": {"dense": fig(8e9)}},  # 1e9 / 4e9 MAC/s
        "memory": {"bandwidth_bytes_per_s": fig(1e9), "capacity_bytes": fig(1e6)},
        "per_op_overhead_s": fig(1e-6),
    }
    data.update(over)
    return validate_profile(data, file="toy.yaml")


def make_record(*, macs=1e9, bytes_moved=1e6, precision="fp32", batch=1, nodes=10, weight_bytes=1000,
                activation_bytes=1000, median_ms=None, runner="onnxruntime", status="ok", emulated=False,
                cell_id=None, **stats) -> Record:
    ms = {"macs": macs, "bytes_moved": bytes_moved, "nodes": nodes, "weight_bytes": weight_bytes,
          "activation_bytes": activation_bytes, **stats}
    ms = {k: v for k, v in ms.items() if v is not None}
    return make(cell_id or f"m/{precision}/{runner}/b{batch}", config_hash="x", status=status,
                cell={"model": "m", "precision": precision, "runner": runner, "batch_size": batch},
                variant={"emulated": emulated}, model_stats=ms,
                # an ok record always has a median: 1 ms where the test does not care about it
                latency_ms={"median": 1.0 if median_ms is None else median_ms} if status == "ok" else None)


@pytest.fixture
def toy() -> Profile:
    return make_profile()


@pytest.fixture(name="make_profile")
def _make_profile_fixture():
    return make_profile


@pytest.fixture(name="make_record")
def _make_record_fixture():
    return make_record
