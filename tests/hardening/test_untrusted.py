"""Untrusted content (issue 8): no unsafe deserialisation anywhere in the package, the README says that
a `torch:` factory runs user code, and hostile strings in any field of a results store render as text
in index.html and summary.md (and a hand-edited store never crashes `effbench report`)."""
from __future__ import annotations

import ast
import copy
import json
import re
import sys
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

from hardening_util import ROOT, one_error_line, values
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from effbench.cli import app as cli

sys.path.insert(0, str(ROOT / "tests" / "report"))
from report_fixtures import MODELS, make_records  # noqa: E402

PACKAGE = ROOT / "effbench"
# The worker protocol pickles between effbench and its own child process over a private pipe
# (workers.run_in_worker / worker_main); no user file is ever unpickled.
PICKLE_ALLOWED = {("effbench/execution/workers.py", "worker_main"), ("effbench/execution/workers.py", "run_in_worker")}


def _calls(tree: ast.AST):
    """(enclosing function name, call node, dotted callee) for every call in a module."""
    def dotted(f) -> str:
        if isinstance(f, ast.Attribute):
            return dotted(f.value) + "." + f.attr
        if isinstance(f, ast.Name):
            return f.id
        return "?"

    def walk(node, fn):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn
            if isinstance(child, ast.Call):
                yield name, child, dotted(child.func)
            yield from walk(child, name)
    yield from walk(tree, "<module>")


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def test_no_unsafe_deserialisation_in_the_package():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(), filename=rel)
        for fn, call, callee in _calls(tree):
            where = f"{rel}:{call.lineno} ({fn})"
            last = callee.rsplit(".", 1)[-1]
            if callee in ("yaml.load", "yaml.load_all"):
                loader = _kw(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
                if not (isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                    problems.append(f"{where}: {callee} without SafeLoader")
            if callee in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all"):
                problems.append(f"{where}: {callee}")
            if isinstance(call.func, ast.Attribute) and last in ("Loader", "UnsafeLoader", "FullLoader") \
                    and callee.startswith("yaml."):
                problems.append(f"{where}: {callee}")
            if callee in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "joblib.load",
                          "marshal.load", "marshal.loads", "shelve.open") and (rel, fn) not in PICKLE_ALLOWED:
                problems.append(f"{where}: {callee} (unpickling runs code)")
            if callee == "torch.load":
                wo = _kw(call, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if callee in ("np.load", "numpy.load"):
                ap = _kw(call, "allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    problems.append(f"{where}: np.load with allow_pickle other than False")
            if callee in ("eval", "exec"):
                problems.append(f"{where}: {callee}")
            if callee in ("subprocess.run", "subprocess.Popen", "os.system") and _kw(call, "shell") is not None:
                shell = _kw(call, "shell")
                if not (isinstance(shell, ast.Constant) and shell.value is False):
                    problems.append(f"{where}: {callee} with shell=")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_what_it_claims():
    """The scan above is only worth something if it fires: feed it the bad forms."""
    bad = ("import yaml, pickle, torch, numpy as np\nyaml.load(t)\nyaml.load(t, Loader=yaml.Loader)\n"
           "yaml.full_load(t)\npickle.load(f)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "np.load(p, allow_pickle=True)\neval('1')\n")
    found = [callee for _, _, callee in _calls(ast.parse(bad))]
    assert {"yaml.load", "yaml.full_load", "pickle.load", "torch.load", "np.load", "eval"} <= set(found)
    tree = ast.parse("import torch\ntorch.load(p, weights_only=True)\n")
    (_, call, _), = list(_calls(tree))
    assert _kw(call, "weights_only").value is True


def test_readme_says_a_torch_factory_runs_user_code():
    text = " ".join((ROOT / "README.md").read_text().split())
    assert "a `torch:` factory is user code and effbench runs it" in text
    assert "Only run suites you trust" in text


# ----------------------------------------------------------------------------- hostile strings
PAYLOADS = ['<script>alert("pwn")</script>', "<img src=x onerror=alert('pwn')>", '"><svg onload=alert(1)>',
            "</script><script>alert('pwn')</script>", "line one\nline two | with pipe", "`code` **bold** [x](javascript:alert(1))",
            "&amp; &lt;already&gt;", "'; DROP TABLE results; --", "\u202egnp.exe", "{{7*7}} ${7*7}"]


class _Tags(HTMLParser):
    """Every element and attribute the browser would build, and the text of every script."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def _poison(obj, k=[0]):  # noqa: B006 - a counter that cycles the payloads across fields
    """Every string leaf (and dict key outside the schema's own) replaced by a hostile payload."""
    if isinstance(obj, str):
        k[0] += 1
        return PAYLOADS[k[0] % len(PAYLOADS)]
    if isinstance(obj, list):
        return [_poison(v) for v in obj]
    if isinstance(obj, dict):
        return {key: _poison(v) for key, v in obj.items()}
    return obj


def _hostile_store(tmp_path: Path) -> Path:
    recs = make_records(models={"mlp": MODELS["mlp"]}, n_samples=40)[:24]
    lines = []
    keep = {"schema", "status"}  # the store format itself; everything else a user could have typed
    for i, r in enumerate(recs):
        d = r.to_json()
        for key in list(d):
            if key not in keep:
                d[key] = _poison(d[key])
        if r.status != "ok":
            d["reason"] = PAYLOADS[i % len(PAYLOADS)]
        # the cell section keeps numbers where the report computes with them
        d["cell"]["batch_size"] = r.cell.batch_size
        d["cell"]["threads"] = r.cell.threads
        d["config_hash"] = r.config_hash
        d["round"], d["rounds"] = r.round, r.rounds
        lines.append(json.dumps(d))
    path = tmp_path / "hostile" / "results.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    return path


def test_hostile_fields_of_a_hand_written_store_render_as_text(tmp_path, capsys):
    store = _hostile_store(tmp_path)
    out = tmp_path / "report"
    rc = cli.main(["report", str(store), "-o", str(out), "--title", PAYLOADS[0]])
    err = capsys.readouterr().err
    assert one_error_line(rc, err) is None, err
    html = (out / "index.html").read_text()
    p = _Tags()
    p.feed(html)
    names = {t for t, _ in p.tags}
    assert "img" not in names and "svg" not in names, names
    assert not any(k.startswith("on") for _, attrs in p.tags for k in attrs), "an event handler attribute leaked"
    assert all("alert(" not in s or "\\u003c" in s or "&lt;" in s for s in p.scripts), \
        "a payload reached a script block unescaped"
    assert sum(1 for t, _ in p.tags if t == "script") == html.lower().count("</script>")
    assert "javascript:" not in " ".join(str(a.get("href", "")) for _, a in p.tags)
    md = (out / "summary.md").read_text()
    for payload in PAYLOADS[:4]:
        assert payload not in md and payload not in html
    # each table (its header starts a block of "|" lines) keeps one width: a field's newline or pipe would break it
    tables: list[list[str]] = [[]]
    for ln in md.splitlines():
        if ln.startswith("|"):
            tables[-1].append(ln)
        elif tables[-1]:
            tables.append([])
    for table in (t for t in tables if t and not t[0].startswith("| cell_id")):
        widths = {ln.replace("\\|", "").count("|") for ln in table}
        assert len(widths) == 1, "a newline or pipe in a field broke a Markdown table row"


def test_markdown_never_turns_a_field_into_a_link(tmp_path, capsys):
    store = _hostile_store(tmp_path)
    assert cli.main(["report", str(store), "-o", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "summary.md").read_text()
    assert not re.search(r"(?<!\\)\]\(javascript:", md), "a Markdown link with a javascript: URL survives"


# ------------------------------------------------------------------ hand-edited stores: no crash
# No shrinking: each example renders a report (about 1 s); the first counterexample is enough.
SETTINGS = settings(max_examples=10, deadline=timedelta(seconds=30), database=None,
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_BASE = [r.to_json() for r in make_records(models={"mlp": MODELS["mlp"]}, n_samples=20)[:6]]


@st.composite
def edited_store(draw) -> str:
    recs = copy.deepcopy(_BASE)
    for _ in range(draw(st.integers(1, 3))):
        rec = recs[draw(st.integers(0, len(recs) - 1))]
        key = draw(st.sampled_from(sorted(k for k in rec if k != "schema")))
        if isinstance(rec[key], dict) and rec[key] and draw(st.booleans()):
            sub = draw(st.sampled_from(sorted(rec[key])))
            rec[key][sub] = draw(values)
        else:
            rec[key] = draw(values)
    return "\n".join(json.dumps(r, default=str) for r in recs) + "\n"


@SETTINGS
@given(text=edited_store())
def test_hand_edited_store_never_crashes_report(tmp_path, capsys, text):
    store = tmp_path / "edited.jsonl"
    store.write_text(text)
    capsys.readouterr()
    rc = cli.main(["report", str(store), "-o", str(tmp_path / "r")])
    one_error_line(rc, capsys.readouterr().err)
