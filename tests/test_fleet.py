"""Issue 18: a fleet of device nodes through Ray. A real local cluster (`effbench node` three times: a head
and a node advertising device A, a second node of A, a node of device B), real runs through the CLI.

Ray is the `fleet` extra, which `make test` installs: without it these tests fail (they never skip).
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from ebtest import DATA, HELPERS, ROOT, run_cli

A, B = "raspberry-pi-5", "generic-x86-server-core"   # two shipped profiles this machine pretends to be
FAST = "measure: {warmup_s: 0.02, min_time_s: 0.05, max_time_s: 0.3, target_rel_ci: 0.05}\n"

WAIT_FOR_NODES = """
import json, sys, time, ray
from effbench.fleet.run import live_devices
ray.init(address=sys.argv[1], log_to_driver=False)
want = json.loads(sys.argv[2])
for _ in range(240):
    have = live_devices(ray)
    if all(len(have.get(d, [])) >= n for d, n in want.items()):
        break
    time.sleep(0.5)
print(json.dumps(have))
"""


def _env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + str(HELPERS) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _kill_sessions(sessions: set[int]) -> None:
    """Every process of the clusters' sessions (ray start daemonizes: raylets, GCS, agents, Ray workers
    keep the session of the `effbench node` that started them), by id; nothing else on the machine."""
    for _ in range(5):
        left = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) in sessions and p.pid != os.getpid():
                    left.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        if not left:
            return
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=5)


@pytest.fixture(scope="module")
def fleet():
    import ray  # noqa: F401  the fleet extra must be installed: ImportError fails the tests, never skips them
    root = Path(tempfile.mkdtemp(prefix="ebf", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    port, dashboard = _free_ports(2)
    address = f"127.0.0.1:{port}"
    sessions: set[int] = set()

    def node(*args: str) -> None:
        log = root / f"node-{len(sessions)}.log"
        with open(log, "wb") as f:
            p = subprocess.Popen([sys.executable, "-m", "effbench", "node", *args], stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True, env=_env())
        sessions.add(p.pid)
        assert p.wait(180) == 0, log.read_text()[-2000:]

    small = "--object-store-memory=78643200"   # Ray's minimum; the bundle of a tiny model fits many times
    try:
        node("--head", "--device", A, "--port", str(port), "--cache-dir", str(root / "cache-a1"), "--",
             f"--temp-dir={root / 'ray'}", small, f"--dashboard-port={dashboard}")
        node("--address", address, "--device", B, "--cache-dir", str(root / "cache-b"), "--", small)
        node("--address", address, "--device", A, "--cache-dir", str(root / "cache-a2"), "--", small)
        out = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES, address, json.dumps({A: 2, B: 1})],
                             capture_output=True, text=True, timeout=180, env=_env())
        assert out.returncode == 0, out.stderr[-2000:]
        nodes = json.loads(out.stdout.strip().splitlines()[-1])
        assert len(nodes.get(A, [])) == 2 and len(nodes.get(B, [])) == 1, nodes
        yield SimpleNamespace(address=address, nodes={d: {n["ray_node_id"] for n in ns} for d, ns in nodes.items()},
                              root=root)
    finally:
        _kill_sessions(sessions)
        shutil.rmtree(root, ignore_errors=True)


def fleet_suite(folder: Path, *, models=("tiny",), devices=(A, B), batch_sizes="[1]", measure=FAST) -> Path:
    """A suite whose model and dataset are given relative to it: the nodes get them from the object store."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "models" / "tiny.onnx", folder / "tiny.onnx")
    shutil.copy(DATA / "models" / "good.npz", folder / "good.npz")
    body = "".join(f"  - id: {m}\n    source: {{onnx: tiny.onnx}}\n    dataset: {{npz: good.npz}}\n" for m in models)
    p = folder / "suite.yaml"
    p.write_text(f"name: fleet\nmodels:\n{body}precisions: [fp32]\nrunners: [{{name: onnxruntime, threads: 1}}]\n"
                 f"batch_sizes: {batch_sizes}\ndevices: [{', '.join(devices)}]\n{measure}")
    return p


def lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]


def once_each(recs: list[dict]) -> set[tuple[str, int]]:
    counts = collections.Counter((r["cell_id"], r["round"]) for r in recs)
    assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1]
    return set(counts)


