"""The gate end to end, as CI uses it: real models, real workers, the `effbench` command and its exit codes.

The planted slowdown is the same network with extra heavy ops (6 -> 8 MatMul layers: +33% work), measured
in A/B mode, whose paired blocks cancel this machine's speed flips (docs/runtime-notes.md).
"""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from ebtest import run_cli
from onnx import TensorProto, helper, numpy_helper

from effbench.results.store import load

WIDTH = 512
ROUNDS = "9"   # the signed-rank test's smallest p with 9 rounds is 2/512 < 0.01 for one cell


def mlp_onnx(path: Path, layers: int) -> Path:
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def suite(tmp: Path, name: str, layers: int) -> Path:
    model = mlp_onnx(tmp / f"{name}.onnx", layers)
    p = tmp / f"{name}.yaml"
    p.write_text(f"""name: {name}
models:
  - id: net
    source: {{onnx: {model}}}
precisions: [fp32]
runners: [{{name: onnxruntime, threads: 1}}]
batch_sizes: [8]
devices: [generic-x86-server-core]
quality: {{metric: cosine}}
measure: {{warmup_s: 0.05, min_time_s: 0.2, max_time_s: 0.5, target_rel_ci: 0.05}}
""")
    return p


def latency_verdicts(out: Path) -> set[str]:
    """Verdicts of the latency.median rows of the run's verdict.md (a regression is listed twice)."""
    rows = [ln.split("|") for ln in (out / "verdict.md").read_text().splitlines() if "| latency.median |" in ln]
    assert rows
    return {r[9].strip().strip("*") for r in rows}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gate")
    base, slow = suite(tmp, "base", 6), suite(tmp, "slow", 8)
    cache = str(tmp / "cache")
    common = ("--rounds", ROUNDS, "--cache-dir", cache, "--no-report", "--no-progress")
    ab = run_cli("run", str(slow), "--ab", str(base), "-o", str(tmp / "ab"), *common)
    aa = run_cli("run", str(base), "--ab", str(base), "-o", str(tmp / "aa"), *common)
    return tmp, ab, aa


@pytest.mark.slow
def test_ab_mode_flags_a_planted_slowdown_from_extra_ops(stores):
    tmp, ab, _ = stores
    assert ab.returncode == 1, ab.stdout[-2000:] + ab.stderr[-2000:]
    assert latency_verdicts(tmp / "ab") == {"regressed"}
    rec, = load(tmp / "ab" / "results.jsonl").records
    # every round's ratio comes from alternating blocks in one worker, and (all but at most one, which
    # the signed-rank test tolerates at 9 rounds) saw the extra ops
    assert len(rec.paired_ratios) == int(ROUNDS)
    assert sum(q > 1.05 for q in rec.paired_ratios) >= len(rec.paired_ratios) - 1
    assert 1.15 < float(np.median(rec.paired_ratios)) < 1.6   # 8/6 of the work, give or take overheads


@pytest.mark.slow
def test_ab_mode_same_model_on_both_sides_passes(stores):
    tmp, _, aa = stores
    assert aa.returncode == 0, aa.stdout[-2000:] + aa.stderr[-2000:]
    assert "regressed" not in latency_verdicts(tmp / "aa")
    rec, = load(tmp / "aa" / "results.jsonl").records
    assert len(rec.paired_ratios) == int(ROUNDS)


@pytest.mark.spawns
@pytest.mark.slow
def test_compare_command_exit_codes(stores):
    tmp = stores[0]
    base, new = tmp / "ab" / "base", tmp / "ab"
    worse = run_cli("compare", str(base), str(new))
    assert worse.returncode == 1            # at least the 33% larger model regresses `size:0%`
    assert "REGRESSED" in worse.stdout
    same = run_cli("compare", str(base), str(base / "results.jsonl"), "--format", "json")
    assert same.returncode == 0
    assert json.loads(same.stdout)["summary"]["counts"].get("regressed", 0) == 0
    missing = run_cli("compare", str(tmp / "nowhere"), str(new))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and missing.stderr.startswith("error:")
    assert "Traceback" not in missing.stderr
    bad_rule = run_cli("compare", str(base), str(new), "--rule", "latency.median:fast")
    assert bad_rule.returncode == 2 and "--rule" in bad_rule.stderr and "Traceback" not in bad_rule.stderr


@pytest.mark.spawns
@pytest.mark.slow
def test_run_with_baseline_gates_in_one_step(stores):
    tmp = stores[0]
    res = run_cli("run", str(tmp / "slow.yaml"), "--baseline", str(tmp / "ab" / "base"), "-o", str(tmp / "again"),
                  "--cache-dir", str(tmp / "cache"), "--no-report", "--no-progress")
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    assert "size" in res.stdout and "REGRESSED" in res.stdout
