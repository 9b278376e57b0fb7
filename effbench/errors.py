"""The one exception type for a user's mistake: it names the file, the field and the fix.

The CLI prints it as one `error:` line and exits 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix: bad YAML, a missing file, an unknown name."""

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None,
                 field: str | None = None, fix: str | None = None) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.fix = fix
        super().__init__(self.one_line())

    def __reduce__(self):  # survives the trip back from a worker process
        return (_rebuild, (self.message, self.file, self.line, self.field, self.fix))

    def one_line(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        field = f"{self.field}: " if self.field else ""
        fix = f"; {self.fix}" if self.fix else ""
        text = f"{where}{field}{self.message}{fix}"
        return " ".join(text.split())  # one line, always


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def out_of_memory(e: BaseException) -> bool:
    """MemoryError, ENOMEM, or a library that could not map/allocate under RLIMIT_AS (an import of a
    shared object fails with "failed to map segment", ORT's arena with "Failed to allocate memory")."""
    import errno
    text = str(e)
    return (isinstance(e, MemoryError) or getattr(e, "errno", None) == errno.ENOMEM
            or any(s in text for s in ("failed to map segment", "Cannot allocate memory", "bad_alloc",
                                       "Failed to allocate memory")))


def short_paths(text: str, roots: Iterable[tuple[str | Path, str]] = ()) -> str:
    """`text` (a reason for a record or a report) without this machine's folders: a path under one of `roots`
    (folder, label) starts with the label instead ('<cache>' for the variant cache: its cache-relative name;
    '' for a suite's folder: the relative path the user gave), then one under the working folder is relative
    to it and one under the home folder starts with '~'. The deepest root wins; a root is replaced only where
    a path starts and ends with it (so /data is not a prefix of /database)."""
    import os
    import re
    home = str(Path.home()).rstrip("/")
    forms: dict[str, str] = {}
    for root, label in [*roots, (Path.cwd(), ""), (home, "~")]:
        r = str(root).rstrip("/")
        if not r:
            continue
        for f in (r, os.path.realpath(r)):
            forms.setdefault(f, label)
            if home and f.startswith(home + "/"):
                forms.setdefault("~" + f[len(home):], label)  # a reason already shortened to ~/...
    if not forms:
        return text
    alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.~/-])({alternatives})(/|(?![\w.-]))")

    def replace(m: re.Match) -> str:
        label, slash = forms[m.group(1)], m.group(2)
        if label:
            return label + slash
        return "" if slash else "."
    return pattern.sub(replace, text)


def gist(e: BaseException) -> str:
    """One line for a record's reason: the exception's type and first line (this machine's folders
    shortened: `short_paths`), and for an out-of-memory the worker's address-space limit
    (`limit_address_space`), for a whole worker or one variant in it."""
    import resource
    first = short_paths(str(e).strip().splitlines()[0])[:300] if str(e).strip() else ""
    line = f"{type(e).__name__}: {first}".rstrip(": ")
    if not out_of_memory(e):
        return line
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    oom = f"out of memory (worker limit {limit // 2**20} MB)" if limit != resource.RLIM_INFINITY else "out of memory"
    return oom if isinstance(e, MemoryError) and not first else f"{oom}: {line}"


def _rebuild(message, file, line, field, fix) -> UserError:
    return UserError(message, file=file, line=line, field=field, fix=fix)
