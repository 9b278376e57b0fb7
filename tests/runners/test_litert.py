"""The LiteRT runner on the builtin digits-cnn, with the real converter (litert-torch in `make litert-env`'s
venv, run as a subprocess) and the real interpreter (ai-edge-litert, XNNPACK). `make test` installs both;
nothing here skips when they are missing."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from effbench.runners.base import Unsupported
from effbench.runners.litert import MISSING, LiteRTOptions, LiteRTRunner, find_converter
from effbench.variants import Variant, build_variant

# XNNPACK's f32 kernels sum the convolutions' and the 512-long dot products in another order than torch's:
# a few float32 ulps on logits of order 1-10 (about 1e-6 here), far below 1e-4.
FP32_ATOL = 1e-4
# each build runs the converter venv's python (litert-torch's import alone is ~4 s)
SPAWNS = pytest.mark.spawns


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("litert-cache")


@pytest.fixture(scope="module")
def cnn(cache):
    from effbench.config.suite import ModelSpec
    from effbench.models.sources import prepare
    spec = ModelSpec.model_validate({"id": "digits-cnn", "source": {"builtin": "digits-cnn"}})
    return prepare(spec, 0, base_dir=Path(__file__).parent, suite_file="t.yaml", cache_dir=cache)


def _digits(n: int, part: str) -> np.ndarray:
    from effbench.models.zoo import digits_split
    xtr, _, xte, _ = digits_split()
    return np.ascontiguousarray((xtr if part == "train" else xte)[:n].reshape(-1, 1, 8, 8))


def _load(art, cache, label, calibration=None, **kw):
    precision, _, method = label.partition("-")
    v = build_variant(art, label, precision, method or None, {}, cache, calibration=calibration)
    return LiteRTRunner().load(v, 2, {"artifact": art.to_json(), **kw})


def _torch(art, x: np.ndarray) -> np.ndarray:
    import torch

    from effbench.models.sources import build_torch_module
    with torch.inference_mode():
        return build_torch_module(art)(torch.from_numpy(x)).numpy()


def test_the_converter_env_is_installed():
    """`make test` depends on `make litert-env`: a missing converter is a broken install, not a skip."""
    conv = find_converter()
    assert conv is not None, MISSING
    assert conv["litert_torch"] == "0.10.0" and conv["torch"].startswith("2.13.0")


@SPAWNS
def test_fp32_matches_torch_fully_delegated_and_cached(cnn, cache, monkeypatch):
    from effbench.runners import litert
    monkeypatch.setattr(litert, "EXPORT_IN_A_PROCESS", True)   # as in a measuring worker, where torch is not loaded
    x = _digits(4, "test")
    sess = _load(cnn, cache, "fp32")
    np.testing.assert_allclose(sess.run({"x": x})[0], _torch(cnn, x), atol=FP32_ATOL, rtol=0)
    info = sess.info
    assert "torch.export in a process of its own" in info["built"]["cache"]
    assert (Path(info["built"]["cache"].rpartition(" ")[2]).parent / "export.log").is_file()
    assert info["built"]["cache"].startswith("built for this worker") and info["built"]["max_rel_err_vs_torch"] < 1e-5
    assert str(Path(info["built"]["cache"].rpartition(" ")[2]).parent).startswith(str(cache / "litert"))
    d = info["delegation"]
    assert d["fraction"] == 1.0 and d["not_delegated"] == {} and d["subgraphs"] == 1
    assert d["by_operator"]["CONV_2D"] == {"delegated": 1, "not_delegated": 0}
    assert d["by_operator"]["FULLY_CONNECTED"] == {"delegated": 2, "not_delegated": 0}
    assert info["threads"] == 2 and info["program_for"] == {"x": [4, 1, 8, 8]}
    assert info["weight_elements_by_type"]["FLOAT32"] == sum(p.numel() for p in _params(cnn))   # + shape constants
    assert set(info["compute"]) == {"CONV_2D: FLOAT32 x FLOAT32", "DEPTHWISE_CONV_2D: FLOAT32 x FLOAT32",
                                    "FULLY_CONNECTED: FLOAT32 x FLOAT32"}
    call = sess.timed_call({"x": x})
    call()
    # the same build again (another worker would do this): read from the cache, no conversion
    again = _load(cnn, cache, "fp32")
    np.testing.assert_array_equal(again.run({"x": x})[0], sess.run({"x": x})[0])
    assert again.info["built"]["cache"].startswith("read from")
    # without the default delegate: LiteRT's builtin kernels on the same .tflite
    plain = _load(cnn, cache, "fp32", runner_options=LiteRTOptions(xnnpack=False))
    np.testing.assert_allclose(plain.run({"x": x})[0], _torch(cnn, x), atol=FP32_ATOL, rtol=0)
    assert plain.info["delegation"]["fraction"] == 0.0 and plain.info["delegation"]["subgraphs"] == 0


def _params(art):
    from effbench.models.sources import build_torch_module
    return list(build_torch_module(art).parameters())


@SPAWNS
def test_int8_static_is_full_integer_calibrated_on_the_split(cnn, cache):
    calib = {"x": _digits(64, "train")}
    x = _digits(64, "test")
    sess = _load(cnn, cache, "int8-static", calibration=calib)
    out, want = sess.run({"x": x})[0], _torch(cnn, x)
    built = sess.info["built"]
    assert built["tool"].startswith("PT2EQuantizer")
    assert built["calibration_inputs"].startswith("the model's calibration")
    assert built["max_rel_err_vs_torch"] < 0.05   # against the same PT2E-quantized module in torch
    assert sess.info["io"]["serving_default_args_0"].startswith("int8 (scale")
    assert sess.info["weight_elements_by_type"].get("INT8", 0) > 30_000
    assert all(" INT8 x INT8" in k for k in sess.info["compute"])
    assert sess.info["delegation"]["fraction"] == 1.0
    assert (out.argmax(1) == want.argmax(1)).mean() >= 0.95


@SPAWNS
def test_int8_dynamic_records_what_xnnpack_left(cnn, cache):
    x = _digits(4, "test")
    sess = _load(cnn, cache, "int8-dynamic")
    out = sess.run({"x": x})[0]
    d = sess.info["delegation"]
    assert 0 < d["fraction"] < 1 and d["total_ops"] - d["delegated_ops"] == sum(d["not_delegated"].values())
    assert d["subgraphs"] >= 2   # the op XNNPACK did not take splits the graph
    assert np.abs(out - _torch(cnn, x)).max() < 0.05 * np.abs(_torch(cnn, x)).max()


@SPAWNS
@pytest.mark.parametrize("label, stored, compute", [
    ("fp16", "FLOAT16", "FULLY_CONNECTED: FLOAT32 x FLOAT32 (dequantized from FLOAT16)"),
    ("int4", "INT4", "FULLY_CONNECTED: FLOAT32 x INT4"),
])
def test_weight_recipes_store_what_they_say(cnn, cache, label, stored, compute):
    x = _digits(4, "test")
    sess = _load(cnn, cache, label)
    out, want = sess.run({"x": x})[0], _torch(cnn, x)
    assert sess.info["weight_elements_by_type"].get(stored, 0) > 30_000   # the 512x64 layer at least
    assert sess.info["compute"][compute] == 2
    assert sess.info["delegation"]["fraction"] == 1.0
    assert sess.info["built"]["min_cosine_vs_fp32"] > 0.98
    assert (out.argmax(1) == want.argmax(1)).all()


@SPAWNS
def test_bf16_is_unsupported_with_the_converters_reason_and_cached(cnn, cache):
    x = _digits(4, "test")
    with pytest.raises(Unsupported, match="litert-torch 0.10.0 could not build bf16 .*BFloat16"):
        _load(cnn, cache, "bf16").run({"x": x})
    with pytest.raises(Unsupported, match=r"BFloat16.*\(cached: "):
        _load(cnn, cache, "bf16").run({"x": x})
    # another batch: the plan's refusal holds for it without another conversion, and says where it came from
    with pytest.raises(Unsupported, match=r"refused for x: \[4, 1, 8, 8\]; not retried.*\(cached: "):
        _load(cnn, cache, "bf16").run({"x": x[:2]})


def test_a_missing_converter_is_unsupported_naming_make_litert_env(cnn, cache, monkeypatch, tmp_path):
    monkeypatch.setenv("EFFBENCH_LITERT_PYTHON", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(Unsupported) as e:
        _load(cnn, cache, "fp32")
    assert "make litert-env" in str(e.value) and "\n" not in str(e.value)


def test_precisions_and_methods_it_does_not_build(cnn, cache):
    s = LiteRTRunner().supports(Variant(model_id="m", label="ternary", precision="ternary", method=None))
    assert not s.ok and "ternary" in s.reason and "fp32, fp16, bf16, int8, int4" in s.reason
    s = LiteRTRunner().supports(Variant(model_id="m", label="mixed", precision="mixed", method=None))
    assert not s.ok
    v = build_variant(cnn, "int4", "int4", None, {"symmetric": False}, cache)
    with pytest.raises(Unsupported, match="symmetrically only"):
        LiteRTRunner().load(v, 1, {"artifact": cnn.to_json()})
    v = Variant(model_id="digits-cnn", label="int8-static", precision="int8", method="static")   # no calibration kept
    with pytest.raises(Unsupported, match="needs the model's calibration inputs"):
        LiteRTRunner().load(v, 1, {"artifact": cnn.to_json()})


def test_options_are_validated_and_a_missing_extra_is_named(tmp_path, monkeypatch):
    from pydantic import ValidationError

    from effbench.config.suite import load_suite
    from effbench.errors import UserError
    with pytest.raises(ValidationError):
        LiteRTOptions(fp16_scheme="half")
    with pytest.raises(ValidationError):
        LiteRTOptions.model_validate({"threads": 2})
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nmodels:\n  - id: m\n    source: {builtin: mlp}\nprecisions: [fp32]\n"
                     "runners:\n  - {name: litert, threads: 1}\n")
    assert [r.name for r in load_suite(suite).spec.runners] == ["litert"]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ai_edge_litert" else real(name, *a))
    with pytest.raises(UserError) as e:
        load_suite(suite)
    assert "ai-edge-litert" in e.value.one_line() and "pip install -e .[litert]" in e.value.one_line()
