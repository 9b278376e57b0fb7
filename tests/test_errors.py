"""Reasons name no folder of this machine: a path under the variant cache by its cache-relative name, one
under the suite's folder as the user gave it, else relative to the working folder or from '~'."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from effbench.errors import gist, short_paths


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "home" / "ann"
    h.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.chdir(tmp_path)
    return h


def test_paths_become_cache_relative_suite_relative_or_home_relative(home, tmp_path):
    cache, suite = home / ".cache" / "effbench", tmp_path / "proj"
    roots = [(cache, "<cache>"), (suite, "")]
    text = (f"Load model from {cache}/variants/cnn-int8-ab12/model.onnx failed; see {suite}/models/net.onnx, "
            f"{home}/data/x.npz, {tmp_path}/other.onnx and {tmp_path}x/y.onnx")
    assert short_paths(text, roots) == ("Load model from <cache>/variants/cnn-int8-ab12/model.onnx failed; see "
                                        "models/net.onnx, ~/data/x.npz, other.onnx and "
                                        f"{tmp_path}x/y.onnx")  # /a/b is no prefix of /a/bx
    # a reason a worker already shortened to ~/... still gets its cache-relative name
    assert short_paths("from ~/.cache/effbench/variants/v/m.onnx", roots) == "from <cache>/variants/v/m.onnx"
    assert short_paths(f"in {cache}", roots) == "in <cache>" and short_paths(str(suite), roots) == "."


def test_gist_shortens_before_it_cuts(home):
    deep = home / ("d" * 240) / "model.onnx"
    message = f"cannot read {deep}: permission denied"
    assert len(message) > 300  # cut first, the line would lose its end
    line = gist(OSError(message))
    assert line == f"OSError: cannot read ~/{'d' * 240}/model.onnx: permission denied"


def test_runners_reasons_name_no_folder_of_this_machine(home):
    """ONNX Runtime's "Load model from /home/.../model.onnx failed" and torch's errors, as runners report them."""
    from effbench.runners.onnxruntime import OnnxRuntimeRunner
    from effbench.runners.torch import _first_line
    graph = home / ".cache" / "effbench" / "variants" / "cnn-bf16-ab12" / "model.onnx"
    graph.parent.mkdir(parents=True)
    graph.write_bytes(b"not a graph")
    from effbench.runners import Unsupported
    with pytest.raises(Unsupported) as e:
        OnnxRuntimeRunner().load(SimpleNamespace(onnx_path=str(graph), label="bf16"), 1, {})
    assert "~/.cache/effbench/variants/cnn-bf16-ab12/model.onnx" in str(e.value) and str(home) not in str(e.value)
    assert _first_line(FileNotFoundError(f"no such file: {graph}")) == \
        "no such file: ~/.cache/effbench/variants/cnn-bf16-ab12/model.onnx"
