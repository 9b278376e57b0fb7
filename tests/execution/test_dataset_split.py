"""Quality is out-of-sample: a dataset is split (seeded) into a calibration part and an evaluation part that
share no sample; static int8 calibrates on the first, quality and timed inputs use the second, and the
record says how the split was made."""
from __future__ import annotations

import numpy as np
import pytest

from effbench.config.suite import load_suite
from effbench.errors import UserError
from effbench.execution.figures import VariantFigures
from effbench.execution.run import RunOptions, SuiteRun
from effbench.execution.workers import Outcome
from effbench.models.datasets import Dataset
from effbench.models.sources import InputDesc


def _rows(a: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in a.reshape(len(a), -1)}


def test_a_split_is_seeded_disjoint_and_covers_every_sample():
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    ds = Dataset("d", {"x": x}, np.arange(100) % 10)
    a, b = ds.split(0.3, seed=7), ds.split(0.3, seed=7)
    assert len(a.calibration) == 30 and len(a.evaluation) == 70
    assert not _rows(a.calibration.inputs["x"]) & _rows(a.evaluation.inputs["x"])
    assert _rows(a.calibration.inputs["x"]) | _rows(a.evaluation.inputs["x"]) == _rows(x)
    assert np.array_equal(a.calibration.inputs["x"], b.calibration.inputs["x"])   # seeded
    assert not np.array_equal(a.calibration.inputs["x"], ds.split(0.3, seed=8).calibration.inputs["x"])
    # labels travel with their samples
    assert np.array_equal(a.evaluation.labels, a.evaluation.inputs["x"][:, 0].astype(int) % 10)
    assert a.describe() == {"seed": 7, "calibration_fraction": 0.3, "calibration_samples": 30,
                            "evaluation_samples": 70, "overlap": 0}
    with pytest.raises(ValueError, match="need 2 or more"):
        Dataset("one", {"x": x[:1]}, None).split(0.5, 0)


SUITE = """name: split
models:
  - id: cnn
    source: {builtin: digits-cnn}
    dataset: {builtin: digits, split: {calibration: 0.25, seed: 3}}
precisions: [fp32, int8-static]
runners: [{name: onnxruntime, threads: 1}]
batch_sizes: [4]
quality: {metric: top1}
devices: []
"""


def test_static_int8_calibrates_on_samples_quality_never_scores(tmp_path, monkeypatch):
    p = tmp_path / "s.yaml"
    p.write_text(SUITE)
    suite = load_suite(p)
    run = SuiteRun(suite, RunOptions(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False), [])
    run.logs.mkdir(parents=True)
    art = type("Art", (), {"inputs": [InputDesc(name="x", shape=["batch", 1, 8, 8], dtype="float32")], "dims": {},
                           "to_json": lambda self: {}})()
    run.datasets = run._datasets({"cnn": art})
    split = run.datasets["cnn"]
    assert len(split.calibration) + len(split.evaluation) == 360 and split.describe()["seed"] == 3
    payloads = {}

    def worker(target, payload, **kw):
        payloads[target] = payload
        return Outcome("failed", reason="not built in this test")

    monkeypatch.setattr("effbench.execution.run.run_in_worker", worker)
    choice = next(c for c in suite.precision_choices if c.label == "int8-static")
    run._build_choice(art, "cnn", choice, type("P", (), {"start": lambda self, what: None})(), split)
    calibrated = payloads["effbench.execution.tasks:build_variant"]["calibration"]["x"]
    scored = VariantFigures(run)._quality_payload(suite.cells()[0], art)["inputs"]["x"]
    assert len(calibrated) and len(scored) == len(split.evaluation)
    assert not _rows(calibrated) & _rows(scored)   # was: both the dataset's first samples


def test_a_dataset_too_small_to_split_is_one_line(tmp_path):
    np.savez(tmp_path / "one.npz", inputs=np.zeros((1, 64), np.float32), labels=np.zeros(1, np.int64))
    p = tmp_path / "s.yaml"
    p.write_text(SUITE.replace("source: {builtin: digits-cnn}", "source: {builtin: mlp}")
                 .replace("{builtin: digits, split: {calibration: 0.25, seed: 3}}", "{npz: one.npz}"))
    suite = load_suite(p)
    run = SuiteRun(suite, RunOptions(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False), [])
    art = type("Art", (), {"inputs": [InputDesc(name="x", shape=["batch", 64], dtype="float32")], "dims": {}})()
    with pytest.raises(UserError) as e:
        run._datasets({"cnn": art})
    assert e.value.field == "models[0].dataset" and "2 or more" in e.value.one_line() and e.value.fix
