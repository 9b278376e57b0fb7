"""A run over a fleet of device nodes through Ray (`effbench run --ray ADDRESS`, docs/fleet.md).

Each of the suite's devices that a live node advertises (`effbench node --device ID`) gets its own copy of
the cells, `cell@device`, measured on such a node (`effbench.fleet.node.measure_on_node`); `local` is measured
here as always; every record streams back into this run's one store as its round ends, and is projected
here onto every profile (the measuring device's projection beside its measurement, with the error). A
node or Ray worker lost mid-cell: its cells are retried once on another node of the device, or recorded
failed with the reason; the run goes on.
"""
from __future__ import annotations

import fnmatch
import logging
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from effbench.config.suite import Cell, Suite
from effbench.errors import UserError, gist
from effbench.execution.pairing import group_key
from effbench.execution.progress import OutputLock, Progress
from effbench.execution.run import RunOptions, SuiteRun, run_options
from effbench.fleet.node import import_ray, make_bundle, measure_on_node, resource
from effbench.results.record import Energy, Record
from effbench.results.store import Results, load

LOCAL = "local"
POLL_S = 2.0  # how often a quiet fleet is checked for nodes that went away (ray.wait blocks meanwhile)


def connect(address: str):
    """Ray, joined to the cluster at `address` as this run's driver; a one-line error when it cannot."""
    ray = import_ray()
    if ray.is_initialized():  # this process already joined a cluster (a notebook): use that one
        return ray
    fix = ("start one with `effbench node --head` on the machine that runs effbench and pass its address, "
           "e.g. --ray 127.0.0.1:6379 (docs/fleet.md)")
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:
        import socket
        try:  # Ray's own join keeps retrying a dead address for minutes: ask the port first
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as e:
            raise UserError(f"no Ray cluster answers at {address}: {e.strerror or e}", field="--ray", fix=fix) from None
    try:
        ray.init(address=address, namespace="effbench", log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=False)
    except Exception as e:  # ConnectionError, RuntimeError, ValueError ... all mean: no cluster there
        raise UserError(f"cannot join the Ray cluster at {address}: {gist(e)}", field="--ray", fix=fix) from None
    return ray


def live_devices(ray) -> dict[str, list[dict[str, Any]]]:
    """{device id: [live node advertising it: ray_node_id, address, hostname]}."""
    out: dict[str, list[dict[str, Any]]] = {}
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        for key in n.get("Resources") or {}:
            if key.startswith(resource("")):
                out.setdefault(key[len(resource("")):], []).append(
                    {"ray_node_id": n["NodeID"], "address": n.get("NodeManagerAddress"),
                     "hostname": n.get("NodeManagerHostname")})
    return out


def where(node: dict[str, Any] | None) -> str:
    if not node:
        return "a node not yet known"
    return f"node {str(node.get('ray_node_id'))[:12]} ({node.get('hostname') or node.get('address')})"


