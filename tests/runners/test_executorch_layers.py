"""`effbench layers` on ExecuTorch: its ETDump read by the devtools Inspector with the program's ETRecord, with
the real exporter, XNNPACK delegate and runtime."""
import json
from pathlib import Path

import numpy as np
import pytest
from ebtest import require

from effbench.measure.layers import LayerRow, text
from effbench.runners.executorch_layers import fold_events, xnnpack_name

HERE = Path(__file__).parent
# lowering to XNNPACK serializes through ExecuTorch's bundled `flatc` binary, run as a subprocess
SPAWNS = pytest.mark.spawns


def test_xnnpack_operator_names_give_op_data_types_and_kernel():
    assert xnnpack_name("Convolution (NHWC, F32) IGEMM #1") == ("Convolution", "F32", "IGEMM")
    assert xnnpack_name("Fully Connected (NC, QD8, F32, QC8W) GEMM #2") == ("Fully Connected", "QD8/F32/QC8W", "GEMM")
    assert xnnpack_name("Static Reshape (NC) #1") == ("Static Reshape", None, "")


def _ev(name, us, *, delegated=False, instruction=0, op_types=(), backend=None, nodes=()):
    return {"name": name, "instruction": instruction, "delegated": delegated, "backend": backend,
            "op_types": list(op_types), "nodes": list(nodes), "us": list(us)}


def test_a_delegate_without_operator_events_is_one_row_named_so_and_the_call_adds_up():
    """A backend that logs nothing inside its call: the delegated part is one row, said to be one; the operator
    on ExecuTorch's own kernels is its own row; what the call spends outside both is a row too."""
    events = [_ev("DELEGATE_CALL", [90, 30, 32], backend="XnnpackBackend", op_types=["aten.linear.default"] * 2),
              _ev("native_call_cumsum.out", [50, 10, 10], instruction=1, op_types=["aten.cumsum.default"],
                  nodes=["aten_cumsum_default_"]),
              _ev("OPERATOR_CALL", [60, 12, 12], instruction=1, op_types=["aten.cumsum.default"]),
              _ev("Method::execute", [200, 50, 50])]
    entries, notes = fold_events(events, skip=1)
    rows = {e["layer"]: e for e in entries}
    assert rows["delegated part (XnnpackBackend, one row)"]["time_us"] == 31
    assert rows["aten_cumsum_default"]["op_type"] == "aten.cumsum.default"
    assert rows["aten_cumsum_default"]["kernel"] == "cumsum.out" and rows["aten_cumsum_default"]["time_us"] == 10
    assert sum(e["time_us"] for e in entries) == pytest.approx(50)   # Method::execute's mean, first call left out
    assert any("linear x2" in n for n in notes) and any("ExecuTorch's own kernels" in n for n in notes)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("executorch-layers-cache")


def _prepare(name: str, module: str, shape: list, cache: Path):
    from effbench.config.suite import ModelSpec
    from effbench.models.sources import prepare
    spec = ModelSpec.model_validate({"id": f"etl-{name}", "source": {"torch": f"{module}:{name}"},
                                     "inputs": {"x": {"shape": shape, "dtype": "float32"}}})
    return prepare(spec, 0, base_dir=HERE, suite_file="t.yaml", cache_dir=cache)


def _profile(art, cache, label: str, shape: tuple, runs: int = 20) -> dict:
    require("executorch", "executorch")
    from effbench.runners.executorch import ExecuTorchRunner
    from effbench.variants import build_variant
    precision, _, method = label.partition("-")
    v = build_variant(art, label, precision, method or None, {}, cache)
    session = ExecuTorchRunner().load(v, 1, {"artifact": art.to_json(), "cache_dir": str(cache), "profile": True})
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    return ExecuTorchRunner.profile_layers(session, {"x": x}, runs)


@SPAWNS
def test_fp32_cnn_profile_names_each_xnnpack_operator_with_its_data_type(cache):
    art = _prepare("cnn2", "deploynets", ["batch", 3, 16, 16], cache)
    res = _profile(art, cache, "fp32", (4, 3, 16, 16))
    rows = [LayerRow(**r) for r in res["rows"]]
    from importlib.metadata import version
    assert res["profiler"] == "ExecuTorch ETDump" and res["runtime_version"] == version("executorch")
    assert Path(res["etrecord"]).is_file() and Path(res["program"]).is_file()
    assert rows and all(r.time_us > 0 for r in rows)
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    convs = [r for r in rows if r.op_type == "Convolution"]
    assert len(convs) == 2, [r.layer for r in rows]
    assert all(r.kernel.startswith("XNNPACK") and r.precision == "F32" for r in convs)
    # the global average pool (mean.dim) is left to ExecuTorch's own kernel: its own row, the graph's node name
    mean = [r for r in rows if r.op_type == "aten.mean.dim"]
    assert len(mean) == 1 and mean[0].layer.startswith("aten_mean_dim") and mean[0].kernel == "mean.out"
    fraction = res["delegation"]["fraction"]
    assert 0 < fraction < 1 and f"XNNPACK took {fraction:.0%}" in res["notes"][0] and "aten_mean_dim" in res["notes"][0]
    assert any("convolution x2" in n and "(ETRecord)" in n for n in res["notes"])
    printed = text(rows, meta=res)
    assert printed.splitlines()[0].startswith(f"ExecuTorch ETDump (executorch {version('executorch')})")
    json.dumps(res)


@SPAWNS
def test_int8_operators_say_their_quantized_types(cache):
    art = _prepare("cnn2", "deploynets", ["batch", 3, 16, 16], cache)
    rows = [LayerRow(**r) for r in _profile(art, cache, "int8", (4, 3, 16, 16))["rows"]]
    convs = [r for r in rows if r.op_type == "Convolution"]
    assert convs and all(r.precision and r.precision.startswith("Q") for r in convs), [(r.layer, r.precision) for r in convs]


@SPAWNS
def test_an_operator_xnnpack_left_is_its_own_row_beside_the_delegate_calls(cache):
    art = _prepare("partly_delegated", "etlayernets", ["batch", 256], cache)
    res = _profile(art, cache, "fp32", (4, 256))
    rows = {r["layer"]: r for r in res["rows"]}
    cumsum = [r for r in rows.values() if r["op_type"] == "aten.cumsum.default"]
    assert len(cumsum) == 1 and cumsum[0]["kernel"].startswith("cumsum") and cumsum[0]["time_us"] > 0
    assert cumsum[0]["layer"].startswith("aten_cumsum")   # the graph's node, from the ETRecord
    fcs = [r for r in rows.values() if r["op_type"] == "Fully Connected"]
    assert {r["layer"].split(":")[0] for r in fcs} == {"d1", "d2"}   # two delegate calls, told apart
    assert all(r["precision"] == "F32" and r["kernel"] == "XNNPACK GEMM" for r in fcs)
    assert res["delegation"]["fraction"] < 1 and "cumsum" in res["notes"][0]
    assert sum(r["share"] for r in rows.values()) == pytest.approx(1.0)
