"""`device: cuda` on both runtimes, as far as a machine without a GPU can check it: the suite's labels, what
each runtime says when it cannot run on CUDA, that a timed call waits for the device, IOBinding, and the
node placement. The real GPU run is bench/gpu_check.sh (docs/gpu.md)."""
import numpy as np
import pytest

from effbench.runners import Unsupported, get_runner
from effbench.variants import build_variant


def _suite(tmp_path, runners: str):
    from effbench.config.suite import load_suite
    p = tmp_path / "s.yaml"
    p.write_text("name: s\nmodels:\n  - id: m\n    source: {builtin: mlp}\nprecisions: [fp32]\n"
                 f"runners: {runners}\nbatch_sizes: [1]\n")
    return load_suite(p)


def test_cuda_runners_get_their_own_labels_and_cells(tmp_path):
    s = _suite(tmp_path, "[{name: onnxruntime}, {name: onnxruntime, device: cuda}, {name: torch, device: cuda, compile: true}]")
    cells = s.cells()
    assert [c.runner_label for c in cells] == ["onnxruntime", "onnxruntime-cuda", "torch-compile-cuda"]
    assert [c.device for c in cells] == ["cpu", "cuda", "cuda"]
    # a CPU cell's identity is what it was before devices existed: stored results stay current
    assert "device" not in cells[0].to_json() and cells[1].to_json()["device"] == "cuda"


def test_unknown_device_message_names_file_field_and_choices(tmp_path, capsys):
    from effbench.cli.app import main
    p = tmp_path / "s.yaml"
    p.write_text("name: s\nmodels:\n  - id: m\n    source: {builtin: mlp}\nprecisions: [fp32]\n"
                 "runners: [{name: torch, device: gpu}]\nbatch_sizes: [1]\n")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "s.yaml" in err and "runners[0].device" in err and "cuda" in err


def test_ort_without_its_cuda_build_says_what_to_install(tiny_mlp):
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.fail("this check is for machines without onnxruntime-gpu")
    art, cache = tiny_mlp
    v = build_variant(art, "fp32", "fp32", None, {}, cache)
    with pytest.raises(Unsupported, match=r"no CUDAExecutionProvider .*install onnxruntime-gpu"):
        get_runner("onnxruntime").load(v, 1, {"artifact": art.to_json(), "device": "cuda"})


def test_ort_that_falls_back_to_the_cpu_is_unsupported_not_timed_as_cuda(tiny_mlp, monkeypatch):
    """ORT keeps going on the CPU when the CUDA provider's libraries fail to load: that is no CUDA cell."""
    import onnxruntime as ort
    art, cache = tiny_mlp
    v = build_variant(art, "fp32", "fp32", None, {}, cache)
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession",
                        lambda path, sess_options=None, providers=None: real(path, sess_options=sess_options,
                                                                             providers=["CPUExecutionProvider"]))
    with pytest.raises(Unsupported, match="could not start its CUDA provider"):
        get_runner("onnxruntime").load(v, 1, {"artifact": art.to_json(), "device": "cuda"})


def test_ort_bound_call_gives_the_session_outputs(tiny_mlp):
    """The IOBinding path CUDA uses (inputs bound once, outputs synchronized), run on the CPU device."""
    from effbench.runners.onnxruntime import OrtSession
    art, cache = tiny_mlp
    v = build_variant(art, "fp32", "fp32", None, {}, cache)
    sess = get_runner("onnxruntime").load(v, 1, {"artifact": art.to_json()})
    x = np.random.default_rng(1).uniform(size=(3, 64)).astype(np.float32)
    bound = OrtSession(sess.sess, {}, device="cpu")._bound({"x": x})
    first = bound().copy_outputs_to_cpu()[0]
    np.testing.assert_allclose(first, sess.run({"x": x})[0], rtol=1e-6)
    np.testing.assert_array_equal(bound().copy_outputs_to_cpu()[0], first)


def test_ort_placement_counts_each_providers_nodes(tiny_mlp):
    from effbench.runners.onnxruntime import OrtSession
    art, cache = tiny_mlp
    v = build_variant(art, "fp32", "fp32", None, {}, cache)
    sess = get_runner("onnxruntime").load(v, 1, {"artifact": art.to_json()})
    x = np.ones((2, 64), np.float32)
    placed = sess.placement({"x": x})
    assert set(placed["nodes_by_provider"]) == {"CPUExecutionProvider"} and placed["nodes_by_provider"]["CPUExecutionProvider"] > 0
    assert "ops_not_on_cuda" not in placed
    # a CUDA session whose nodes ran on the CPU names their ops
    as_cuda = OrtSession(sess.sess, {}, device="cuda", source=sess.source)
    off = as_cuda.placement({"x": x})
    assert sum(off["ops_not_on_cuda"].values()) == placed["nodes_by_provider"]["CPUExecutionProvider"]


def test_torch_without_a_gpu_says_so(tiny_mlp):
    import torch
    if torch.cuda.is_available():
        pytest.fail("this check is for machines without a CUDA GPU")
    art, cache = tiny_mlp
    v = build_variant(art, "fp32", "fp32", None, {}, cache)
    with pytest.raises(Unsupported, match="sees no CUDA GPU"):
        get_runner("torch").load(v, 1, {"artifact": art.to_json(), "device": "cuda"})


@pytest.mark.parametrize("label, words", [("int8", "quantized modules"), ("int4", "CPU-only")])
def test_torch_variants_with_cpu_only_kernels_are_unsupported_on_cuda(tiny_mlp, monkeypatch, label, words):
    import torch
    art, cache = tiny_mlp
    v = build_variant(art, label, label, None, {}, cache)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(Unsupported, match=words):
        get_runner("torch").load(v, 1, {"artifact": art.to_json(), "device": "cuda"})


def test_torch_cuda_timed_call_waits_for_the_gpu(tiny_mlp, monkeypatch):
    """The clock must stop after the GPU's work: every timed call ends in torch.cuda.synchronize."""
    import torch

    from effbench.runners.torch import TorchSession
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: synced.append(1))
    sess = TorchSession(torch.nn.Linear(4, 2).eval(), {"mode": "eager"}, device="cuda")
    monkeypatch.setattr(sess, "_tensors", lambda feeds: [torch.ones(1, 4)])
    call = sess.timed_call({"x": np.ones((1, 4), np.float32)})
    assert synced == [1]          # the first, checking call
    call()
    call()
    assert synced == [1, 1, 1]
