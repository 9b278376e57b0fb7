"""Other processes competing for this machine's cores, measured, and what a group of timed cells does about it.

A busy process on one of two cores does not slow a 2-thread runtime evenly: every parallel operator waits
for its slower thread, the one that shares a core, and the scheduler's time slices make that wait jump from
block to block. On a shared CI machine that turned half the table unstable (issue 30). The competitor is
measured directly, not guessed from the load average: the CPU time the whole machine spent busy over a short
window (`/proc/stat`), minus the CPU time of this process tree (`/proc/<pid>/stat` of each), in cores.
Steal time (a hypervisor giving our vCPU to another guest) is counted apart: waiting cannot fix it either.
So is niced time (processes at nice > 0): the scheduler gives a normal-priority thread almost the whole core
over them (nice 19 weighs 15 against nice 0's 1024), so they are no competitor, unless effbench itself
runs niced, when they are counted as any other.

The policy (`plan_threads`): when a competitor holds at least `MIN_COMPETITOR_CORES`, wait up to `wait_s`
for it to go; if it stays, run the group with the cores it leaves free (never fewer than one thread) and
say so. A variant and its FP32 twin always share the thread count, so the paired speedup still compares
like with like; the record's drift section names the threads used and the competitor measured.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

MIN_COMPETITOR_CORES = 0.5   # a competitor this busy or more is acted on
WAIT_S = 20.0                # how long a group waits for a competitor to go before it falls back
WINDOW_S = 0.5               # one reading's window


@dataclass(frozen=True)
class Reading:
    """One window's view of the machine: cores busy with other processes, stolen, and in all."""

    competitor_cores: float
    steal_cores: float
    busy_cores: float
    own_cores: float
    window_s: float
    niced_cores: float = 0.0     # busy at nice > 0: not counted as a competitor unless we run niced too

    def to_json(self) -> dict:
        return {k: round(v, 3) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ThreadPlan:
    """What a group runs with: the threads asked and used, how long it waited, the readings it saw."""

    asked: int | None
    threads: int | None
    waited_s: float
    reading: Reading | None
    action: str                  # "quiet" | "waited" | "fewer threads" | "unmeasured"
    note: str | None = None

    def to_json(self) -> dict:
        return {"threads_asked": self.asked, "threads_used": self.threads, "waited_s": round(self.waited_s, 2),
                "contention": self.reading.to_json() if self.reading else None, "action": self.action,
                "note": self.note}


def _cpu_lines(stat_text: str) -> int:
    """How many CPUs /proc/stat describes (its cpuN lines): the cores its aggregate line adds up."""
    return sum(1 for line in stat_text.splitlines() if line.startswith("cpu") and line[3:4].isdigit()) or 1


def _cpu_times(stat_text: str) -> tuple[int, int, int, int]:
    """(busy, steal, total, niced) jiffies from /proc/stat's aggregate line; busy excludes idle, iowait and
    steal and includes niced (user time at nice > 0)."""
    fields = stat_text.split("\n", 1)[0].split()
    if fields[0] != "cpu":
        raise ValueError("/proc/stat does not start with the aggregate cpu line")
    vals = [int(v) for v in fields[1:]]
    user, nice, system, idle, iowait, irq, softirq = vals[:7]
    steal = vals[7] if len(vals) > 7 else 0
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal, nice


def _tree_pids(root: int) -> list[int]:
    """`root` and its descendants (from /proc/*/stat's parent field)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            parent[int(entry)] = int(text.rsplit(")", 1)[1].split()[1])
    out, frontier = [root], [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def _tree_jiffies(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:   # gone meanwhile
            continue
        total += int(fields[11]) + int(fields[12])   # utime, stime
    return total


def read(window_s: float = WINDOW_S, *, root: int | None = None, sleep: Callable[[float], None] = time.sleep,
         proc: str = "/proc/stat") -> Reading | None:
    """Cores busy with processes outside `root`'s tree (default: this process) over `window_s`; None where
    /proc is not readable (not Linux)."""
    try:
        with open(proc) as f:
            before = _cpu_times(f.read())
    except (OSError, ValueError, IndexError):
        return None
    pids = _tree_pids(os.getpid() if root is None else root)
    own0 = _tree_jiffies(pids)
    sleep(window_s)
    with open(proc) as f:
        text = f.read()
    after = _cpu_times(text)
    own1 = _tree_jiffies(pids)
    total = after[2] - before[2]
    if total <= 0:
        return None
    scale = _cpu_lines(text) / total          # jiffies -> cores busy on average over the window
    busy = (after[0] - before[0]) * scale
    own = max(0, own1 - own0) * scale
    niced = (after[3] - before[3]) * scale
    # running at nice 0, our own time is never niced: niced time is others', and they yield to us
    others = busy - own - (niced if _own_nice() <= 0 else 0.0)
    return Reading(competitor_cores=max(0.0, others), steal_cores=(after[1] - before[1]) * scale,
                   busy_cores=busy, own_cores=own, window_s=window_s, niced_cores=niced)


def _own_nice() -> int:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (OSError, AttributeError):
        return 0


def plan_threads(threads: int | None, *, wait_s: float = WAIT_S, cores: int | None = None,
                 reader: Callable[[], Reading | None] = read, clock: Callable[[], float] = time.monotonic
                 ) -> ThreadPlan:
    """How many threads a group should run with now: as asked on a quiet machine; as asked after waiting
    when the competitor leaves within `wait_s`; otherwise the cores it leaves free (at least one)."""
    cores = cores or os.cpu_count() or 1
    start = clock()
    first = reading = reader()
    if reading is None:
        return ThreadPlan(threads, threads, 0.0, None, "unmeasured", "no /proc/stat: contention not measured")
    while reading is not None and reading.competitor_cores >= MIN_COMPETITOR_CORES and clock() - start < wait_s:
        reading = reader()
    waited = clock() - start if first.competitor_cores >= MIN_COMPETITOR_CORES else 0.0
    if reading is None or reading.competitor_cores < MIN_COMPETITOR_CORES:
        action = "waited" if waited else "quiet"
        note = (f"waited {waited:.0f} s for {first.competitor_cores:.1f} busy core(s) of other processes to go"
                if waited else None)
        return ThreadPlan(threads, threads, waited, reading or first, action, note)
    free = max(1, int(round(cores - reading.competitor_cores)))
    want = threads or cores
    if want <= free:
        return ThreadPlan(threads, threads, waited, reading, "waited",
                          f"other processes kept {reading.competitor_cores:.1f} core(s) busy; {want} thread(s) "
                          f"still fit the {free} free")
    return ThreadPlan(threads, free, waited, reading, "fewer threads",
                      f"other processes kept {reading.competitor_cores:.1f} of {cores} cores busy for {waited:.0f} s: "
                      f"ran with {free} thread(s) instead of {want}, so no thread shares a core with them")
