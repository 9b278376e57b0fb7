"""The server search on a small real ONNX Runtime model: every rate tried keeps LoadGen's own verdict and
early stopping (as its summary log says them), the peak is at or below offline throughput, and LoadGen calls
the run at 1.3x the peak INVALID."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from effbench.scenarios.loadgen import LoadGenSettings, find_max_qps, run_loadgen, server_runner
from effbench.scenarios.loadgen.search import VERIFY_FACTOR


def chain_model(width: int = 512, layers: int = 24):
    """A chain of MatMul + Tanh (about 6M MACs): a third of a millisecond per call on one thread here, so
    the model, not LoadGen or the Python SUT, limits the rate."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), "W")
    nodes, prev = [], "x"
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [prev, "W"], [f"m{i}"]), helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        prev = f"t{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, width])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString(), width


def ort_call(model: bytes, width: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feeds = {"x": np.ones((1, width), dtype=np.float32)}
    return lambda: sess.run(None, feeds)


def summary_says(path: str | Path) -> tuple[str, list[str], bool]:
    """(verdict, early-stopping lines, early stopping satisfied) as LoadGen's summary writes them."""
    text = Path(path).read_text()
    verdict = re.search(r"^Result is : (\w+)", text, re.MULTILINE)[1]
    block = text.split("Early Stopping Result:", 1)[1].split("\n\n", 1)[0] if "Early Stopping Result:" in text else ""
    lines = [x.strip() for x in block.splitlines() if x.strip()]
    met = re.search(r"Early stopping satisfied\s*:\s*(\w+)", text)
    return verdict, lines, bool(met and met[1].lower() == "yes")


@pytest.mark.slow
def test_each_rate_keeps_loadgens_verdict_and_1_3x_the_peak_is_invalid(tmp_path):
    model, width = chain_model()
    call = {1: ort_call(model, width)}
    off = run_loadgen(call, LoadGenSettings(scenario="offline", min_duration_ms=500), tmp_path / "offline",
                      qsl_samples=16)
    base = LoadGenSettings(scenario="server", target_qps=1, latency_bound_ms=15, min_duration_ms=300,
                           min_query_count=700)
    search = find_max_qps(server_runner(call, base, tmp_path / "server", qsl_samples=16, threads=1), 500,
                          min_qps=50, budget_s=90, precision=0.1)
    assert off.valid, off.constraints
    assert search.best is not None, search.ended
    assert search.max_qps <= off.samples_per_s          # the acceptance check of the hand-written search
    rates = search.rates()
    assert len(rates) == len(search.runs) >= 4
    for r in rates:  # the record keeps, per rate, what LoadGen's own summary says
        verdict, lines, met = summary_says(r["summary_path"])
        assert r["verdict"] == verdict and r["valid"] == (verdict == "VALID")
        assert r["early_stopping"] == lines and r["early_stopping_met"] == met
        assert r["queries"] >= 1 and r["overlatency_queries"] is not None and Path(r["detail_path"]).is_file()
        assert r["early_stopping_ms"] == {}  # LoadGen's server early stopping gives no percentile estimate
    # LoadGen itself calls the run at 1.3x the peak INVALID (the search's last run verifies it)
    above = [r for r in rates if r["qps"] >= VERIFY_FACTOR * search.max_qps * 0.98]
    assert above and all(r["verdict"] == "INVALID" for r in above), (search.ended, rates)
    assert any(abs(r["qps"] / search.max_qps - VERIFY_FACTOR) < 0.02 for r in above)
    assert "INVALID" in search.ended
