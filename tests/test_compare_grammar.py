"""`compare:` in a suite (issue 31 item 5): its forms, the one-line errors with file, line, field and fix, the
targets each cell gets (which baseline FP32 cell, which are the cell's own FP32 twin), and the config hash."""
from __future__ import annotations

from pathlib import Path

import pytest

from effbench.config.compare import CompareSpec, RuntimesCompare, input_mismatch, targets
from effbench.config.suite import load_suite
from effbench.errors import UserError

HEAD = """name: c
models:
  - id: cnn
    source: {builtin: digits-cnn}
    inputs: {x: {shape: [batch, 1, 8, 8], dtype: float32}}
    dataset: {builtin: digits}
  - id: resnet
    source: {builtin: digits-resnet}
    dataset: {builtin: digits}
precisions: [fp32, int8]
runners:
  - {name: onnxruntime, threads: 1}
  - {name: torch, threads: 1}
batch_sizes: [1, 4]
devices: []
"""


def _suite(tmp_path: Path, compare: str | None, head: str = HEAD) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(head + (f"compare: {compare}\n" if compare is not None else ""))
    return p


@pytest.mark.parametrize("text,spec", [
    ("runtimes", CompareSpec(runtimes=RuntimesCompare())),
    ("{runtimes: {baseline: torch}}", CompareSpec(runtimes=RuntimesCompare(baseline="torch"))),
    ("{runtimes: true}", CompareSpec(runtimes=RuntimesCompare())),
    ("{runtimes: null}", CompareSpec(runtimes=RuntimesCompare())),
    ("{baseline_model: resnet}", CompareSpec(baseline_model="resnet")),
    ("{runtimes: {}, baseline_model: resnet}", CompareSpec(runtimes=RuntimesCompare(), baseline_model="resnet")),
])
def test_the_forms_of_compare(tmp_path, text, spec):
    assert load_suite(_suite(tmp_path, text)).spec.compare == spec


def test_a_suite_without_compare_has_none_and_its_hashes_do_not_move(tmp_path):
    plain = load_suite(_suite(tmp_path, None))
    assert plain.spec.compare is None
    hashes = {c.cell_id: plain.config_hash(c) for c in plain.cells()}
    asked = load_suite(_suite(tmp_path, "runtimes"))
    # the group worker of a compared cell holds the baseline's session too: its measurement is another one
    assert all(asked.config_hash(c) != hashes[c.cell_id] for c in asked.cells())
    again = load_suite(_suite(tmp_path, None))
    assert {c.cell_id: again.config_hash(c) for c in again.cells()} == hashes


LINE = 16  # compare: is the suite's 16th line


@pytest.mark.parametrize("text,field,message,fix", [
    ("runtime", "compare", "unknown comparison 'runtime' (did you mean 'runtimes'?)", "expected one of runtimes"),
    ("{runtimes: {baseline: onnxrt}}", "compare.runtimes.baseline",
     "no runner 'onnxrt' in this suite (did you mean 'onnxruntime'?); its runners are onnxruntime, torch",
     "name one of the suite's runners"),
    ("{baseline_model: resnt}", "compare.baseline_model",
     "no model 'resnt' in this suite (did you mean 'resnet'?); its models are cnn, resnet", "name one of the models"),
    ("{baseline_modl: resnet}", "compare.baseline_modl", "unknown key 'baseline_modl' (did you mean 'baseline_model'?)",
     "expected one of runtimes, baseline_model"),
    ("{runtimes: {base: torch}}", "compare.runtimes.base", "unknown key 'base' (did you mean 'baseline'?)",
     "expected one of baseline"),
    ("{}", "compare", "asks for no comparison", "or remove it"),
    ("[runtimes]", "compare", "compare: is one of runtimes", None),
])
def test_a_bad_compare_is_one_line_with_its_field_and_line(tmp_path, text, field, message, fix):
    p = _suite(tmp_path, text)
    with pytest.raises(UserError) as e:
        load_suite(p)
    err = e.value
    assert (err.file, err.line, err.field) == (str(p), LINE, field)
    assert message in err.message and (fix is None or fix in (err.fix or err.message))
    assert "\n" not in err.one_line()


def test_compare_runtimes_needs_two_runners_and_baseline_model_another_model(tmp_path):
    one_runner = HEAD.replace("  - {name: torch, threads: 1}\n", "")
    with pytest.raises(UserError, match="compare: runtimes needs at least two runners; this suite has one"):
        load_suite(_suite(tmp_path, "runtimes", one_runner))
    one_model = HEAD.replace("""  - id: resnet
    source: {builtin: digits-resnet}
    dataset: {builtin: digits}
""", "")
    with pytest.raises(UserError, match="needs another model"):
        load_suite(_suite(tmp_path, "{baseline_model: cnn}", one_model))