@pytest.mark.slow
def test_each_device_is_measured_on_its_own_nodes_and_local_here(fleet, tmp_path, cache_dir):
    suite = fleet_suite(tmp_path / "s", devices=("local", A, B, "nvidia-h100"), batch_sizes="[1, 2]")
    out = tmp_path / "out"
    res = run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir), "--quick", "--ray", fleet.address,
                  timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    recs = lines(out)
    base = [f"tiny/fp32/onnxruntime/b{b}/single-stream" for b in (1, 2)]
    assert once_each(recs) == {(c + at, 0) for c in base for at in ("", f"@{A}", f"@{B}")}
    assert all(r["status"] == "ok" for r in recs), [r["reason"] for r in recs]
    for r in recs:
        device = r["cell"].get("measured_on")
        prov, proj = r["provenance"], r["projections"]
        assert prov["speed_index"]["gflops"] > 0 and prov["host"]["hostname"]
        assert set(proj) == {"local", A, B, "nvidia-h100"}
        if device is None:  # measured here, as without --ray
            assert prov["node"] is None and proj["local"]["measured_latency_ms"] == r["latency_ms"]["median"]
            continue
        assert r["cell_id"].endswith(f"@{device}")
        node = prov["node"]  # the node's own provenance: where, which Ray node, on its own host and speed index
        assert node["device"] == device and node["ray_node_id"] in fleet.nodes[device] and node["attempt"] == 1
        assert node["ray"] and node["hostname"] == prov["host"]["hostname"]
        own = proj[device]  # the device's projection beside the node's measurement, with the error
        assert own["measured_latency_ms"] == r["latency_ms"]["median"]
        assert own["error_pct"] == pytest.approx((own["latency_ms"] / own["measured_latency_ms"] - 1) * 100)
        assert proj["local"]["measured_latency_ms"] is None and proj["nvidia-h100"]["error_pct"] is None
        assert r["memory"]["peak_rss_bytes"] > 0 and r["quality"]["value"] is not None
        assert r["energy"]["source"] in (f"modeled:{device}", "measured:rapl")
    # the nodes built from the bundle in their own caches, by content
    assert list((fleet.root / "cache-b" / "fleet-bundles").glob("*/suite.yaml"))
    html = (out / "index.html").read_text()
    assert 'id="fleet"' in html and f"node {sorted(fleet.nodes[B])[0][:8]}" in html
    assert "Measured on the fleet" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_resume_after_the_driver_is_killed_loses_nothing(fleet, tmp_path, cache_dir):
    suite = fleet_suite(tmp_path / "s", models=("tiny", "tiny2"))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "effbench", "run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir),
            "--quick", "--no-report", "--ray", fleet.address]
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), cwd=ROOT)
    store = out / "results.jsonl"
    deadline = time.monotonic() + 240
    while not (store.exists() and store.read_text().strip()) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    before = once_each(lines(out))
    every = {(f"{m}/fp32/onnxruntime/b1/single-stream@{d}", 0) for m in ("tiny", "tiny2") for d in (A, B)}
    assert before and before < every, before  # killed with cells still out on the nodes
    res = run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir), "--quick", "--no-report",
                  "--resume", "--ray", fleet.address, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resume: {len(before)} finished cell-rounds already" in res.stderr
    recs = lines(out)
    assert once_each(recs) == every and all(r["status"] == "ok" for r in recs)


def _task_on(device: str, driver: subprocess.Popen, deadline: float) -> psutil.Process:
    """The Ray worker running the measuring task of `device`, once it has started a measuring worker."""
    while time.monotonic() < deadline and driver.poll() is None:
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(x for x in p.info["cmdline"] or [] if x).strip()  # Ray's title is padded with NULs
            if cmd.startswith("ray::effbench") and cmd.endswith(f"@{device}"):
                try:
                    if any("effbench.execution.workers" in " ".join(c.cmdline()) for c in p.children()):
                        return p
                except psutil.Error:
                    continue
        time.sleep(0.1)
    raise AssertionError(f"no measuring task on {device} showed up")


@pytest.mark.slow
def test_a_ray_worker_killed_mid_cell_is_retried_on_another_node_and_the_rest_finish(fleet, tmp_path, cache_dir):
    suite = fleet_suite(tmp_path / "s", measure="measure: {warmup_s: 0.02, min_time_s: 1.5, max_time_s: 2, "
                                                "target_rel_ci: 0.05, rounds: 1}\n")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "effbench", "run", str(suite), "-o", str(out), "--cache-dir", str(cache_dir),
            "--no-report", "--no-progress", "--ray", fleet.address]
    driver = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    try:
        victim = _task_on(A, driver, time.monotonic() + 240)
        victim.kill()
        stdout, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr[-3000:]
    recs = {r["cell_id"]: r for r in lines(out)}
    assert once_each(list(recs.values())) == {(f"tiny/fp32/onnxruntime/b1/single-stream@{d}", 0) for d in (A, B)}
    a, b = recs[f"tiny/fp32/onnxruntime/b1/single-stream@{A}"], recs[f"tiny/fp32/onnxruntime/b1/single-stream@{B}"]
    assert b["status"] == "ok" and b["provenance"]["node"]["attempt"] == 1
    node = a["provenance"]["node"]
    assert a["status"] == "ok" and node["attempt"] == 2, a["reason"]
    (why,) = node["retry_of"]
    assert "WorkerCrashedError" in why or "died" in why, why
    killed_on = why.split("node ")[1].split(" ")[0]
    assert node["ray_node_id"] in fleet.nodes[A] and not node["ray_node_id"].startswith(killed_on)
    assert "retried once on node" in stderr


