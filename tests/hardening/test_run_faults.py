"""Faults during a run (issue 8): a memory limit, SIGKILL of the whole run at random moments then
--resume, a full disk and a read-only output folder (real tmpfs mounts in a private mount namespace),
and the worker a killed run leaves behind."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from ebrecords import make
from hardening_util import HELPERS, ROOT, note, one_error_line, run_cli, tiny_suite

from effbench.errors import UserError
from effbench.results.store import Record, Store, load

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hardening-cache")


def _can_unshare_mount() -> bool:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || mount -t tmpfs -o size=64k tmpfs /tmp"],
                       capture_output=True)
    return r.returncode == 0


needs_mount = pytest.mark.skipif(not _can_unshare_mount(),
                                 reason="needs `unshare -m` and mount (root / CAP_SYS_ADMIN) for a real tmpfs")


def _in_tmpfs(mountpoint: Path, size: str, argv: list[str], *, ro: bool = False, timeout: float = 300):
    """Run argv with a fresh tmpfs at mountpoint, in a private mount namespace (the host sees nothing)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
           f'mount -t tmpfs -o {opts} tmpfs "$0" && exec "$@"', str(mountpoint), *argv]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HELPERS)]))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


# ----------------------------------------------------------------------------------- memory limit
MEMORY_LIMIT_MB = 900


