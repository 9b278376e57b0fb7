"""`effbench layers` on OpenVINO: the CPU plugin's own performance counters (PERF_COUNT), with the real runtime."""
import json
from pathlib import Path

import numpy as np
import pytest
from ebtest import require

require("openvino", "openvino")
require("nncf", "openvino")

from effbench.measure.flops import count_work
from effbench.measure.layers import LayerRow, text
from effbench.runners.openvino import OpenVinoRunner
from effbench.runners.openvino_layers import PROFILER, precision_of
from effbench.variants import build_variant

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("openvino-layers-cache")


@pytest.fixture(scope="module")
def cnn(cache):
    from effbench.config.suite import ModelSpec
    from effbench.models.sources import prepare
    spec = ModelSpec.model_validate({"id": "ovl-cnn2", "source": {"torch": "deploynets:cnn2"},
                                     "inputs": {"x": {"shape": ["batch", 3, 16, 16], "dtype": "float32"}}})
    return prepare(spec, 0, base_dir=HERE, suite_file="t.yaml", cache_dir=cache)


def _profile(art, cache, label: str, batch: int = 4, runs: int = 20) -> dict:
    precision, _, method = label.partition("-")
    v = build_variant(art, label, precision, method or None, {}, cache)
    session = OpenVinoRunner().load(v, 1, {"artifact": art.to_json(), "cache_dir": str(cache), "profile": True})
    x = np.random.default_rng(0).uniform(0, 1, (batch, 3, 16, 16)).astype(np.float32)
    return OpenVinoRunner.profile_layers(session, {"x": x}, runs, batch_size=batch)


def test_the_kernels_precision_is_read_from_its_exec_type():
    assert precision_of("brgconv_avx512_f32") == "f32"
    assert precision_of("brgconv_avx512_bf16") == "bf16"
    assert precision_of("jit_avx512_I8") == "i8"
    assert precision_of("undef", "f32") == "f32" and precision_of("ref_any", None) is None


def test_fp32_profile_has_each_executed_node_with_its_kernel_precision_and_macs(cnn, cache):
    res = _profile(cnn, cache, "fp32")
    rows = [LayerRow(**r) for r in res["rows"]]
    assert res["profiler"] == PROFILER == "OpenVINO PERF_COUNT"
    import openvino as ov
    assert res["runtime"] == "openvino" and res["runtime_version"] == ov.get_version()
    assert rows and all(r.time_us > 0 and r.calls == 1 for r in rows)
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert all(r.kernel and r.precision for r in rows)
    convs = [r for r in rows if r.op_type == "Convolution"]
    assert len(convs) == 2 and {r.precision for r in convs} == {"f32"}   # the fp32 cell forces f32 (no silent bf16)
    assert all(r.kernel.endswith("_f32") for r in convs)
    # every MAC of the graph lands on exactly one compiled node (conv+bias+relu fused: their layers named)
    graph_macs = count_work(cnn.onnx_path, batch_size=4).macs
    assert sum(r.macs or 0 for r in rows) == graph_macs
    assert all(r.gflops > 0 for r in rows if r.macs)
    # what the plugin did not run is counted, not shown
    nodes = res["nodes"]
    assert nodes["not_run"] > 0 and nodes["kept"] == len(rows)
    assert nodes["compiled"] == nodes["kept"] + nodes["not_run"] + nodes["under_resolution"]
    assert f"{nodes['not_run']} not run" in res["notes"][0]
    printed = text(rows, meta=res)
    assert printed.splitlines()[0].startswith(f"OpenVINO PERF_COUNT (openvino {ov.get_version()})")
    assert "brgconv" in printed or "jit" in printed
    json.dumps(res)   # crosses back from the worker as JSON


def test_int8_profile_shows_the_int8_kernels_that_ran(cnn, cache):
    rows = [LayerRow(**r) for r in _profile(cnn, cache, "int8")["rows"]]
    convs = [r for r in rows if r.op_type == "Convolution"]
    assert convs and {r.precision for r in convs} == {"i8"}, [(r.kernel, r.precision) for r in convs]
    assert sum(r.share for r in rows) == pytest.approx(1.0) and all(r.time_us > 0 for r in rows)
