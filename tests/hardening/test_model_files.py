"""Broken model files: `effbench validate` and `effbench run --quick` stop with one line and exit 2,
or (a graph the runtime cannot load) record the runtime's reason and finish the run (issue 8)."""
from __future__ import annotations

import json

import onnx
import pytest
from hardening_util import TINY_ONNX, one_error_line

from effbench.cli import app as cli


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hardening-cache")


def _suite(tmp_path, model: str, inputs: str = "", batch_sizes: str = "[1]") -> str:
    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\nmodels:\n  - id: m\n    source: {{onnx: {model}}}\n{inputs}precisions: [fp32]\n"
                 f"runners: [{{name: onnxruntime, threads: 1}}]\nbatch_sizes: {batch_sizes}\ndevices: []\n"
                 "measure: {warmup_s: 0.02, min_time_s: 0.05, max_time_s: 0.3, target_rel_ci: 0.05}\n")
    return str(p)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _truncated(tmp_path):
    b = TINY_ONNX.read_bytes()
    (tmp_path / "m.onnx").write_bytes(b[: len(b) // 2])


def _text(tmp_path):
    (tmp_path / "m.onnx").write_text("name: not a model\n")


def _empty(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")


def _no_nodes(tmp_path):
    m = onnx.load(str(TINY_ONNX))
    del m.graph.node[:]
    onnx.save(m, str(tmp_path / "m.onnx"))


CASES = [
    (_truncated, "", "is not a readable ONNX model"),
    (_text, "", "is not a readable ONNX model"),
    (_empty, "", "empty graph"),
    (_no_nodes, "", "empty graph"),
    (lambda p: None, "    inputs: {y: {shape: [batch, 16]}}\n", "the model has no input 'y' (it has x)"),
    (lambda p: None, "    inputs: {x: {shape: [batch, 16, 1]}}\n", "has rank 3 but the model input 'x' has rank 2"),
    (lambda p: None, "    inputs: {x: {shape: [batch, 17]}}\n", "dimension 1 is 17 but the model input 'x' has 16"),
    (lambda p: None, "    inputs: {x: {shape: [batch, 16], dtype: int64}}\n", "dtype int64 but the model input 'x' is float32"),
]
IDS = ["truncated", "text", "zero-bytes", "no-nodes", "input-name", "rank", "dim", "dtype"]
RUN_TOO = {"truncated", "text", "input-name"}  # `run` spawns a worker per case: a few are enough


@pytest.mark.spawns
@pytest.mark.parametrize("case", IDS)
def test_bad_model_is_one_line_in_validate_and_run(tmp_path, capsys, cache, case):
    make, inputs, expect = CASES[IDS.index(case)]
    make(tmp_path)
    model = "m.onnx" if (tmp_path / "m.onnx").exists() else str(TINY_ONNX)
    suite = _suite(tmp_path, model, inputs)
    commands = [["validate", suite]]
    if case in RUN_TOO:
        commands.append(["run", suite, "--quick", "-o", str(tmp_path / "out"), "--cache-dir", str(cache),
                         "--no-progress"])
    for argv in commands:
        rc, out, err = _cli(capsys, *argv)
        line = one_error_line(rc, err)
        assert line is not None and expect in line, (argv[0], err)
        assert "s.yaml" in line and "models[0]" in line, line  # names the suite and the field
    assert not (tmp_path / "out" / "results.jsonl").exists()  # nothing measured, nothing half-written


def _opset99(tmp_path) -> str:
    m = onnx.load(str(TINY_ONNX))
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 99
    onnx.save(m, str(tmp_path / "m.onnx"))
    return _suite(tmp_path, "m.onnx", batch_sizes="[1, 2]")


@pytest.mark.slow
def test_opset_the_runtime_lacks_is_recorded_and_the_run_finishes(tmp_path, capsys, cache):
    suite = _opset99(tmp_path)
    rc, out, err = _cli(capsys, "validate", suite)
    assert rc == 0, err  # a well-formed graph: only the runtime can say it lacks the opset
    rc, out, err = _cli(capsys, "run", suite, "--quick", "-o", str(tmp_path / "out"), "--cache-dir", str(cache),
                        "--no-progress", "--no-report")
    assert "Traceback" not in err
    recs = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["cell_id"] for r in recs] == ["m/fp32/onnxruntime/b1/single-stream", "m/fp32/onnxruntime/b2/single-stream"]
    for r in recs:
        assert r["status"] in ("unsupported", "failed") and r["latency_ms"] is None
        assert "onnxruntime" in r["reason"] and "cannot load" in r["reason"]
    assert rc == (1 if any(r["status"] == "failed" for r in recs) else 0)


def test_opset_reason_names_the_opset(tmp_path):
    """The record's reason must carry the runtime's own sentence ('Opset 99 is under development'),
    not the C++ function signature that precedes it."""
    import onnxruntime as ort

    from effbench.runners.onnxruntime import _first_line
    _opset99(tmp_path)
    with pytest.raises(Exception) as e:
        ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert "Opset 99" in _first_line(e.value)

