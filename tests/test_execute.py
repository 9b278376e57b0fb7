"""Isolation, faults, resume and locking of `effbench run` (end-to-end: real workers, real runtimes)."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from ebtest import DATA, HELPERS, ROOT, run_cli

from effbench.errors import UserError
from effbench.execution.progress import OutputLock
from effbench.execution.workers import run_in_worker
from effbench.results.store import load

QUICK = "measure: {warmup_s: 0.02, min_time_s: 0.05, max_time_s: 0.3, target_rel_ci: 0.05}\n"


@pytest.fixture
def helpers_on_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(HELPERS) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.spawns
def test_worker_returns_value(helpers_on_path):
    out = run_in_worker("faultmodels:echo", {"value": {"a": [1, 2]}}, timeout_s=60)
    assert out.kind == "ok" and out.value == {"a": [1, 2]}


@pytest.mark.spawns
def test_worker_crash_is_a_failure_with_the_signal(helpers_on_path):
    out = run_in_worker("faultmodels:abort", {}, timeout_s=60)
    assert out.kind == "failed" and "SIGABRT" in out.reason


@pytest.mark.spawns
def test_worker_timeout_is_a_failure(helpers_on_path):
    t0 = time.monotonic()
    out = run_in_worker("faultmodels:hang", {}, timeout_s=3)
    assert out.kind == "failed" and "timed out after 3 s" in out.reason
    assert time.monotonic() - t0 < 60


@pytest.mark.spawns
def test_worker_memory_limit_is_a_failure(helpers_on_path):
    out = run_in_worker("faultmodels:allocate", {"mb": 4000}, timeout_s=60, memory_limit_mb=1500)
    assert out.kind == "failed" and "out of memory" in out.reason


@pytest.mark.spawns
def test_worker_user_error_comes_back_whole(helpers_on_path):
    out = run_in_worker("faultmodels:user_error", {}, timeout_s=60)
    assert out.kind == "user_error" and isinstance(out.value, UserError)
    assert out.value.one_line() == "x.yaml:3: a.b: bad thing; do better"


def tiny_suite(tmp_path: Path, batch_sizes="[1, 2]", extra="") -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(f"""name: tiny
models:
  - id: tiny
    source: {{onnx: {DATA / 'models' / 'tiny.onnx'}}}
    dataset: {{npz: {DATA / 'models' / 'good.npz'}}}
