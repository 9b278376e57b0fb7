"""Property: any suite file gives a valid suite or exactly one `error:` line and exit 2, never a
traceback or a hang (issue 8). Random YAML documents and random mutations of the shipped suites,
through `effbench validate` in-process."""
from __future__ import annotations

import copy
import os
from datetime import timedelta

import pytest
import yaml
from hardening_util import (
    GOOD_NPZ,
    ROOT,
    TINY_ONNX,
    Tally,
    alias_bomb,
    deep_nest,
    dump,
    get,
    one_error_line,
    paths_of,
    report,
    scalars,
    values,
    watchdog,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from effbench.cli import app as cli

QUICKSTART = (ROOT / "suites" / "quickstart.yaml").read_text()
TINY = (f"name: tiny\nmodels:\n  - id: tiny\n    source: {{onnx: {TINY_ONNX}}}\n"
        f"    inputs: {{x: {{shape: [batch, 16], dtype: float32}}}}\n    dataset: {{npz: {GOOD_NPZ}}}\n"
        "precisions: [fp32, int8-dynamic, {int8: {method: static}}]\nrunners: [{name: onnxruntime, threads: 1}]\n"
        "batch_sizes: [1, 2]\ndevices: [local, raspberry-pi-5]\n"
        "measure: {warmup_s: 0.02, min_time_s: 0.05, max_time_s: 0.3, target_rel_ci: 0.05, memory_limit_mb: 2000}\n"
        "quality: {metric: top1, min_relative: 0.99}\n")
BASES = [QUICKSTART, TINY]

# HARDENING_FUZZ_SCALE=10 runs ten times the examples (a longer hunt); the default keeps CI near 200 cases.
SCALE = float(os.environ.get("HARDENING_FUZZ_SCALE", "1"))
SETTINGS = settings(max_examples=int(100 * SCALE), deadline=timedelta(seconds=5), derandomize=False, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
TALLY = Tally("suite loader (effbench validate)")


@pytest.fixture(scope="module", autouse=True)
def _print_tally():
    yield
    report(TALLY)


def validate(tmp_path, capsys, text: str) -> str | None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    capsys.readouterr()
    with watchdog(20):
        rc = cli.main(["validate", str(path)])
    out = capsys.readouterr()
    line = one_error_line(rc, out.err)
    if line is None:
        assert "ok:" in out.out
    TALLY.add(line)
    return line


# ------------------------------------------------------------------------------------ mutations
@st.composite
def mutated(draw) -> str:
    data = yaml.safe_load(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(paths_of(data))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "unknown_key", "duplicate", "nest", "huge", "negative",
                                   "unicode", "wrong_container"]))
        parent = get(data, path[:-1]) if path else None
        here = get(data, path)
        if op == "replace" and path:
            parent[path[-1]] = draw(values)
        elif op == "delete" and path:
            del parent[path[-1]]
        elif op == "unknown_key" and isinstance(here, dict):
            here[draw(st.sampled_from(["nmae", "model", "batch_size", "extra", "präcision", "💥"]))] = draw(scalars)
        elif op == "duplicate" and isinstance(here, list) and here:
            here.append(copy.deepcopy(here[draw(st.integers(0, len(here) - 1))]))
        elif op == "nest" and path:
            parent[path[-1]] = deep_nest(draw(st.integers(1, 200)))
        elif op == "huge" and path:
            parent[path[-1]] = draw(st.sampled_from([2**31, 2**63, 10**30, 10**400, 1e308, float("inf")]))
        elif op == "negative" and path:
            parent[path[-1]] = draw(st.sampled_from([-1, 0, -2**40, -0.5, float("-inf"), float("nan")]))
        elif op == "unicode" and path:
            parent[path[-1]] = draw(st.text(min_size=1, max_size=30))
        elif op == "wrong_container" and path:
            parent[path[-1]] = {"k": here} if not isinstance(here, dict) else [here]
    return dump(data)


@st.composite
def text_mutated(draw) -> str:
    """Edits of the YAML text itself: truncation, stray characters, duplicate keys, alias bombs."""
    text = draw(st.sampled_from(BASES))
    op = draw(st.sampled_from(["truncate", "insert", "duplicate_key", "bomb", "tabs", "bom", "anchor"]))
    if op == "truncate":
        return text[:draw(st.integers(0, len(text)))]
    if op == "insert":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(["\t", ":", "- ", "&", "*x", "!!binary ", "!!python/name:os.system ",
                                                 "{", "]", "\x00", "\ufeff", "%YAML 1.1\n---\n", "---\n", "...\n",
                                                 "? ", "|", ">"])) + text[at:]
    if op == "duplicate_key":
        return text + draw(st.sampled_from(["name: again\n", "models: []\n", "measure: {}\n"]))
    if op == "bomb":
        return alias_bomb(draw(st.integers(2, 9)), draw(st.integers(2, 12))) + text
    if op == "tabs":
        return text.replace("  ", "\t", draw(st.integers(1, 5)))
    if op == "bom":
        return "\ufeff" + text
    return text.replace("batch_sizes: [1, 32]", "batch_sizes: &b [1, 32]\nextra: *b").replace(
        "batch_sizes: [1, 2]", "batch_sizes: &b [1, 2]\nextra: *b")


