"""The dashboard in a real browser: headless Chromium with the network disabled.

Install the browser with `apt-get install -y chromium` (Debian); `make test` does. Where it is not on
PATH these tests fail, saying so: a skip would hide that the report was never rendered.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_fixtures import MODELS, make_records, write_store

from effbench.report import write_report
from effbench.results.store import load

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
NO_CHROMIUM = "chromium is not on PATH: install it with `apt-get install -y chromium`"
EVIL = "<script>alert(1)</script>"


def run_page(url: str, tmp_path: Path) -> tuple[str, list[str], list[str]]:
    """Load `url` with every network path closed; return (DOM, console messages, page requests)."""
    if CHROMIUM is None:
        pytest.fail(f"{NO_CHROMIUM} (`make test` installs it; a missing browser fails, never skips)")
    netlog = tmp_path / "netlog.json"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-default-apps", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
           # no name resolves and every proxied request goes to a closed port: the network is off
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
           "--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}",
           "--virtual-time-budget=3000", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    requests = []
    if netlog.exists():
        text = netlog.read_text(errors="replace").rstrip().rstrip(",")
        events = json.loads(text if text.endswith("}") else text + "]}").get("events", [])
        for ev in events:
            p = ev.get("params") or {}
            # the browser's own housekeeping has no origin; the page's requests have one ("null" for file:)
            if "url" in p and p.get("initiator", "not an origin") != "not an origin":
                requests.append(p["url"])
    return proc.stdout, console, requests


@pytest.mark.spawns
def test_harness_sees_console_errors_and_requests(tmp_path):
    """The checks below must be able to fail: a page that errs and fetches is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><p id="x">hi</p><script>console.error("boom");'
                    'fetch("http://example.com/x").catch(function(){});</script></body></html>')
    dom, console, requests = run_page(page.as_uri(), tmp_path)
    assert 'id="x"' in dom
    assert any("boom" in ln for ln in console)
    assert any(u.startswith("http://example.com/") for u in requests)


@pytest.mark.spawns
def test_report_loads_offline_without_errors(tmp_path):
    recs = make_records(models={"digits-cnn": MODELS["digits-cnn"], EVIL: MODELS["mlp"]})
    res = load(write_store(tmp_path / "r.jsonl", recs))
    html = write_report(res, tmp_path / "out")["html"]
    n_figs = len(re.findall(r'class="chart" id="fig-', html.read_text()))
    dom, console, requests = run_page(html.as_uri(), tmp_path)
    status = re.search(r'<div[^>]*id="eb-status"[^>]*>', dom)
    assert status, "the status marker is missing from the DOM"
    assert 'data-state="ready"' in status.group(0), dom[dom.find('id="eb-status"'):][:500]
    assert f'data-charts="{n_figs}"' in status.group(0) and n_figs == 8
    assert dom.count('class="main-svg"') >= n_figs          # plotly drew an SVG in every chart
    assert console == []
    assert requests == []
    # the hostile model name is text: escaped in the DOM, never an element
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert EVIL not in dom
    # sorting and filtering code ran: the filter count was filled in
    assert re.search(r'id="decision-count">showing 112 of 112 cells<', dom)