precisions: [fp32]
runners: [{{name: onnxruntime, threads: 1}}]
batch_sizes: {batch_sizes}
devices: [generic-x86-server-core]
{QUICK}{extra}""")
    return p


@pytest.mark.spawns
def test_run_end_to_end_writes_complete_records(tmp_path, cache_dir):
    out = tmp_path / "out"
    res = run_cli("run", str(tiny_suite(tmp_path)), "-o", str(out), "--cache-dir", str(cache_dir), "--no-report")
    assert res.returncode == 0, res.stderr
    assert "tiny/fp32/onnxruntime/b1/single-stream" in res.stdout  # the summary table
    results = load(out)
    assert len(results) == 2 and all(r.ok for r in results)
    r = results.by_id()["tiny/fp32/onnxruntime/b2/single-stream"]
    assert r.latency_ms.n >= 16 and r.latency_ms.ci[0] <= r.latency_ms.median <= r.latency_ms.ci[1]
    assert r.latency_ms.first_call is not None and r.samples_ms
    assert r.memory.peak_rss_bytes >= r.memory.baseline_rss_bytes > 0
    assert r.memory.model_bytes == (DATA / "models" / "tiny.onnx").stat().st_size
    assert r.model_stats.macs == 2 * 16 * 8          # batch 2 x MatMul 16 -> 8
    assert r.energy.source in ("measured:rapl", "modeled:local") or r.energy.source is None
    assert r.variant.runtime["intra_op_num_threads"] == 1
    p = r.provenance
    assert p.suite_sha256 and p.speed_index["gflops"] > 0 and p.packages["onnxruntime"]
    assert p.host["cores_logical"] >= 1
    # default measure settings: several rounds, each a fresh worker; the headline CI is over them
    from effbench.config.suite import MeasureSpec
    n = MeasureSpec().rounds
    assert n >= 3 and r.rounds == n and len(r.round_medians_ms) == n and r.latency_ms.ci_scope == "between rounds"
    assert min(r.round_medians_ms) <= r.latency_ms.median <= max(r.round_medians_ms)
    # the headline CI is the one over these round medians (a 95% CI need not span their range: with 5
    # tight rounds it can be narrower on one side, so that is not asserted)
    from effbench.measure.stats import over_rounds
    est = over_rounds(r.round_medians_ms)
    assert r.latency_ms.ci == pytest.approx((est.lo, est.hi)) and r.latency_ms.median == pytest.approx(est.value)
    assert r.comparison is None and r.drift.threshold == 0.10 and len(r.drift.rounds) == n
    raw = [x for x in results.raw if x.cell_id == r.cell_id]
    for x in raw:  # each round's throughput is its own inferences over its own timed window
        assert x.throughput_ips == pytest.approx(2 * x.latency_ms.calls / x.latency_ms.elapsed_s)
    assert r.throughput_ips == sorted(x.throughput_ips for x in raw)[n // 2]  # the median round
    assert sum(x.memory is not None for x in raw) == 1                  # measured once, in its own worker


@pytest.mark.spawns
def test_rounds_interleave_and_merge(tmp_path, cache_dir):
    out = tmp_path / "out"
    res = run_cli("run", str(tiny_suite(tmp_path)), "-o", str(out), "--cache-dir", str(cache_dir), "--rounds", "3",
                  "--no-report", "--no-progress")
    assert res.returncode == 0, res.stderr
    raw = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["cell_id"].split("/")[3], r["round"]) for r in raw] == [
        ("b1", 0), ("b2", 0), ("b1", 1), ("b2", 1), ("b1", 2), ("b2", 2)]  # A B, A B, A B
    merged = load(out)
    assert all(len(r.round_medians_ms) == 3 for r in merged)


@pytest.mark.spawns
def test_resume_skips_finished_cells(tmp_path, cache_dir):
    out = tmp_path / "out"
    suite = tiny_suite(tmp_path)
    assert run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir), "--only", "*/b1/*",
                   "--no-report").returncode == 0
    res = run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir), "--resume", "--no-report")
    assert res.returncode == 0, res.stderr
    assert "5 finished cell-rounds already" in res.stderr  # b1's five rounds
    ids = [json.loads(line)["cell_id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(ids) == ["tiny/fp32/onnxruntime/b1/single-stream"] * 5 + ["tiny/fp32/onnxruntime/b2/single-stream"] * 5


@pytest.mark.spawns
def test_rerun_without_resume_keeps_the_old_store(tmp_path, cache_dir):
    out = tmp_path / "out"
    suite = tiny_suite(tmp_path, batch_sizes="[1]")
    for _ in range(2):
        assert run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir), "--no-report").returncode == 0
    assert len(list(out.glob("results.*.jsonl"))) == 1  # the first run's store, renamed, not lost


@pytest.mark.spawns
def test_second_run_into_same_folder_refuses(tmp_path, cache_dir):
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / ".effbench.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242\n")
    try:
        res = run_cli("run", str(tiny_suite(tmp_path)), "-o", str(out), "--cache-dir", str(cache_dir))
    finally:
        os.close(fd)
    assert res.returncode == 2
    assert "another effbench run (pid 4242) is writing to this folder" in res.stderr


def test_stale_lock_of_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".effbench.lock").write_text("999999\n")  # left behind by a killed run: no flock held
    with OutputLock(out):
        assert (out / ".effbench.lock").read_text().strip() == str(os.getpid())


@pytest.mark.spawns
def test_sigkill_then_resume_loses_nothing(tmp_path, cache_dir):
    out = tmp_path / "out"
    suite = tiny_suite(tmp_path, batch_sizes="[1, 2, 3, 4]")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "effbench", "run", str(suite), "-o", str(out), "--cache-dir",
                             str(cache_dir), "--no-report", "--no-progress"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = out / "results.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (store.exists() and store.read_text().count("\n") >= 1):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = [json.loads(line)["cell_id"] for line in store.read_text().splitlines() if line.strip()]
    assert 1 <= len(before) < 20  # 4 cells x 5 rounds
    res = run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir), "--resume", "--no-report")
    assert res.returncode == 0, res.stderr
    after = [(r["cell_id"], r["round"]) for r in map(json.loads, store.read_text().splitlines()) if r]
    assert len(set(after)) == len(after) == 20  # every cell and round exactly once
    assert [c for c, _ in after[:len(before)]] == before


@pytest.mark.slow
def test_crash_and_hang_cells_fail_alone(tmp_path, cache_dir):
    suite = tmp_path / "faulty.yaml"
    suite.write_text(f"""name: faulty