@pytest.mark.spawns
def test_without_ray_the_flag_is_one_line_naming_the_extra(tmp_path):
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    suite = fleet_suite(tmp_path / "s")
    res = run_cli("run", str(suite), "--ray", "127.0.0.1:1", "-o", str(tmp_path / "out"),
                  env={"PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}{os.pathsep}{HELPERS}"})
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "effbench[fleet]" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.spawns
def test_an_address_where_no_cluster_answers_is_one_line(tmp_path):
    (port,) = _free_ports(1)
    res = run_cli("run", str(fleet_suite(tmp_path / "s")), "--ray", f"127.0.0.1:{port}", "-o", str(tmp_path / "out"),
                  timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "no Ray cluster answers" in res.stderr and "effbench node --head" in res.stderr


# ---------------------------------------------------------------- without a cluster

def test_a_node_advertises_its_device_and_takes_no_other_work():
    from effbench.errors import UserError
    from effbench.fleet.node import start_command
    cmd = start_command(device=A, head=False, address="10.0.0.5:6379", port=None, extra=["--block"])
    assert cmd[1:4] == ["-m", "ray.scripts.scripts", "start"] and cmd[-1] == "--block"
    assert "--address=10.0.0.5:6379" in cmd and "--num-cpus=0" in cmd and "--num-gpus=0" in cmd
    (res,) = [c for c in cmd if c.startswith("--resources=")]
    assert json.loads(res.split("=", 1)[1]) == {f"device:{A}": 1}
    head = start_command(device=None, head=True, address=None, port=6390, extra=[])
    assert "--head" in head and "--port=6390" in head and not any(c.startswith("--resources") for c in head)
    for bad in ({"device": A, "head": True, "address": "x:1"}, {"device": None, "head": False, "address": "x:1"},
                {"device": "a b", "head": True, "address": None}):
        with pytest.raises(UserError):
            start_command(port=None, extra=[], **bad)


def test_a_fleet_cell_has_its_own_id_and_hash_and_local_cells_keep_theirs(tmp_path):
    from effbench.config.suite import load_suite
    suite = load_suite(fleet_suite(tmp_path))
    (cell,) = suite.cells()
    assert "measured_on" not in cell.to_json()  # local cells: config hashes of older stores stay valid
    on = cell.replace(measured_on=A)
    assert on.cell_id == cell.cell_id + f"@{A}" and on.to_json()["measured_on"] == A
    assert suite.config_hash(on) != suite.config_hash(cell)


def test_the_bundle_carries_the_suite_its_files_and_plugins(tmp_path):
    from effbench.config.suite import load_suite
    from effbench.fleet.node import make_bundle, unpack
    folder = tmp_path / "proj" / "suites"
    suite_path = fleet_suite(folder)
    shutil.move(folder / "good.npz", tmp_path / "proj" / "good.npz")  # a path that leaves the suite's folder
    text = suite_path.read_text().replace("{npz: good.npz}", "{npz: ../good.npz}")
    suite_path.write_text(text)
    suite = load_suite(suite_path)
    bundle = make_bundle(suite)
    assert set(bundle["files"]) == {"suites/suite.yaml", "suites/tiny.onnx", "good.npz"}
    assert bundle["suite"] == "suites/suite.yaml" and make_bundle(suite)["id"] == bundle["id"]
    root = unpack(bundle, tmp_path / "node-cache")
    assert unpack(bundle, tmp_path / "node-cache") == root  # by content: unpacked once
    again = load_suite(root / bundle["suite"])
    assert again.sha256 == suite.sha256 and (root / "good.npz").read_bytes() == (tmp_path / "proj" / "good.npz").read_bytes()


class _FakeRay:
    def __init__(self, nodes):
        self._nodes = nodes

    def nodes(self):
        return [{"NodeID": n, "Alive": True, "Resources": {f"device:{d}": 1.0}, "NodeManagerAddress": "10.0.0.9",
                 "NodeManagerHostname": f"host-{n}"} for n, d in self._nodes]


def _fleet_run(tmp_path, nodes):
    from effbench.config.suite import load_suite
    from effbench.execution.run import RunOptions
    from effbench.fleet.run import FleetRun
    from effbench.results.record import Provenance
    suite = load_suite(fleet_suite(tmp_path / "s", batch_sizes="[1, 2]"))
    run = FleetRun(suite, RunOptions(out_dir=tmp_path / "out", cache_dir=tmp_path / "c", progress=False), [],
                   address="unused")
    run._ray = _FakeRay(nodes)
    run.here.provenance, run.here.hashes = Provenance(run_id=run.here.run_id), {}
    return run


def test_a_job_lost_with_no_other_node_of_its_device_is_recorded_failed(tmp_path):
    from effbench.execution.progress import Progress
    from effbench.fleet.run import Job
    from effbench.results.store import Store
    run = _fleet_run(tmp_path, [("n1", A), ("n2", B)])
    cells = [c.replace(measured_on=A) for c in run.suite.cells()]
    job = Job(device=A, todo=[(0, c) for c in cells], node={"device": A, "ray_node_id": "n1", "hostname": "host-n1"})
    job.remaining.discard((0, cells[0].cell_id))  # its first record had come back
    run._lost(job, "WorkerCrashedError: The worker died unexpectedly", {}, Progress(2, False), retry=True)
    (rec,), _ = Store(run.here.store.path).records()
    assert rec.cell_id == cells[1].cell_id and rec.status == "failed"
    assert "on node n1 (host-n1) ended: WorkerCrashedError" in rec.reason
    assert f"no other live node of {A} to retry on" in rec.reason
    assert rec.provenance.node == {"device": A, "ray_node_id": "n1", "hostname": "host-n1", "attempt": 1}


def test_a_lost_job_is_retried_once_on_another_node_of_its_device(tmp_path):
    from effbench.execution.progress import Progress
    from effbench.fleet.run import Job
    run = _fleet_run(tmp_path, [("n1", A), ("n3", A), ("n2", B)])
    submitted = []
    run._submit = lambda job: submitted.append(job) or len(submitted)
    cells = [c.replace(measured_on=A) for c in run.suite.cells()]
    job = Job(device=A, todo=[(0, c) for c in cells], node={"device": A, "ray_node_id": "n1"})
    running: dict = {}
    run._lost(job, "NodeDiedError: gone", running, Progress(2, False), retry=True)
    (again,) = submitted
    assert again.pinned == "n3" and again.attempt == 2 and again.remaining == job.remaining
    assert "NodeDiedError" in again.history[0] and running == {1: again}
    run._lost(again, "NodeDiedError: gone too", running, Progress(2, False), retry=True)  # no third attempt
    recs, _ = run.here.store.records()
    assert len(submitted) == 1 and [r.status for r in recs] == ["failed", "failed"]
    assert "gone too" in recs[0].reason and "(a retry after: the Ray task measuring it on node n1" in recs[0].reason
    assert recs[0].provenance.node["attempt"] == 2


def test_a_node_measurement_sits_beside_its_own_device_projection(tmp_path):
    from ebrecords import make

    from effbench.devices import load_profiles
    run = _fleet_run(tmp_path, [])
    run.here.profiles = load_profiles([A, B])
    rec = make(f"m/fp32/onnxruntime/b1/single-stream@{A}", cell={"measured_on": A}, latency_ms={"median": 2.0},
               model_stats={"macs": 10**6, "bytes_moved": 10**5, "weight_bytes": 4000, "activation_bytes": 1000,
                            "nodes": 3, "batch_size": 1},
               energy={"reason": "energy not measured (no counter) and not modeled (no local profile in devices:)"})
    out = run.on_device(rec)
    own, other = out.projections[A], out.projections[B]
    assert own.measured_latency_ms == 2.0 and own.error_pct == pytest.approx((own.latency_ms / 2.0 - 1) * 100)
    assert other.status == "ok" and other.measured_latency_ms is None and other.error_pct is None
    assert out.energy.source == f"modeled:{A}" and "measured latency" in (out.energy.reason or "")


def test_devices_with_a_live_node_are_measured_there_the_rest_projected(tmp_path):
    run = _fleet_run(tmp_path, [])
    node = [{"ray_node_id": "n1", "address": "10.0.0.9", "hostname": "pi"}]
    assert run.choose_devices({A: node, "cortex-m7": node}) == [A] and run.local is False
    assert [c.cell_id.rpartition("@")[2] for c in run.cells()] == [A, A]   # b1 and b2 on A; B projected
    run.opts.only = [f"*b2*@{A}"]
    assert [c.cell_id for c in run.cells()] == [f"tiny/fp32/onnxruntime/b2/single-stream@{A}"]
    run.opts.only = None
    assert run.choose_devices({}) == [] and run.local is True  # no node for any device: measured here
    assert [c.measured_on for c in run.cells()] == [None, None]
