"""One node of a fleet (docs/fleet.md): `effbench node` (Ray's `ray start` advertising one device), the
suite bundle that travels to it through Ray's object store, and the task that measures a group there.

The task measures exactly as a local run does (`effbench.execution.run.SuiteRun`: fresh workers, rounds, the
sentinel), from the node's own cache and with the node's own provenance; the run's parent
(`effbench.fleet.run`) projects and stores what it yields.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from effbench.errors import UserError
from effbench.execution.run import RunOptions, SuiteRun

# A node advertises the device profile it is as this Ray custom resource, with a capacity of one: a
# measuring task asks for the whole of it, so one measurement at a time runs on a node.
RESOURCE_PREFIX = "device:"
INSTALL_FIX = "install the fleet extra: pip install 'effbench[fleet]' (docs/fleet.md)"


def resource(device: str) -> str:
    return f"{RESOURCE_PREFIX}{device}"


def import_ray(flag: str = "--ray"):
    """Ray, or the one-line error that names the extra to install."""
    try:
        import ray
    except ImportError:
        raise UserError("Ray is not installed", field=flag, fix=INSTALL_FIX) from None
    return ray


# ---------------------------------------------------------------- effbench node

def start_command(*, device: str | None, head: bool, address: str | None, port: int | None,
                  extra: list[str]) -> list[str]:
    """The `ray start` command line of a node advertising `device` (resource `device:<id>`, capacity 1).

    No CPU or GPU is offered to Ray (--num-cpus=0 --num-gpus=0): nothing but effbench's measuring task,
    which asks for the device resource alone, is ever scheduled there, so two measurements (or a
    measurement and someone else's Ray job) never share the machine."""
    import re
    if device is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", device):
        raise UserError(f"device id '{device}' is not a profile id", field="--device",
                        fix="use a device profile's id, e.g. raspberry-pi-5 (effbench profiles list)")
    if head == bool(address):
        raise UserError("give either --head (start a cluster) or --address HOST:PORT (join one)",
                        field="--address", fix="e.g. effbench node --device raspberry-pi-5 --address 10.0.0.5:6379")
    if device is None and not head:
        raise UserError("a node that joins a cluster must advertise a device", field="--device",
                        fix="e.g. effbench node --device raspberry-pi-5 --address 10.0.0.5:6379")
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--num-cpus=0", "--num-gpus=0",
           "--disable-usage-stats"]
    if head:
        cmd += ["--head", "--include-dashboard=false"] + ([f"--port={port}"] if port else [])
    else:
        cmd.append(f"--address={address}")
    if device is not None:
        cmd.append("--resources=" + json.dumps({resource(device): 1}))
    return cmd + list(extra)


def start_node(*, device: str | None, head: bool, address: str | None, port: int | None = None,
               cache_dir: str | None = None, extra: list[str] | None = None, dry_run: bool = False) -> int:
    """Run `ray start` for this node; returns its exit code. `cache_dir`: where the node's measuring
    tasks build and cache models and variants (EFFBENCH_CACHE_DIR, the `--cache-dir` of `effbench run`)."""
    cmd = start_command(device=device, head=head, address=address, port=port, extra=extra or [])
    if device is not None:
        from effbench.devices import shipped_ids
        if device not in shipped_ids():
            print(f"note: '{device}' is not a shipped profile id; suites that list a profile file with "
                  f"id: {device} are measured here", file=sys.stderr)
    if dry_run:
        import shlex
        print(shlex.join(cmd))
        return 0
    import_ray("node")
    env = dict(os.environ)
    if cache_dir:
        env["EFFBENCH_CACHE_DIR"] = str(Path(cache_dir).resolve())
    return subprocess.run(cmd, env=env).returncode


# ---------------------------------------------------------------- the suite bundle

def _referenced_files(suite) -> list[Path]:
    """What a node needs besides effbench to load and run the suite: the suite file, models and datasets
    given by a relative path, ONNX external data beside a model, files named by precision options, and
    plugin or torch-source modules found in the suite's folder. Absolute paths must exist on every node."""
    from effbench.variants.specs import precision_spec
    base = suite.base_dir
    named: list[str] = []
    for m in suite.spec.models:
        if m.source.kind == "onnx":
            named.append(m.source.onnx)
            named += _external_data(base, m.source.onnx)
        if m.dataset is not None and m.dataset.npz is not None:
            named.append(m.dataset.npz)
    for entry in suite.spec.precisions:
        if isinstance(entry, dict):
            (label, options), = entry.items()
            keys = precision_spec(label.partition("-")[0]).path_options
            named += [v for k, v in (options or {}).items() if k in keys and isinstance(v, str)]
    modules = [m.source.torch.split(":")[0] for m in suite.spec.models if m.source.torch is not None]
    files = [suite.path] + [base / n for n in named if not Path(n).is_absolute()]
    for mod in list(suite.spec.plugins) + modules:
        top = mod.split(".")[0]
        if (base / top).is_dir():
            files += sorted(p for p in (base / top).rglob("*.py") if "__pycache__" not in p.parts)
        elif (base / f"{top}.py").is_file():
            files.append(base / f"{top}.py")
    return list(dict.fromkeys(f.resolve() for f in files if f.is_file()))


def _external_data(base: Path, model: str) -> list[str]:
    """The external-data files an ONNX model names, relative to the suite's folder like the model."""
    path = base / model
    if not path.is_file():
        return []
    try:
        import onnx
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not loadable here: the node reports it the way a local run would
        return []
    locations = {e.value for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                 for e in t.external_data if e.key == "location"}
    return [os.path.relpath(path.parent / loc, base) for loc in sorted(locations)]