models:
  - id: faulty
    source: {{torch: "faultmodels:faulty"}}
    inputs: {{x: {{shape: [batch, 16], dtype: float32}}}}
    export: {{exporter: legacy}}
precisions: [fp32]
runners: [{{name: torch, threads: 1}}]
batch_sizes: [1, 3, 5]
devices: []
{QUICK}""")
    (tmp_path / "faultmodels.py").write_text((HELPERS / "faultmodels.py").read_text())
    out = tmp_path / "out"
    res = run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir), "--timeout", "20", "--no-report")
    assert res.returncode == 1, res.stderr  # failed cells: exit 1, after finishing the others
    by = load(out).by_id()
    assert by["faulty/fp32/torch/b1/single-stream"].ok
    assert by["faulty/fp32/torch/b3/single-stream"].status == "failed"
    assert "SIGABRT" in by["faulty/fp32/torch/b3/single-stream"].reason
    assert by["faulty/fp32/torch/b5/single-stream"].status == "failed"
    assert "timed out" in by["faulty/fp32/torch/b5/single-stream"].reason
    # a cell that crashed or hung its worker is not run again in later rounds (the others are timed
    # together again), and its later records say so
    raw = [r for r in load(out).raw if r.cell_id == "faulty/fp32/torch/b3/single-stream"]
    assert len(raw) == 5 and all(r.status == "failed" for r in raw)
    assert all("not run again" in r.reason and "SIGABRT" in r.reason for r in raw[1:])
    assert all(r.ok for r in load(out).raw if r.cell_id == "faulty/fp32/torch/b1/single-stream")


@pytest.mark.spawns
@pytest.mark.parametrize("factory,message", [("faultmodels:raises", "factory exploded"),
                                             ("faultmodels:not_a_module", "not a torch.nn.Module"),
                                             ("faultmodels:missing", "has no callable 'missing'"),
                                             ("nosuchmodule:build", "cannot import module 'nosuchmodule'")])
def test_bad_torch_factory_is_one_line_exit_2(tmp_path, cache_dir, factory, message):
    (tmp_path / "faultmodels.py").write_text((HELPERS / "faultmodels.py").read_text())
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: s\nmodels:\n  - id: m\n    source: {{torch: \"{factory}\"}}\n"
                     f"    inputs: {{x: {{shape: [batch, 16]}}}}\ndevices: []\n{QUICK}")
    res = run_cli("run", str(suite), "-o", str(tmp_path / "out"), "--cache-dir", str(cache_dir))
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and "s.yaml:4: models[0].source" in res.stderr


@pytest.mark.spawns
def test_torch_source_runs_on_both_runtimes(tmp_path, cache_dir):
    (tmp_path / "faultmodels.py").write_text((HELPERS / "faultmodels.py").read_text())
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: s\nmodels:\n  - id: small\n    source: {{torch: \"faultmodels:small\"}}\n"
                     f"    inputs: {{x: {{shape: [batch, 16]}}}}\nrunners: [{{name: onnxruntime}}, {{name: torch}}]\n"
                     f"devices: []\n{QUICK}")
    out = tmp_path / "out"
    res = run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir), "--no-report")
    assert res.returncode == 0, res.stderr
    by = load(out).by_id()
    ort, pt = by["small/fp32/onnxruntime/b1/single-stream"], by["small/fp32/torch/b1/single-stream"]
    assert ort.ok and pt.ok
    assert ort.variant.build["tool"] == "torch.onnx.export(dynamo)" and ort.variant.build["opset"] >= 17
    assert ort.model_stats.macs == pt.model_stats.macs == 16 * 32 + 32 * 4


@pytest.mark.spawns
def test_static_int8_without_dataset_is_one_line_exit_2(tmp_path, cache_dir):
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: s\nmodels:\n  - id: tiny\n    source: {{onnx: {DATA / 'models' / 'tiny.onnx'}}}\n"
                     f"precisions: [int8-static]\ndevices: []\n{QUICK}")
    out = tmp_path / "out"
    res = run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir))
    assert res.returncode == 2, res.stdout + res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "precisions" in line and "dataset" in line and "Traceback" not in res.stderr


@pytest.mark.spawns
def test_every_variant_is_paired_with_its_fp32_twin_even_when_only_it_runs(tmp_path, cache_dir):
    """--only fp16: the FP32 twin is still timed beside it in the same worker (not recorded), and the
    fp16 record carries the paired speedup with a CI over its rounds."""
    out = tmp_path / "out"
    suite = tiny_suite(tmp_path)
    suite.write_text(suite.read_text().replace("precisions: [fp32]", "precisions: [fp32, fp16]"))
    res = run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir), "--only", "*/fp16/*",
                  "--rounds", "2", "--no-report")
    assert res.returncode == 0, res.stderr
    results = load(out)
    assert {r.cell.variant for r in results} == {"fp16"}
    for r in results:
        c = r.comparison
        assert c.method == "paired" and c.baseline == r.cell_id.replace("/fp16/", "/fp32/")
        assert c.rounds == 2 and len(c.round_speedups) == 2 and c.ci_scope == "between rounds"
        assert c.ci[0] < c.speedup < c.ci[1] and c.speedup > 0
        # the CI is never narrower than the stated floor
        assert c.ci[1] / c.speedup >= 1.02 - 1e-9
    raw = [r for r in results.raw if r.cell_id.endswith("b1/single-stream")]
    assert all(r.comparison.ci_scope == "one moment (1 round)" and r.comparison.cycles >= 6 for r in raw)


def test_paired_comparison_says_why_when_it_has_no_number():
    from effbench.config.suite import Cell
    from effbench.execution.pairing import paired_comparison
    cell = Cell(model="m", variant="int8", precision="int8", method=None, runner="onnxruntime",
                runner_label="onnxruntime", threads=1, compile=False, batch_size=4, scenario="single-stream")
    blocks = {"status": "ok", "block_ms": [2.0, 2.0, 2.2, float("nan"), 2.0, 2.0, 2.0]}
    member = {"status": "ok", "block_ms": [1.0, 1.0, 1.1, 1.0, 1.0, 1.0, 1.0]}
    native, emulated_variant = SimpleNamespace(emulated=False), SimpleNamespace(emulated=True)
    ok = paired_comparison(cell, native, member, blocks)
    assert ok.baseline == "m/fp32/onnxruntime/b4/single-stream" and ok.method == "paired"
    assert ok.speedup == pytest.approx(2.0) and ok.cycles == 6          # the NaN cycle is skipped
    assert ok.ci[0] <= 2.0 / 1.02 + 1e-9 and ok.ci[1] >= 2.0 * 1.02 - 1e-9  # the stated floor
    emulated = paired_comparison(cell, emulated_variant, member, blocks)
    assert emulated.speedup is None and emulated.reason.startswith("emulated")
    twin_failed = paired_comparison(cell, native, member, {"status": "failed", "reason": "worker crashed: SIGSEGV"})
    assert twin_failed.speedup is None and "FP32 twin is failed: worker crashed" in twin_failed.reason
    assert paired_comparison(cell, native, member, None).reason == "no FP32 variant to compare with"


@pytest.mark.spawns
def test_int8_of_a_cnn_without_a_dataset_is_static_on_generated_inputs(tmp_path, cache_dir):
    """Issue 14: a CNN with no dataset got dynamic int8 (ConvInteger, 7x slower than FP32 on a held-out
    CNN). The run now calibrates static QDQ on inputs generated from the input spec, and says so."""
    suite = tmp_path / "cnn.yaml"
    suite.write_text("name: cnn\nmodels:\n  - id: cnn\n    source: {builtin: digits-cnn}\n"
                     "    inputs: {x: {shape: [batch, 1, 8, 8], dtype: float32}}\n"
                     "precisions: [fp32, int8]\nrunners: [{name: onnxruntime}]\nbatch_sizes: [1]\n"
                     "measure: {warmup_s: 0.05, min_time_s: 0.1, max_time_s: 0.3, rounds: 1}\n")
    out = tmp_path / "out"
    res = run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir), "--no-report")
    assert res.returncode == 0, res.stderr
    r = load(out).by_id()["cnn/int8/onnxruntime/b1/single-stream"]
    assert r.ok and r.variant.method == "static-qdq"
    assert r.variant.build["calibration_inputs"].startswith("generated")
    assert "no dataset" in r.variant.build["chosen_because"]


def test_a_measured_energy_keeps_the_models_figure_beside_it():
    """Issue 14: where RAPL or NVML measures energy, the local model's figure for the same cell is stored
    beside it with their ratio: how the energy model is checked on real hardware."""
    from ebrecords import make

    from effbench.devices.profile import validate_profile
    from effbench.execution.run import SuiteRun
    local = validate_profile({
        "id": "local", "name": "this machine", "kind": "cpu",
        "peak_ops": {"fp32": {"dense": {"value": 1e11, "source": "test"}}},
        "memory": {"bandwidth_bytes_per_s": {"value": 1e10, "source": "test"}},
        "power": {"idle_w": {"value": 10.0, "source": "test"}, "load_w": {"value": 50.0, "source": "test"}},
        "per_op_overhead_s": {"value": 1e-6, "source": "test"}}, file="local.yaml")
    run = SuiteRun.__new__(SuiteRun)
    run.profiles = [local]
    rec = make("m/fp32/onnxruntime/b1/single-stream", latency_ms={"median": 2.0},
               model_stats={"macs": 1_000_000, "bytes_moved": 10_000, "nodes": 3})
    measured = {"source": "measured:rapl", "j_per_inference": 0.05, "avg_power_w": 25.0}
    out = run._with_energy_and_projections(rec, measured, None).energy
    assert out.source == "measured:rapl" and out.j_per_inference == 0.05
    assert out.modeled_source == "modeled:local" and out.modeled_j_per_inference > 10.0 * 2e-3 * 0.999
    assert out.modeled_over_measured == pytest.approx(out.modeled_j_per_inference / 0.05)


@pytest.mark.spawns
def test_a_records_reason_names_the_cache_not_this_machines_folders(tmp_path, cache_dir):
    """ONNX Runtime cannot load a bf16 Conv graph and says so with the graph's path: the record's reason names
    it by its place in the variant cache, never by this machine's folders."""
    from ebgraphs import unnamed_cnn
    unnamed_cnn(tmp_path / "cnn.onnx")
    p = tmp_path / "suite.yaml"
    p.write_text("name: paths\nmodels:\n  - id: cnn\n    source: {onnx: cnn.onnx}\nprecisions: [fp32, bf16]\n"
                 f"runners: [{{name: onnxruntime, threads: 1}}]\nbatch_sizes: [1]\ndevices: []\n{QUICK}")
    out = tmp_path / "out"
    res = run_cli("run", str(p), "-o", str(out), "--cache-dir", str(cache_dir), "--rounds", "1", "--no-report",
                  "--no-progress")
    assert res.returncode == 0, res.stderr
    bf16 = load(out).by_id()["cnn/bf16/onnxruntime/b1/single-stream"]
    assert bf16.status == "unsupported" and "Load model from <cache>/variants/cnn-bf16-" in bf16.reason
    assert str(cache_dir) not in bf16.reason and str(tmp_path) not in bf16.reason
    # nor anywhere else in the store (the variant's build notes say why the CPU provider refused it)
    assert "cannot load it: " in bf16.variant.build["cpu_provider"]
    assert str(cache_dir) not in (out / "results.jsonl").read_text()