@pytest.mark.slow
@SETTINGS
@given(text=mutated())
def test_mutated_shipped_suites(tmp_path, capsys, text):
    validate(tmp_path, capsys, text)


@settings(SETTINGS, max_examples=int(50 * SCALE))
@given(text=text_mutated())
def test_text_mutations(tmp_path, capsys, text):
    validate(tmp_path, capsys, text)


@settings(SETTINGS, max_examples=int(50 * SCALE))
@given(doc=values)
def test_random_documents(tmp_path, capsys, doc):
    assert validate(tmp_path, capsys, dump(doc)) is not None  # a random document is never a valid suite


# ------------------------------------------------------------------------- fixed hostile cases
@pytest.mark.parametrize("text,expect", [
    (alias_bomb(9, 9), "alias bomb"),
    ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nesting"),
    ("x: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", "nesting"),
    ("a: 1\na: 2\n", "duplicate key 'a'"),
    ("!!python/object/apply:os.system ['echo pwned']\n", "unsupported YAML tag"),  # regression: was read as a list
    ("name: s\nmodels: !!set {a: null}\n", "unsupported YAML tag"),
    ("name: !!python/name:os.system s\n", "invalid YAML"),
    ("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\nbatch_sizes: [1e999]\n", "batch_sizes[0]"),
    ("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\nbatch_sizes: [99999999999999999999999]\n",
     "batch_sizes[0]"),
    ("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\nmeasure: {min_time_s: .nan}\n", "min_time_s"),
    ("name: s\nmodels: [{id: m, source: {builtin: mlp}}, {id: m, source: {builtin: mlp}}]\n", "duplicate entry 'm'"),
    ("name: s\nmodels: [{id: \"m\\u0000\", source: {builtin: mlp}}]\n", "models[0].id"),
    ("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\ndevices: [../../../../etc/passwd]\n", None),
    ("name: s\nmodels: [{id: m, source: {onnx: /dev/zero}}]\n", "models[0].source.onnx"),
    ("name: s\nmodels: [{id: m, source: {onnx: /}}]\n", "models[0].source.onnx"),
    ("\xff\xfe", None),
    ("name: s\x00\n", "#x0000 is not allowed"),  # regression: the YAML reader's check escaped as a traceback
    ("name: s\x1b[31m\n", "#x001b is not allowed"),
    ("", "a suite is a YAML mapping"),
    ("2001-02-30\n", None),
    ("name: s\nmodels: [{id: m, source: {builtin: mlp}, dims: {2001-01-01: 3}}]\n", None),
    ("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\nprecisions: [{int8: {method: static}, fp16: {}}]\n",
     "precisions[0]"),
    ("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\nprecisions: [{int8: 5}]\n", "precisions[0]"),
    ("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\nprecisions: [{int8: {method: [1]}}]\n", "precisions[0]"),
    ("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\nprecisions: [{[1]: {}}]\n", "mapping key"),
    ("name: s\nmodels: [{id: m, source: {builtin: mlp}}]\nprecisions: [{null: {}}]\n", "precisions[0]"),
])
def test_hostile_suites(tmp_path, capsys, text, expect):
    line = validate(tmp_path, capsys, text)
    if expect is not None:
        assert line is not None and expect in line, line


def test_invalid_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    rc = cli.main(["validate", str(path)])
    line = one_error_line(rc, capsys.readouterr().err)
    assert line is not None and "not UTF-8" in line


def test_python_tags_never_execute(tmp_path, capsys):
    marker = tmp_path / "pwned"
    for text in (f"!!python/object/apply:os.system ['touch {marker}']\n",
                 f"name: !!python/object/apply:os.system ['touch {marker}']\n",
                 f"name: s\nmodels: [!!python/object/apply:os.system ['touch {marker}']]\n"):
        line = validate(tmp_path, capsys, text)
        assert line is not None and ("unsupported YAML tag" in line or "invalid YAML" in line), line
    assert not marker.exists()