@dataclass
class Job:
    """One Ray task: every round of one group (model, runner, scenario) of one device's cells."""

    device: str
    todo: list[tuple[int, Cell]]
    attempt: int = 1
    pinned: str | None = None                 # a retry's node
    node: dict[str, Any] | None = None        # where it runs, once it said so
    history: list[str] = field(default_factory=list)   # how earlier attempts ended
    remaining: set[tuple[int, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.remaining = {(r, c.cell_id) for r, c in self.todo}

    @property
    def what(self) -> str:
        c = self.todo[0][1]
        return f"{c.model}/*/{c.runner_label}/{c.scenario}@{self.device}"


def run(suite: Suite | str | Path, *, ray: str, hooks: list[Callable] | None = None, **options: Any) -> Results:
    """`effbench run --ray ADDRESS`: the suite's devices that a live node of the cluster advertises are
    measured on such nodes, the rest here or projected. `options`: as `effbench.execution.run.run`."""
    suite, opts = run_options(suite, **options)
    with OutputLock(opts.out_dir):
        return FleetRun(suite, opts, hooks or [], address=ray).run()


class FleetRun:
    """A run whose plan holds each fleet device's cells too: a `SuiteRun` measures the local ones in this
    process while a dispatcher thread has the nodes measure the others; both write through the
    SuiteRun's `finish` (one store, one display, one lock)."""

    def __init__(self, suite: Suite, opts: RunOptions, hooks: list[Callable], *, address: str) -> None:
        self.here = SuiteRun(suite, opts, hooks)
        self.suite, self.opts = suite, opts
        self.address = address
        self.devices: list[str] = []        # the suite's devices that live nodes advertise
        self.local = True
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._ray: Any = None
        self._remote: Any = None
        self._bundle: Any = None

    # -- plan
    def cells(self) -> list[Cell]:
        base = self.suite.cells(None)
        out = (list(base) if self.local else []) + [c.replace(measured_on=d) for d in self.devices for c in base]
        if self.opts.only:
            out = [c for c in out if any(fnmatch.fnmatchcase(c.cell_id, g) for g in self.opts.only)]
        return out

    def choose_devices(self, live: dict[str, list[dict[str, Any]]]) -> list[str]:
        """The suite's devices (profile ids, also of profile files) that a live node advertises; the
        parent measures the local cells when `local` is listed, or when no device has a node."""
        from effbench.devices import load_profiles
        names = [d for d in self.suite.spec.devices if d != LOCAL]
        ids = [p.id for p in load_profiles(names, base_dir=self.suite.base_dir, suite_file=str(self.suite.path))]
        self.devices = [d for d in ids if d in live]
        self.local = LOCAL in self.suite.spec.devices or not self.devices
        return self.devices

    def run(self) -> Results:
        owned = not import_ray().is_initialized()
        ray = self._ray = connect(self.address)
        try:
            live = live_devices(ray)
            self.choose_devices(live)
            self._say_where(live)
            cells = self.cells()
            if not cells:
                raise UserError(f"--only {' '.join(self.opts.only or [])} matches no cell of this fleet run",
                                file=self.suite.path, field="--only",
                                fix="use a glob over cell ids such as 'digits-cnn/*/onnxruntime/*@raspberry-pi-5'")
            todo = self.here.plan(cells)
            progress = self.here.progress(len(todo))
            local = [(r, c) for r, c in todo if c.measured_on is None]
            remote = [(r, c) for r, c in todo if c.measured_on is not None]
            thread = threading.Thread(target=self._dispatch, args=(remote, progress), name="effbench-fleet",
                                      daemon=True)
            thread.start()
            try:
                self.here.measure(local, progress)
                while thread.is_alive():
                    thread.join(0.5)  # in slices, so Ctrl-C reaches this thread
            finally:
                self._stop.set()
                progress.close()
            if self._error is not None:
                raise self._error
        finally:
            if owned:
                ray.shutdown()  # the tasks this driver owns end with it
        return load(self.here.store.path, allow_mixed=self.here.opts.allow_mixed)

    def _say_where(self, live: dict[str, list[dict[str, Any]]]) -> None:
        listed = [d for d in self.suite.spec.devices if d != LOCAL]
        if not self.devices:
            print(f"warning: no live node of {self.address} advertises a device of this suite "
                  f"({', '.join(listed) or 'none listed'}); measuring here as without --ray", file=sys.stderr)
        if not self.opts.progress:
            return
        parts = [f"{d} on {len(live[d])} node(s) ({', '.join(sorted({n['hostname'] or n['address'] for n in live[d]}))})"
                 for d in self.devices]
        if self.local:
            parts.append("local here")
        projected = [d for d in listed if d not in self.devices]
        print(f"effbench: measuring {'; '.join(parts)}" + (f"; projected only: {', '.join(projected)}" if projected
                                                           else ""), file=sys.stderr)

    # -- the dispatcher (its own thread)
    def _dispatch(self, todo: list[tuple[int, Cell]], progress: Progress) -> None:
        try:
            if todo:
                self._dispatch_jobs(self.jobs(todo), progress)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
            self._error = e

    @staticmethod
    def jobs(todo: list[tuple[int, Cell]]) -> list[Job]:
        """One job per device and group, its rounds in the plan's order."""
        by: dict[tuple, list[tuple[int, Cell]]] = {}
        for rnd, cell in todo:
            by.setdefault((cell.measured_on, group_key(cell)), []).append((rnd, cell))
        return [Job(device=key[0], todo=items) for key, items in by.items()]

    def _submit(self, job: Job) -> Any:
        ray = self._ray
        if self._remote is None:
            # a fresh Ray worker per task (max_calls=1): nothing a measurement loaded outlives it; no CPU or
            # GPU asked for, only the device's one token, so one task at a time per node; retries are ours
            self._remote = ray.remote(num_cpus=0, num_gpus=0, max_calls=1, max_retries=0)(measure_on_node)
            self._bundle = ray.put(make_bundle(self.suite))  # once: every task reads the same object
        options: dict[str, Any] = {"resources": {resource(job.device): 1}, "name": f"effbench {job.what}"}
        if job.pinned:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=job.pinned, soft=False)
        payload = {"device": job.device, "run_id": self.here.run_id, "rounds": self.here.rounds, "quick": self.opts.quick,
                   "timeout_s": self.opts.timeout_s,
                   "hashes": {c.cell_id: self.here.hashes[c.cell_id] for _, c in job.todo},
                   "todo": [[r, c.to_json()] for r, c in job.todo]}
        return self._remote.options(**options).remote(self._bundle, payload)

    def _dispatch_jobs(self, jobs: list[Job], progress: Progress) -> None:
        ray = self._ray
        running = {self._submit(job): job for job in jobs}
        while running and not self._stop.is_set():
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            if not ready:
                self._check_nodes(running, progress)
                continue
            gen = ready[0]
            job = running[gen]
            try:
                msg = ray.get(next(gen))
            except StopIteration:
                del running[gen]
                if job.remaining:
                    self._lost(job, "the node's task ended without measuring them", running, progress, retry=False)
                continue
            except ray.exceptions.RayTaskError as e:  # effbench itself raised on the node: it would again
                del running[gen]
                cause = getattr(e, "cause", None) or e
                why = cause.one_line() if isinstance(cause, UserError) else gist(cause)
                self._lost(job, f"error: {why}", running, progress, retry=False)
                continue
            except ray.exceptions.RayError as e:  # the Ray worker or its node died, or it could not be placed
                del running[gen]
                self._lost(job, gist(e), running, progress, retry=True)
                continue
            if msg.get("kind") == "hello":
                job.node = msg["node"]
                from effbench.version import __version__
                if job.node.get("effbench") != __version__:
                    progress.warn(f"warning: {where(job.node)} runs effbench {job.node.get('effbench')}, this run "
                                  f"{__version__}")
                progress.log(f"fleet: {job.what} on {where(job.node)}"
                             + (f" (attempt {job.attempt})" if job.attempt > 1 else ""))
            for d in msg.get("records", ()):
                self._adopt(Record.from_json(d), job, progress)

    def _check_nodes(self, running: dict[Any, Job], progress: Progress) -> None:
        """Jobs whose device has no live node left (they would wait for one forever), or whose node died
        without Ray saying so yet, end here."""
        ray = self._ray
        live = live_devices(ray)
        alive = {n["ray_node_id"] for nodes in live.values() for n in nodes}
        for gen, job in list(running.items()):
            if job.node is not None and job.node.get("ray_node_id") not in alive:
                why, retry = "its node left the cluster", True
            elif job.node is None and (job.device not in live or (job.pinned and job.pinned not in alive)):
                why, retry = f"no live node advertises {resource(job.device)} any more", False
            else:
                continue
            del running[gen]
            ray.cancel(gen, force=True)
            self._lost(job, why, running, progress, retry=retry)

    def _lost(self, job: Job, why: str, running: dict[Any, Job], progress: Progress, *, retry: bool) -> None:
        """A job's task ended before all its records came back: the rest is retried once on another live
        node of the device, or each is recorded failed with the reason."""
        reason = f"the Ray task measuring it on {where(job.node)} ended: {why}"
        todo = [(r, c) for r, c in job.todo if (r, c.cell_id) in job.remaining]
        if retry and job.attempt == 1:
            failed_on = (job.node or {}).get("ray_node_id")
            others = [n for n in live_devices(self._ray).get(job.device, []) if n["ray_node_id"] != failed_on]
            if others:
                progress.warn(f"warning: {job.what}: {reason}; {len(todo)} cell-round(s) retried once on "
                              f"{where(others[0])}")
                nxt = Job(device=job.device, todo=todo, attempt=2, pinned=others[0]["ray_node_id"],
                          history=[*job.history, reason])
                running[self._submit(nxt)] = nxt
                return
            reason += f"; no other live node of {job.device} to retry on"
        if job.history:
            reason += f" (a retry after: {'; '.join(job.history)})"
        progress.warn(f"warning: {job.what}: {reason}")
        node = {**(job.node or {"device": job.device}), "attempt": job.attempt}
        for rnd, cell in todo:
            rec = self.here.record(rnd, cell, reason=reason)
            self.here.finish(rec.replace(provenance=rec.provenance.replace(node=node)), progress)

    def _adopt(self, record: Record, job: Job, progress: Progress) -> None:
        """A record from a node: the attempt it came from, its energy and projections made here, stored."""
        key = (record.round, record.cell_id)
        if key not in job.remaining:  # not this job's, or already stored: every cell-round once
            return
        job.remaining.discard(key)
        node = {**(record.provenance.node or {}), "attempt": job.attempt}
        if job.history:
            node["retry_of"] = list(job.history)
        record = record.replace(provenance=record.provenance.replace(node=node))
        if record.ok:
            record = self.on_device(record)
        self.here.finish(record, progress)

    def on_device(self, record: Record) -> Record:
        """Energy (when the node has no counter: its device profile's model at the measured latency) and
        the projections onto every profile; the measuring device's carries the measurement and the error."""
        from effbench.devices import project_record
        device = record.measured_on
        profile = next((p for p in self.here.profiles if p.id == device), None)
        if profile is not None and not (record.energy and record.energy.measured):
            record = record.replace(energy=self._device_energy(record, profile))
        projections = project_record(record, self.here.profiles) if self.here.profiles else {}
        measured = record.latency_ms.median if record.latency_ms else None
        for pid, p in projections.items():
            if pid == device and p.status == "ok" and p.latency_ms is not None and measured:
                p = p.replace(measured_latency_ms=measured, error_pct=(p.latency_ms - measured) / measured * 100.0)
            elif p.measured_latency_ms is not None:  # describes() knows the parent's CPU, not this node
                p = p.replace(measured_latency_ms=None, error_pct=None)
            projections[pid] = p
        return record.replace(projections=projections)

    def _device_energy(self, record: Record, profile) -> Energy:
        from effbench.measure.energy import modeled_energy
        from effbench.scenarios.plan import SERVER
        if record.cell.scenario == SERVER:
            return record.energy or Energy(reason="not given for the server scenario")
        ms, b = record.model_stats, record.cell.batch_size
        if ms is None or ms.macs is None or not record.latency_ms:
            return Energy(reason=f"energy not measured on the node and not modeled ({profile.id}: no work count)")
        try:
            out = modeled_energy(macs=ms.macs // b, bytes_moved=(ms.bytes_moved or 0) // b,
                                 precision=record.cell.precision,
                                 seconds_per_inference=record.latency_ms.median / 1e3 / b,
                                 model=profile.energy(), profile_id=profile.id)
        except (UserError, ValueError) as e:
            return Energy(reason=f"energy not measured on the node and not modeled: {e}")
        if out.get("j_per_inference") is not None:
            out["reason"] = f"no energy counter on the node: modeled from the {profile.id} profile at the measured latency"
        return Energy.from_json(out)
