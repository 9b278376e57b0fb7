from pathlib import Path

import pytest
from ebtest import DATA, ROOT, run_cli

from effbench.config.suite import load_suite
from effbench.errors import UserError

BAD = sorted((DATA / "bad").glob("*.yaml"))


def _header(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines()[:2]:
        key, _, value = line.lstrip("# ").partition(": ")
        out[key] = value
    return out


def test_quickstart_expands_to_cells():
    suite = load_suite(ROOT / "suites" / "quickstart.yaml")
    cells = suite.cells()
    spec = suite.spec
    assert len(cells) == (len(spec.models) * len(suite.precision_choices) * len(spec.runners)
                          * len(spec.batch_sizes) * len(spec.scenarios))
    assert len({c.cell_id for c in cells}) == len(cells)
    only = suite.cells("digits-cnn/*/onnxruntime/b8/*")
    assert only and all(c.model == "digits-cnn" and c.runner == "onnxruntime" and c.batch_size == 8 for c in only)


def test_precision_labels_and_options(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\n"
                 "precisions: [fp32, int8-dynamic, {int8: {method: static, per_channel: false}}]\n")
    suite = load_suite(p)
    labels = [(c.label, c.precision, c.method) for c in suite.precision_choices]
    assert labels == [("fp32", "fp32", None), ("int8-dynamic", "int8", "dynamic"), ("int8-static", "int8", "static")]
    assert suite.choice("int8-static").options == {"per_channel": False}


def test_config_hash_tracks_what_matters(tmp_path):
    text = "name: s\nmodels: [{id: m, source: {builtin: mlp}}]\nmeasure: {min_time_s: 1}\n"
    a = tmp_path / "a.yaml"
    a.write_text(text)
    b = tmp_path / "b.yaml"
    b.write_text(text.replace("min_time_s: 1", "min_time_s: 2"))
    c = tmp_path / "c.yaml"
    c.write_text(text + "# a comment changes the file, not the configuration\n")
    ha, hb, hc = (load_suite(p).config_hash(load_suite(p).cells()[0]) for p in (a, b, c))
    assert ha != hb
    assert ha == hc


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_suite_is_one_line_exit_2(path, capsys, monkeypatch):
    from effbench.cli.app import main
    head = _header(path)
    monkeypatch.chdir(ROOT)
    code = main(["validate", str(path.relative_to(ROOT))])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    assert head["expect"] in lines[0]
    if head["field"]:
        assert f": {head['field']}: " in lines[0]
        assert path.name in lines[0] or ".npz" in lines[0]
        if ".npz" not in lines[0]:
            assert f"{path.name}:" in lines[0] and lines[0].split(path.name + ":")[1].split(":")[0].isdigit(), \
                "the error names the line"


@pytest.mark.spawns
def test_run_refuses_bad_suite_before_measuring(tmp_path):
    out = tmp_path / "out"
    res = run_cli("run", str(DATA / "bad" / "shape_mismatch.yaml"), "-o", str(out), "--quick")
    assert res.returncode == 2
    assert "dimension 1 is 17" in res.stderr and "Traceback" not in res.stderr
    assert not (out / "results.jsonl").exists()


@pytest.mark.spawns
def test_usage_error_exit_2():
    res = run_cli("run")
    assert res.returncode == 2 and "error:" in res.stderr


def test_yaml_bomb_is_an_error(tmp_path):
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    prev = "a"
    for name in "bcdefg":
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
        prev = name
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="alias bomb"):
        load_suite(p)