@pytest.fixture(scope="module")
def memory_limited_run(tmp_path_factory, cache):
    """A graph whose output is [batch, 65536] float32: 256 KB at batch 1, 1 GiB at batch 4096. Under a
    900 MB address-space limit the first fits (a worker with ONNX Runtime needs about 400 MB here), the
    second cannot; its feeds stay small, so only the worker's own allocation is at stake."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    tmp = tmp_path_factory.mktemp("memlimit")
    w = numpy_helper.from_array(np.full((16, 65536), 0.01, np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "wide",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 65536])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(tmp / "wide.onnx"))
    suite = tiny_suite(tmp, batch_sizes="[1, 4096]", dataset=False, model=tmp / "wide.onnx",
                       measure="measure: {warmup_s: 0.02, min_time_s: 0.05, max_time_s: 0.3, target_rel_ci: 0.05, rounds: 1, "
                               f"memory_limit_mb: {MEMORY_LIMIT_MB}}}\n")
    res = run_cli("run", str(suite), "-o", str(tmp / "out"), "--cache-dir", str(cache), "--no-report", "--no-progress")
    return res, load(tmp / "out").by_id(), MEMORY_LIMIT_MB


@pytest.mark.slow
def test_memory_limit_fails_the_big_cell_alone(memory_limited_run):
    res, by, limit = memory_limited_run
    assert "Traceback" not in res.stderr
    small, big = by["tiny/fp32/onnxruntime/b1/single-stream"], by["tiny/fp32/onnxruntime/b4096/single-stream"]
    assert small.ok and small.memory.peak_rss_bytes < limit * 2**20
    assert big.status != "ok" and big.latency_ms is None
    note(f"[faults] memory limit {limit} MB: b1 {small.status}; b4096 {big.status}: {big.reason[:200]}; "
                         f"exit {res.returncode}")
    assert any(s in big.reason.lower() for s in ("memory", "map segment", "allocate")), big.reason


@pytest.mark.slow
def test_memory_limit_reason_is_precise(memory_limited_run):
    res, by, limit = memory_limited_run
    big = by["tiny/fp32/onnxruntime/b4096/single-stream"]
    assert big.status == "failed" and big.reason.startswith(f"out of memory (worker limit {limit} MB)"), big.reason
    assert res.returncode == 1


# -------------------------------------------------------------------------- SIGKILL + --resume
def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the run and every process it started (workers live in their own sessions)."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for p in [psutil.Process(proc.pid)] + tree if proc.poll() is None else tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(tree, timeout=10)


def _check_store(path: Path) -> list[Record]:
    """The store parses, has no torn line, and holds every finished cell exactly once."""
    if not path.exists():
        return []
    records, warnings = Store(path).records()
    assert not warnings, warnings
    assert path.read_bytes().endswith(b"\n")
    done = [(r.config_hash, r.round) for r in records if r.status in ("ok", "unsupported")]
    assert len(done) == len(set(done)), "a finished cell was stored twice"
    return records


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path, cache):
    seed = int(os.environ.get("HARDENING_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    cells = 6
    suite = tiny_suite(tmp_path, batch_sizes="[1, 2, 3, 4, 5, 6]", dataset=False)
    out = tmp_path / "out"
    store = out / "results.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "effbench", "run", str(suite), "-o", str(out), "--cache-dir", str(cache),
            "--resume", "--no-report", "--no-progress"]
    history = []
    for attempt in range(12):
        # Half the kills land anywhere from start-up to preparing the model; the rest a random
        # moment after this attempt has stored a new cell: while the next cell measures or is written.
        lines_before = store.read_bytes().count(b"\n") if store.exists() else 0
        early = attempt % 2 == 0
        delay = rng.uniform(0.2, 2.5) if early else rng.uniform(0.0, 1.0)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not early:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline and \
                    (store.read_bytes().count(b"\n") if store.exists() else 0) <= lines_before:
                time.sleep(0.02)
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
        records = _check_store(store)
        history.append(("early" if early else "after-a-cell", round(delay, 2), len(records), proc.returncode))
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    records = _check_store(store)
    ok = {r.cell_id for r in records if r.ok}
    assert len(ok) == cells, (seed, history)
    finished_before = [h[2] for h in history]
    assert finished_before == sorted(finished_before), "a resumed run lost records"  # nothing ever disappears
    note(f"[faults] SIGKILL+resume seed {seed}: (when, delay s, records, rc) {history}")


@pytest.mark.spawns
def test_worker_dies_with_its_parent(tmp_path):
    """kill -9 of `effbench run` (not its group) must not leave a hung worker burning a core forever."""
    code = ("import sys; from effbench.execution.workers import run_in_worker; "
            "run_in_worker('faultmodels:hang', {}, timeout_s=3600)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HELPERS)]))
    parent = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 60
        workers = []
        while time.monotonic() < deadline and not workers:
            workers = psutil.Process(parent.pid).children()
            time.sleep(0.1)
        assert workers, "the worker never started"
        time.sleep(1.0)
        parent.kill()
        parent.wait()
        gone, alive = psutil.wait_procs(workers, timeout=5)
        for p in alive:
            p.kill()
        assert not alive, "the worker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


# -------------------------------------------------------------------- full disk, read-only folder
def _fs_run(tmp_path, cache, mode: str) -> dict:
    mnt = tmp_path / "mnt"
    report = tmp_path / "report.json"
    suite = tiny_suite(tmp_path, batch_sizes="[1, 2, 3, 4]", dataset=False)
    r = _in_tmpfs(mnt, "4m", [sys.executable, str(HERE / "fsdriver.py"), mode, str(mnt), str(suite), str(cache),
                              str(report)])
    assert r.returncode == 0, r.stderr
    return json.loads(report.read_text())


@needs_mount
@pytest.mark.slow
def test_disk_fills_mid_run(tmp_path, cache):
    """After two cells the disk fills: one line, exit 2, the two measured records whole.
    (A read-only remount mid-run cannot happen: the kernel refuses it while the run holds its lock file
    open for writing; the read-only case is a folder that is read-only from the start, below.)"""
    rep = _fs_run(tmp_path, cache, "full")
    expect = "No space left on device"
    line = one_error_line(rep["rc"], rep["stderr"])
    assert line is not None and "cannot write results" in line and expect in line, rep["stderr"]
    note(f"[faults] disk full after 2 cells: exit {rep['rc']}: {line[-120:]}")
    lines = rep["store"].splitlines(keepends=True)
    assert len(lines) == 2 == len(rep["appended"]), rep  # the two measured cells survive, whole
    assert all(ln.endswith("\n") and json.loads(ln)["cell_id"] == c for ln, c in zip(lines, rep["appended"]))


@pytest.mark.spawns
@needs_mount
def test_full_disk_never_leaves_a_partial_line(tmp_path):
    """A disk that fills mid-line: the kernel writes part of it; Store takes the part back."""
    mnt = tmp_path / "mnt"
    report = tmp_path / "report.json"
    r = _in_tmpfs(mnt, "256k", [sys.executable, str(HERE / "fsdriver.py"), "store", str(mnt), "-", "-", str(report)])
    assert r.returncode == 0, r.stderr
    rep = json.loads(report.read_text())
    assert rep["error"] and "No space left on device" in rep["error"], rep
    assert rep["unchanged"], rep


@pytest.mark.spawns
@needs_mount
def test_read_only_output_folder_is_one_line_and_loses_nothing(tmp_path, cache):
    """Existing results in a folder that is now read-only: `run` and `run --resume` refuse with one line
    before measuring; the store is byte-for-byte unchanged."""
    out = tmp_path / "ro"
    seed = tmp_path / "seed.jsonl"
    Store(seed).append(make("tiny/fp32/onnxruntime/b1/single-stream"))
    suite = tiny_suite(tmp_path, batch_sizes="[1]", dataset=False)
    for extra in ([], ["--resume"]):
        # copy the store into the tmpfs, then remount it read-only, then run
        script = (f'cp "{seed}" "$0/results.jsonl" && mount -o remount,ro "$0" && exec "$@"')
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
               f'mount -t tmpfs -o size=1m tmpfs "$0" && {script}', str(out), sys.executable, "-c",
               "import sys, hashlib, pathlib; from effbench.cli import app as cli; p = pathlib.Path(sys.argv[1]) / 'results.jsonl'; "
               "h = p.read_bytes(); rc = cli.main(sys.argv[2:]); "
               "print('UNCHANGED' if p.read_bytes() == h else 'CHANGED'); sys.exit(rc)",
               str(out), "run", str(suite), "-o", str(out), "--cache-dir", str(cache), "--no-progress", *extra]
        out.mkdir(exist_ok=True)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
        line = one_error_line(r.returncode, r.stderr)
        assert line is not None and "Read-only file system" in line, r.stderr
        assert "UNCHANGED" in r.stdout


# ----------------------------------------------------------------------------- store edge cases
def test_store_on_dev_full_is_a_one_line_error(tmp_path):
    """results.jsonl -> /dev/full: every write fails with ENOSPC."""
    path = tmp_path / "results.jsonl"
    path.symlink_to("/dev/full")
    with pytest.raises(UserError, match="cannot write results: No space left on device"):
        Store(path).append(make("a"))


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/full"])
def test_store_that_is_a_device_is_refused_not_read_forever(tmp_path, device):
    """Regression: reading a results 'file' that is /dev/zero never ended (and ate memory)."""
    path = tmp_path / "results.jsonl"
    path.symlink_to(device)
    with pytest.raises(UserError, match="not a regular file"):
        load(path)
    with pytest.raises(UserError, match="not a regular file"):
        Store(path).records()


@pytest.mark.spawns
def test_resume_on_a_store_with_a_torn_tail(tmp_path, cache):
    """A store whose last line was cut (power cut on another file system) resumes with a warning and
    the next record starts on its own line."""
    suite = tiny_suite(tmp_path, batch_sizes="[1]", dataset=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"schema": "effbench.result/1", "cell_id": "tiny/fp32/onnx')
    res = run_cli("run", str(suite), "-o", str(out), "--cache-dir", str(cache), "--resume", "--no-report",
                  "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "killed mid-write" in res.stderr and "Traceback" not in res.stderr
    records, warnings = Store(out / "results.jsonl").records()
    assert [r.cell_id for r in records] == ["tiny/fp32/onnxruntime/b1/single-stream"] and len(warnings) == 1