def make_bundle(suite) -> dict[str, Any]:
    """The suite and its files as one value for Ray's object store: {id, suite, files: {relpath: bytes}}.
    Paths are relative to the folder that holds them all, so the suite's relative paths still resolve."""
    files = _referenced_files(suite)
    anchor = Path(os.path.commonpath([str(f.parent) for f in files]))
    blobs = {f.relative_to(anchor).as_posix(): f.read_bytes() for f in files}
    h = hashlib.sha256()
    for rel in sorted(blobs):
        h.update(rel.encode() + b"\0" + hashlib.sha256(blobs[rel]).digest())
    return {"id": h.hexdigest()[:16], "suite": suite.path.resolve().relative_to(anchor).as_posix(), "files": blobs}


def unpack(bundle: dict[str, Any], cache_dir: Path) -> Path:
    """The bundle's files under the node's cache, by content: a second task of the run (or a later run of
    the same suite) finds them there, and the models and variants built from them in the cache."""
    root = cache_dir / "fleet-bundles" / bundle["id"]
    if (root / ".complete").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{bundle['id']}-", dir=root.parent))
    for rel, data in bundle["files"].items():
        p = tmp / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ValueError(f"bundle path {rel!r} leaves the bundle")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (tmp / ".complete").write_text("")
    try:
        tmp.rename(root)
    except OSError:  # another node on this machine unpacked the same bundle first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


# ---------------------------------------------------------------- the task on the node

def _node_env() -> None:
    """Undo what Ray adds to a task's environment that a local run would not have: OMP_NUM_THREADS=1
    when the node was started without it (Ray sets it for tasks that ask for no CPU, and the measuring
    workers would inherit it). The raylet, this worker's parent, holds the node's own environment."""
    try:
        raw = Path(f"/proc/{os.getppid()}/environ").read_bytes()
    except OSError:
        return
    node_env = dict(kv.split(b"=", 1) for kv in raw.split(b"\0") if b"=" in kv)
    if b"OMP_NUM_THREADS" not in node_env:
        os.environ.pop("OMP_NUM_THREADS", None)


def node_info(device: str) -> dict[str, Any]:
    import ray

    from effbench.version import __version__
    ctx = ray.get_runtime_context()
    return {"device": device, "ray_node_id": ctx.get_node_id(), "address": ray.util.get_node_ip_address(),
            "hostname": platform.node(), "pid": os.getpid(), "ray": ray.__version__, "effbench": __version__}


def cache_dir() -> Path:
    from effbench.models.sources import default_cache_dir
    env = os.environ.get("EFFBENCH_CACHE_DIR")
    return Path(env) if env else default_cache_dir()


def measure_on_node(bundle: dict[str, Any], job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The Ray task (a generator, so records stream back as each round of the group ends): first where it
    runs ({"kind": "hello"}), then each round's records ({"kind": "records"}) as JSON."""
    from effbench.config.suite import load_suite
    from effbench.execution.progress import Progress
    from effbench.results.record import Cell
    _node_env()
    info = node_info(job["device"])
    yield {"kind": "hello", "node": info}
    cache = cache_dir()
    suite = load_suite(unpack(bundle, cache) / bundle["suite"])
    todo = [(int(r), Cell.from_json(c)) for r, c in job["todo"]]
    run = node_run(suite, job, info, cache)
    run.todo = todo
    progress = Progress(len(todo), False)
    run.setup(todo, progress)
    for rnd, cells in run.schedule(todo):
        run.do_group(rnd, cells, progress)
        yield {"kind": "records", "records": [r.to_json() for r in run.store.take()]}


class _Collected:
    """The node's store: records wait here until the task yields them to the run's parent."""

    def __init__(self) -> None:
        self.path = Path(os.devnull)
        self._records: list = []

    def append(self, record) -> None:
        self._records.append(record)

    def take(self) -> list:
        out, self._records = self._records, []
        return out


def node_run(suite, job: dict[str, Any], info: dict[str, Any], cache: Path) -> SuiteRun:
    """A SuiteRun on a node, following the parent's plan (rounds, run id, config hashes) with the node's
    cache, logs and provenance; its records wait in a `_Collected` until the task yields them."""
    from effbench.execution.workers import run_in_worker
    from effbench.results.provenance import provenance
    from effbench.runners import runner_packages
    out = cache / "fleet-runs" / job["run_id"]
    opts = RunOptions(out_dir=out, cache_dir=cache, quick=job["quick"], rounds=job["rounds"],
                      progress=False, timeout_s=job.get("timeout_s"))
    run = SuiteRun(suite, opts, [], store=_Collected())
    run.logs.mkdir(parents=True, exist_ok=True)
    # the speed index in a fresh worker: this Ray worker's numpy was loaded under Ray's settings
    speed = run_in_worker("effbench.measure.speed:speed_index", {}, timeout_s=600,
                          log_path=run.logs / "speed-index.log")
    prov = provenance(suite_sha256=suite.sha256, run_id=job["run_id"], suite=suite.name,
                      runner_packages=runner_packages(), speed=speed.value if speed.kind == "ok" else None)
    run.follow(run_id=job["run_id"], rounds=job["rounds"], hashes=job["hashes"], provenance=prov.replace(node=info))
    return run