@pytest.mark.spawns  # provenance asks `uname -p` for the processor; no worker starts
def test_resume_on_another_machine_is_refused_before_measuring_unless_asked(tmp_path):
    """A store whose rounds another CPU or runtime version measured: --resume here would merge both into one
    cell; it is one line naming the store and the field before any worker starts, unless --allow-mixed."""
    from ebrecords import make

    from effbench.config.suite import load_suite
    from effbench.execution.run import RunOptions, SuiteRun
    from effbench.results.record import Provenance
    from effbench.results.store import Store
    suite = load_suite(_write(tmp_path, "[1]"))
    cell = suite.cells(None)[0]
    out = tmp_path / "out"
    elsewhere = make(cell.cell_id, config_hash=suite.config_hash(cell), round=0, rounds=3).replace(
        provenance=Provenance(python="3.11.7", packages={"onnxruntime": "0.0.1-elsewhere"},
                              host={"hostname": "other", "cpu": "Another CPU", "machine": "x86_64"}))
    Store(out / "results.jsonl").append(elsewhere)
    opts = dict(out_dir=out, cache_dir=tmp_path / "cache", resume=True, progress=False)
    with pytest.raises(UserError) as e:
        SuiteRun(suite, RunOptions(**opts), []).plan()
    assert e.value.file == str(out / "results.jsonl") and e.value.field.startswith("provenance.")
    assert f"{cell.cell_id}: round 0 in the store and this machine differ in" in e.value.message
    assert "--allow-mixed" in e.value.fix
    todo = SuiteRun(suite, RunOptions(**opts, allow_mixed=True), []).plan()
    assert [(r, c.cell_id) for r, c in todo][:2] == [(1, cell.cell_id), (2, cell.cell_id)]


