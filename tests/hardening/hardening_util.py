"""Shared helpers of the hardening tests: YAML mutation strategies, a per-case watchdog, the
one-line-error property, and counters the fuzz tests print at the end (issue 8 wants the figures)."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
HELPERS = ROOT / "tests" / "helpers"
TINY_ONNX = DATA / "models" / "tiny.onnx"
GOOD_NPZ = DATA / "models" / "good.npz"
QUICK = "measure: {warmup_s: 0.02, min_time_s: 0.05, max_time_s: 0.3, target_rel_ci: 0.05, rounds: 1}\n"


class Hang(Exception):
    """A fuzz case ran past its wall-clock bound: a hang, which the issue forbids."""


@contextlib.contextmanager
def watchdog(seconds: float):
    """Raise Hang in this (main) thread if the block runs longer than `seconds` (a real hang guard;
    hypothesis' deadline only judges a case after it returns)."""
    def fire(signum, frame):
        raise Hang(f"case still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def normalise(message: str) -> str:
    """An error line with names, paths and numbers replaced, to count distinct kinds of message."""
    m = message.removeprefix("error: ")
    m = re.sub(r"^\S+?\.(yaml|yml|npz|onnx)(:\d+)?: ", "FILE: ", m)
    m = re.sub(r"'[^']*'", "'X'", m)
    m = re.sub(r'"[^"]*"', '"X"', m)
    m = re.sub(r"\(got [^)]*\)", "(got V)", m)
    m = re.sub(r"\[\d+\]", "[N]", m)
    m = re.sub(r"-?\d+(\.\d+)?(e[+-]?\d+)?", "N", m)
    m = re.sub(r"/\S+", "PATH", m)
    return m


class Tally:
    """Cases run and distinct (normalised) error messages, per fuzz target."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cases = 0
        self.valid = 0
        self.errors: Counter[str] = Counter()

    def add(self, error_line: str | None) -> None:
        self.cases += 1
        if error_line is None:
            self.valid += 1
        else:
            self.errors[normalise(error_line)] += 1

    def text(self) -> str:
        lines = [f"[fuzz] {self.name}: {self.cases} cases, {self.valid} valid, "
                 f"{sum(self.errors.values())} one-line errors, {len(self.errors)} distinct messages"]
        lines += [f"[fuzz]   {n:4d}  {m[:150]}" for m, n in self.errors.most_common()]
        return "\n".join(lines)


def note(text: str) -> None:
    """A figure for the issue's closing note: to the terminal (seen with -s) and appended to
    $HARDENING_REPORT when set (pytest captures fd 2 otherwise)."""
    sys.__stderr__.write("\n" + text + "\n")
    if os.environ.get("HARDENING_REPORT"):
        with open(os.environ["HARDENING_REPORT"], "a") as f:
            f.write(text + "\n")


def report(tally: Tally) -> None:
    note(tally.text())


# ---------------------------------------------------------------------------------- strategies
NASTY_TEXT = ["", " ", "\x00", "\t", "\n", "<script>alert(1)</script>", "a" * 5000, "💥", "ǅ", "\u202e",
              "../../etc/passwd", "~", "null", "yes", "0x10", "1e309", ".nan", "-.inf", "*alias", "&anchor",
              "{", "[", "'", '"', "#", ": ", "- ", "%", "@", "`", "!!python/object:os.system"]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-5, max_value=5), st.sampled_from([0, -1, 2**31, 2**63, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-320, 1e308]),
    st.text(max_size=20), st.sampled_from(NASTY_TEXT),
    st.sampled_from(["fp32", "int8", "int8-static", "onnxruntime", "torch", "batch", "single-stream", "local",
                     "digits-cnn", "mlp", "digits", "top1", "float32"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.one_of(st.text(max_size=8), scalars),
                                                                       inner, max_size=4)),
                      max_leaves=12)


def dump(data) -> str:
    """YAML text of a Python value; keys that are not strings survive as YAML keys."""
    try:
        return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10_000)
    except (yaml.YAMLError, ValueError, OverflowError):
        return repr(data)


def paths_of(data, prefix=()):
    """Every path (tuple of keys / indexes) into a nested value, the root included."""
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from paths_of(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from paths_of(v, prefix + (i,))


def get(data, path):
    for p in path:
        data = data[p]
    return data


def deep_nest(depth: int, leaf="x"):
    out = leaf
    for _ in range(depth):
        out = [out]
    return out


def alias_bomb(levels: int, width: int) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def one_error_line(rc: int, err: str) -> str | None:
    """Check the contract: rc 0 and no error, or rc 2 and exactly one `error:` line, never a traceback.
    Returns the error line (None when valid)."""
    assert "Traceback" not in err, err
    if rc == 0:
        assert "error:" not in err, err
        return None
    assert rc == 2, f"exit {rc}: {err}"
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None,
            prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python -m effbench ARGS` as a user runs it (optionally under a wrapper such as `unshare -n`)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HELPERS)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    e.update(env or {})
    return subprocess.run([*(prefix or []), sys.executable, "-m", "effbench", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=timeout, env=e)


def tiny_suite(tmp: Path, *, batch_sizes: str = "[1, 2]", extra: str = "", model: Path = TINY_ONNX,
               dataset: bool = True, name: str = "tiny", devices: str = "[]", measure: str = QUICK) -> Path:
    p = tmp / f"{name}.yaml"
    ds = f"    dataset: {{npz: {GOOD_NPZ}}}\n" if dataset else ""
    p.write_text(f"name: {name}\nmodels:\n  - id: tiny\n    source: {{onnx: {model}}}\n{ds}"
                 f"precisions: [fp32]\nrunners: [{{name: onnxruntime, threads: 1}}]\nbatch_sizes: {batch_sizes}\n"
                 f"devices: {devices}\n{measure}{extra}")
    return p