@pytest.mark.parametrize("model,why", [
    ("""  - id: mlp
    source: {builtin: mlp}
    inputs: {x: {shape: [batch, 64], dtype: float32}}
    dataset: {builtin: digits}
""", "their inputs differ (x: [batch, 64] float32 vs x: [batch, 1, 8, 8] float32)"),
    ("""  - id: mlp
    source: {builtin: mlp}
""", "they are not scored on the same dataset"),
    ("""  - id: mlp
    source: {builtin: mlp}
    task: embedding
    dataset: {builtin: digits}
""", "their tasks differ (embedding vs classification)"),
])
def test_models_that_do_not_share_inputs_task_or_data_cannot_be_compared(tmp_path, model, why):
    head = HEAD.replace("    dataset: {builtin: digits}\n  - id: resnet",
                        "    task: classification\n    dataset: {builtin: digits}\n  - id: resnet")
    head = head.replace("precisions:", model + "precisions:")
    with pytest.raises(UserError) as e:
        load_suite(_suite(tmp_path, "{baseline_model: cnn}", head))
    assert e.value.field == "compare.baseline_model" and why in e.value.message
    assert "model 'mlp' cannot be compared with baseline_model 'cnn'" in e.value.message


def test_a_bad_compare_exits_2_in_one_line(tmp_path, capsys):
    from effbench.cli.app import main
    assert main(["validate", str(_suite(tmp_path, "{runtimes: {baseline: tensorrt}}"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"s.yaml:{LINE}: compare.runtimes.baseline: no runner 'tensorrt'" in err[0]


def _by(suite, cell_id):
    return next(c for c in suite.cells() if c.cell_id == cell_id)


def test_targets_compare_every_runner_with_the_baseline_runners_fp32(tmp_path):
    s = load_suite(_suite(tmp_path, "runtimes"))
    t, = targets(s, _by(s, "cnn/int8/torch/b4/single-stream"))
    assert (t.key, t.kind, t.twin, t.baseline.cell_id) == ("runtime:onnxruntime", "runtime", False,
                                                           "cnn/fp32/onnxruntime/b4/single-stream")
    assert (t.baseline.threads, t.baseline.runner) == (1, "onnxruntime")
    t, = targets(s, _by(s, "cnn/fp32/torch/b1/single-stream"))   # another runtime's FP32 is a candidate too
    assert t.baseline.cell_id == "cnn/fp32/onnxruntime/b1/single-stream" and not t.twin
    t, = targets(s, _by(s, "cnn/int8/onnxruntime/b1/single-stream"))  # the baseline runner's: its own twin
    assert t.twin and t.baseline.cell_id == "cnn/fp32/onnxruntime/b1/single-stream"
    assert targets(s, _by(s, "cnn/fp32/onnxruntime/b1/single-stream")) == []   # the baseline itself
    s = load_suite(_suite(tmp_path, "{runtimes: {baseline: torch}}"))
    t, = targets(s, _by(s, "resnet/int8/onnxruntime/b1/single-stream"))
    assert t.key == "runtime:torch" and t.baseline.cell_id == "resnet/fp32/torch/b1/single-stream"


def test_targets_compare_every_model_with_the_baseline_models_fp32_on_the_same_runner(tmp_path):
    s = load_suite(_suite(tmp_path, "{runtimes: {baseline: onnxruntime}, baseline_model: resnet}"))
    ts = {t.key: t for t in targets(s, _by(s, "cnn/int8/torch/b4/single-stream"))}
    assert set(ts) == {"runtime:onnxruntime", "model:resnet"}
    assert ts["model:resnet"].baseline.cell_id == "resnet/fp32/torch/b4/single-stream"
    assert ts["runtime:onnxruntime"].baseline.cell_id == "cnn/fp32/onnxruntime/b4/single-stream"
    ts = {t.key: t for t in targets(s, _by(s, "resnet/int8/torch/b1/single-stream"))}
    assert ts["model:resnet"].twin and not ts["runtime:onnxruntime"].twin


def test_a_runner_with_an_id_is_named_by_it(tmp_path):
    head = HEAD.replace("  - {name: torch, threads: 1}\n",
                        "  - {name: onnxruntime, threads: 1, id: ort-basic, options: {graph_optimization_level: basic}}\n")
    s = load_suite(_suite(tmp_path, "{runtimes: {baseline: ort-basic}}", head))
    t, = targets(s, _by(s, "cnn/int8/onnxruntime/b1/single-stream"))
    assert t.baseline.cell_id == "cnn/fp32/ort-basic/b1/single-stream"
    assert t.baseline.runner_options == {"graph_optimization_level": "basic"}
    with pytest.raises(UserError, match="two runners are named 'onnxruntime'"):
        load_suite(_suite(tmp_path, "{runtimes: {baseline: onnxruntime}}", head.replace(", id: ort-basic", ", id: x")
                          .replace("  - {name: onnxruntime, threads: 1}\n", "  - {name: onnxruntime, threads: 1, id: y}\n")))


def test_prepared_models_are_checked_again_by_their_inputs():
    from effbench.models.sources import InputDesc, ModelArtifact

    def art(shape, task="classification"):
        return ModelArtifact(model_id="m", source_kind="builtin", onnx_path="m.onnx", onnx_sha256="0",
                             inputs=(InputDesc("x", shape, "float32"),), output_names=("y",), task=task)
    assert input_mismatch(art(["batch", 1, 8, 8]), art(["batch", 1, 8, 8])) is None
    assert input_mismatch(art(["batch", 1, 8, 8]), art(["batch", 64])) == \
        "their inputs differ (x: [1, 64] float32 vs x: [1, 1, 8, 8] float32)"
    assert input_mismatch(art(["batch", 64]), art(["batch", 64], "embedding")) == \
        "their tasks differ (embedding vs classification)"
