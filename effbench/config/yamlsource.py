"""Safe YAML loading that remembers the line of every field, so errors can point at it.

Only `yaml.SafeLoader` is used (no object construction). Alias expansion is bounded: a YAML bomb is
an error, not a hang.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from effbench.errors import UserError

MAX_NODES = 200_000
MAX_DEPTH = 64
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class LineMap:
    """Field path (tuple of keys and indexes) -> 1-based line in the source file."""

    def __init__(self) -> None:
        self.lines: dict[tuple, int] = {}

    def line(self, path: tuple) -> int | None:
        path = tuple(path)
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path)


def _build(node: yaml.Node, path: tuple, lm: LineMap, constructor: yaml.constructor.SafeConstructor,
           budget: list[int], file: str) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise UserError(f"document expands to more than {MAX_NODES} values (a YAML alias bomb?)",
                        file=file, line=node.start_mark.line + 1, fix="remove the nested aliases")
    if len(path) > MAX_DEPTH:
        raise UserError(f"nesting deeper than {MAX_DEPTH} levels", file=file,
                        line=node.start_mark.line + 1, fix="flatten the document")
    lm.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        # Collections are built here, not by the SafeConstructor, so its refusal of unknown tags must be
        # repeated: `!!python/object/apply:...` on a list would otherwise be silently read as a list.
        raise UserError(f"unsupported YAML tag '{node.tag}'", file=file, line=node.start_mark.line + 1,
                        field=_dotted(path) if path else None, fix="remove the tag: effbench reads plain YAML only")
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        constructor.flatten_mapping(node)
        for knode, vnode in node.value:
            key = _build(knode, path + ("<key>",), lm, constructor, budget, file)
            if isinstance(key, (list, dict)):
                raise UserError("a mapping key must be a plain value", file=file,
                                line=knode.start_mark.line + 1, fix="use a string key")
            if key in out:
                raise UserError(f"duplicate key '{key}'", file=file, line=knode.start_mark.line + 1,
                                field=_dotted(path + (key,)), fix="keep one of the two entries")
            lm.lines[path + (key,)] = knode.start_mark.line + 1
            out[key] = _build(vnode, path + (key,), lm, constructor, budget, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, path + (i,), lm, constructor, budget, file) for i, v in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "(top level)"


dotted = _dotted


def load_yaml(path: str | Path, *, what: str = "file") -> tuple[Any, LineMap]:
    """Parse a YAML file into plain Python values and a LineMap; every failure is a UserError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found", file=p, fix="check the path") from None
    except IsADirectoryError:
        raise UserError(f"{what} is a directory, not a YAML file", file=p, fix="name the .yaml file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=p,
                        fix="save the file as UTF-8") from None
    except OSError as e:
        raise UserError(f"cannot read {what}: {e.strerror}", file=p, fix="check permissions") from None
    return parse_yaml(text, file=str(p))


def parse_yaml(text: str, *, file: str) -> tuple[Any, LineMap]:
    try:
        # The reader checks every character when it is built: a NUL or other control character
        # raises here, before any node exists (issue 8 fuzzing found this escaping as a traceback).
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1 if isinstance(e.position, int) else None
        raise UserError(f"invalid YAML: character #x{e.character:04x} is not allowed in YAML text"
                        if isinstance(e.character, int) else f"invalid YAML: {e.reason}", file=file, line=line,
                        fix="remove the control character (or quote it with an escape such as \"\\x00\")") from None
    lm = LineMap()
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lm
        return _build(node, (), lm, loader, [MAX_NODES], file), lm
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = e.problem or e.context or "invalid YAML"
        raise UserError(f"invalid YAML: {problem}", file=file, line=line,
                        fix="fix the YAML syntax at that line") from None
    except yaml.YAMLError as e:
        raise UserError(f"invalid YAML: {str(e).splitlines()[0]}", file=file, fix="fix the YAML syntax") from None
    except RecursionError:
        raise UserError("nesting too deep to read", file=file, fix="flatten the document") from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. a timestamp or number the constructor rejects
        raise UserError(f"unreadable value: {e}", file=file, fix="quote the value") from None
    finally:
        loader.dispose()
