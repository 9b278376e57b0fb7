import numpy as np
import pytest

from effbench.runners import Unsupported, get_runner
from effbench.variants import Variant, build_variant


def test_fp32_matches_the_module(tiny_mlp):
    import torch
    art, cache = tiny_mlp
    v = build_variant(art, "fp32", "fp32", None, {}, cache)
    sess = get_runner("torch").load(v, 1, {"artifact": art.to_json(), "compile": False})
    x = np.random.default_rng(0).uniform(size=(5, 64)).astype(np.float32)
    import tinynets
    with torch.inference_mode():
        want = tinynets.mlp()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sess.run({"x": x})[0], want, rtol=1e-6)
    assert sess.info["mode"] == "eager" and sess.info["threads"] == 1
    call = sess.timed_call({"x": x})
    assert call().shape == (5, 10)


def test_saved_variants_load_on_a_meta_skeleton(tiny_mlp):
    art, cache = tiny_mlp
    for label in ("bf16", "int8", "int4", "binary"):
        v = build_variant(art, label, label, None, {}, cache)
        sess = get_runner("torch").load(v, 1, {"artifact": art.to_json(), "compile": False})
        assert sess.info["built"].startswith("skeleton on the meta device"), (label, sess.info["built"])
        out = sess.run({"x": np.ones((2, 64), np.float32)})[0]
        assert out.dtype == np.float32 and out.shape == (2, 10) and np.isfinite(out).all()
    bf = build_variant(art, "bf16", "bf16", None, {}, cache)
    m = get_runner("torch").load(bf, 1, {"artifact": art.to_json(), "compile": False}).module
    import torch
    assert next(m.parameters()).dtype == torch.bfloat16


def test_onnx_only_model_is_unsupported_with_reason(tiny_mlp):
    art, cache = tiny_mlp
    from dataclasses import replace
    onnx_only = replace(art, source_kind="onnx", torch_factory=None, onnx_sha256="other")
    v = build_variant(onnx_only, "fp32", "fp32", None, {}, cache)
    s = get_runner("torch").supports(v)
    assert not s.ok and "onnx: model has no torch module" in s.reason


def test_unknown_transform_is_unsupported(tiny_mlp):
    art, _ = tiny_mlp
    v = Variant(model_id="m", label="x", precision="fp32", method=None, torch={"transform": "int3"})
    with pytest.raises(Unsupported, match="int3"):
        get_runner("torch").load(v, 1, {"artifact": art.to_json(), "compile": False})
