"""No network (issue 8): a run with sockets unusable for the process and all its workers completes.

The real test: `unshare -n` puts the run in an empty network namespace (no interface but a down
loopback). Where that is not permitted, a sitecustomize.py on PYTHONPATH (inherited by every worker)
makes socket.connect raise."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from hardening_util import ROOT, run_cli, tiny_suite

from effbench.results.store import load

PROBE = ("import socket, sys\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(2)\n"
         "try:\n    s.connect(('1.1.1.1', 53))\nexcept OSError as e:\n    print('blocked', e)\n    sys.exit(0)\n"
         "sys.exit('the network is reachable: the test would prove nothing')\n")

SITECUSTOMIZE = ("import socket\n"
                 "def _no(self, *a, **k):\n    raise OSError(101, 'network blocked by the effbench no-network test')\n"
                 "socket.socket.connect = _no\nsocket.socket.connect_ex = _no\nsocket.create_connection = "
                 "lambda *a, **k: _no(None)\n")


def _unshare_ok() -> bool:
    return bool(shutil.which("unshare")) and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_run_without_network(tmp_path):
    if _unshare_ok():
        prefix, env, how = ["unshare", "-n"], {}, "unshare -n"
    else:
        guard = tmp_path / "guard"
        guard.mkdir()
        (guard / "sitecustomize.py").write_text(SITECUSTOMIZE)
        prefix, how = [], "sitecustomize"
        env = {"PYTHONPATH": os.pathsep.join([str(guard), str(ROOT)])}
    full_env = dict(os.environ, **env)
    probe = subprocess.run([*prefix, sys.executable, "-c", PROBE], capture_output=True, text=True, env=full_env)
    assert probe.returncode == 0 and "blocked" in probe.stdout, probe.stdout + probe.stderr
    suite = tiny_suite(tmp_path, batch_sizes="[1, 4]", devices="[local, raspberry-pi-5]")
    out = tmp_path / "out"
    res = run_cli("run", str(suite), "-o", str(out), "--quick", "--cache-dir", str(tmp_path / "cache"),
                  "--no-progress", prefix=prefix, env=env)
    assert res.returncode == 0, f"[{how}] {res.stderr}"
    results = load(out)
    assert len(results) == 2 and all(r.ok for r in results)
    assert all(set(r.projections) == {"local", "raspberry-pi-5"} for r in results)
    assert (out / "index.html").is_file() and (out / "summary.md").is_file()
    # the report itself loads nothing from the network (plotly is inlined)
    html = (out / "index.html").read_text()
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", html, re.I)
