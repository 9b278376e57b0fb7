"""Plugins: modules that register precisions, runners or other axes, imported in every effbench process.

A suite names them (`plugins: [mypkg.fp8]`, importable from the suite's folder) or the environment does
(`EFFBENCH_PLUGINS=mypkg.fp8,other.mod`). A plugin module registers on import, e.g.
`effbench.variants.register_precision(...)` with a `@effbench.variants.builder(...)`, or a runner class
with `@effbench.runners.register`. Measuring workers are fresh interpreters: `worker_env` hands them
the same list (and where each was imported from), and `load_from_env` imports it there first.
"""
from __future__ import annotations

import importlib
import os
import sys

ENV = "EFFBENCH_PLUGINS"
PATH_ENV = "EFFBENCH_PLUGIN_PATH"
_LOADED: dict[str, str | None] = {}   # module -> the folder it was imported from (None: already on the path)


def load(module: str, search_dir: str | None = None) -> None:
    """Import one plugin module (from `search_dir` when it is not importable as is). Raises ImportError."""
    if module in _LOADED:
        return
    if search_dir and search_dir not in sys.path:
        sys.path.insert(0, search_dir)
    importlib.import_module(module)
    _LOADED[module] = search_dir


def load_from_env(environ: dict[str, str] | None = None) -> list[str]:
    """Import the plugins EFFBENCH_PLUGINS names (EFFBENCH_PLUGIN_PATH: where to find them)."""
    env = os.environ if environ is None else environ
    names = [m.strip() for m in env.get(ENV, "").split(",") if m.strip()]
    for d in reversed([p for p in env.get(PATH_ENV, "").split(os.pathsep) if p]):
        if d not in sys.path:
            sys.path.insert(0, d)
    for m in names:
        load(m)
    return names


def loaded() -> list[str]:
    return list(_LOADED)


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with this process's plugins added, for a worker to import the same ones."""
    if not _LOADED:
        return env
    names = list(dict.fromkeys([m for m in env.get(ENV, "").split(",") if m] + list(_LOADED)))
    dirs = [d for d in _LOADED.values() if d] + [p for p in env.get(PATH_ENV, "").split(os.pathsep) if p]
    return {**env, ENV: ",".join(names), PATH_ENV: os.pathsep.join(dict.fromkeys(dirs))}
