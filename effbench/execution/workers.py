"""The worker protocol: `module:function(**payload)` run in a fresh interpreter with a timeout, its
result or its crash sent back as one `Outcome`.

The parent never busy-waits: it blocks on the worker's pipe with a timeout (docs/runtime-notes.md: a spinning
parent takes one of two cores and doubled the latency a known harness reported here).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effbench.errors import UserError, gist, short_paths

# The timeout of a worker that prepares a model, builds a variant or scores quality (a measuring
# worker's comes from the run: --timeout, the suite's measure.timeout_s or its budget).
BUILD_TIMEOUT_S = 1800.0


@dataclass
class Outcome:
    kind: str            # ok | user_error | unsupported | failed
    value: Any = None
    reason: str | None = None


def worker_main(result_fd: int, memory_limit_mb: int | None) -> None:
    """Runs in the fresh interpreter: read (target, payload) from stdin, send one Outcome back."""
    import importlib
    import pickle

    from effbench.config import plugins
    from effbench.measure.memory import limit_address_space
    from effbench.runners import Unsupported
    _die_with_parent()
    target, payload = pickle.load(sys.stdin.buffer)
    try:
        plugins.load_from_env()  # the parent's precisions and runners, registered here too
        limit_address_space(memory_limit_mb)
        mod_name, fn_name = target.split(":")
        fn = getattr(importlib.import_module(mod_name), fn_name)
        out = Outcome("ok", fn(**payload))
    except UserError as e:
        out = Outcome("user_error", e)
    except Unsupported as e:
        out = Outcome("unsupported", reason=short_paths(str(e)))
    except BaseException as e:  # a bug or a runtime error: the traceback goes to the log, the gist to the record
        traceback.print_exc()
        out = Outcome("failed", reason=gist(e))
    try:
        data = pickle.dumps(out)
    except Exception as e:  # unpicklable result: say so rather than die silently
        data = pickle.dumps(Outcome("failed", reason=f"worker result could not be sent back: {e}"))
    with os.fdopen(result_fd, "wb") as f:
        f.write(data)


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the effbench process that started it dies (kill -9 of a run must
    not leave a hung worker burning a core; start_new_session keeps it out of the run's process group)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl ran
            os._exit(1)


def run_in_worker(target: str, payload: dict, *, timeout_s: float, log_path: Path | None = None,
                  memory_limit_mb: int | None = None) -> Outcome:
    """Run `module:function(**payload)` in a fresh interpreter; a crash or timeout is an Outcome.

    A fresh `python -m effbench.execution.workers` rather than multiprocessing's spawn: spawn re-runs the
    caller's __main__ module, which breaks any user script without a main guard.
    """
    import pickle
    import selectors
    import subprocess
    read_fd, write_fd = os.pipe()
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    from effbench.config import plugins
    env = plugins.worker_env(dict(os.environ))
    pkg_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "effbench.execution.workers", "--worker", str(write_fd), str(memory_limit_mb or 0)]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                pass_fds=(write_fd,), env=env, start_new_session=True)
    finally:
        os.close(write_fd)  # the parent's copy: the pipe reports EOF when the child dies
        if log_path:
            log.close()
    chunks: list[bytes] = []
    try:
        try:
            proc.stdin.write(pickle.dumps((target, payload)))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(read_fd, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):  # blocks in the kernel: no spinning
                    _kill(proc)
                    return Outcome("failed", reason=f"timed out after {timeout_s:g} s" + _log_tail(log_path))
                chunk = os.read(read_fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            _kill(proc)
        if not chunks:
            return Outcome("failed", reason=_death_reason(proc.returncode, memory_limit_mb) + _log_tail(log_path))
        try:
            return pickle.loads(b"".join(chunks))
        except Exception as e:
            return Outcome("failed", reason=f"worker sent an unreadable result ({type(e).__name__})")
    finally:
        os.close(read_fd)
        if proc.poll() is None:
            _kill(proc)


def _kill(proc) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and anything it started
    with contextlib.suppress(Exception):
        proc.wait(10)


def _death_reason(code: int | None, memory_limit_mb: int | None) -> str:
    if code is None:
        return "worker did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGSEGV": " (segmentation fault in the runtime)", "SIGABRT": " (the runtime aborted)",
                "SIGKILL": " (killed: out of memory?)", "SIGBUS": " (bus error)"}.get(name, "")
        return f"worker crashed: {name}{hint}"
    return f"worker exited with code {code} without a result"


def _log_tail(log_path: Path | None, lines: int = 2) -> str:
    if not log_path or not Path(log_path).is_file():
        return ""
    try:
        tail = [ln.strip() for ln in Path(log_path).read_text(errors="replace").splitlines() if ln.strip()][-lines:]
    except OSError:
        return ""
    return f" [log: {' | '.join(t[:160] for t in tail)}]" if tail else ""


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    # Re-import under the package name so pickled Outcomes name `effbench.execution.workers`, not `__main__`.
    from effbench.execution.workers import worker_main as _main
    _main(int(sys.argv[2]), int(sys.argv[3]) or None)