def _write(tmp_path: Path, batch_sizes: str) -> Path:
    p = tiny_suite(tmp_path, batch_sizes=batch_sizes)
    p.write_text(p.read_text().replace("devices: [generic-x86-server-core]", "devices: []"))
    return p


@pytest.mark.spawns
def test_a_slowdown_during_a_cell_is_flagged_as_drift(tmp_path, cache_dir):
    """The machine slows by half while each group is measured (planted: tests/helpers/slowsentinel.py makes the
    sentinel after the group read 1.5x its reading before it): every round's record says `drift` with the change
    the sentinel saw, the merged record and the report flag it; a change within the threshold is not drift."""
    from effbench.execution.pairing import DRIFT_THRESHOLD, drift_section
    out = tmp_path / "out"
    res = run_cli("run", str(tiny_suite(tmp_path, batch_sizes="[1]")), "-o", str(out), "--cache-dir", str(cache_dir),
                  "--rounds", "2", "--no-progress", env={"EFFBENCH_PLUGINS": "slowsentinel"})
    assert res.returncode == 0, res.stderr
    results = load(out)
    rounds = [x for x in results.raw if x.cell_id == "tiny/fp32/onnxruntime/b1/single-stream"]
    assert len(rounds) == 2 and all(x.drift.flagged for x in rounds)
    assert all(x.drift.rounds[0]["change"] == pytest.approx(0.5) for x in rounds)  # the sentinel saw the 1.5x
    merged = results.by_id()["tiny/fp32/onnxruntime/b1/single-stream"]
    assert merged.drift.flagged and len(merged.drift.rounds) == 2 and merged.drift.max_abs_change > 0.3
    summary = (out / "summary.md").read_text()
    assert "1 with drift" in summary
    row = next(line for line in summary.splitlines() if line.startswith("| tiny | fp32 |"))
    assert "drift" in row
    # the threshold: a sentinel that moved 9% (either way) is not drift, one that moved 11% is
    assert DRIFT_THRESHOLD == 0.10
    assert [drift_section({"change": c}).flagged for c in (0.09, -0.09, 0.11, -0.11)] == [False, False, True, True]
