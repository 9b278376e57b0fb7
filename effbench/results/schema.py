"""The record's schema machinery: `Section` (a frozen, typed dataclass that checks its types when read from
JSON and keeps keys it does not know in `extra`) and the `section` decorator. Imports nothing heavy.

Every section checks its types when read (a hand-edited or foreign line must not crash the reporter or
the gate later) and keeps keys this version does not know in `extra`, so a store written by a newer or
older effbench round-trips without loss. Absent figures are None, never made-up zeros.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

S = TypeVar("S", bound="Section")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return {k: v for k, v in typing.get_type_hints(cls).items() if k not in ("extra", "NAME")}


def _check(value: Any, tp: Any, where: str) -> Any:
    """`value` read from JSON as the annotation `tp`, or a ValueError naming the field."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _check(value, a, where)
            except ValueError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else ValueError(f"{where} has the wrong type")
    if isinstance(tp, type) and issubclass(tp, Section):
        return tp.from_json(value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false")
        return value
    if tp is int:  # a count another writer stored as 1e9 is still a count
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where} must be a list of {len(args)}")
        return tuple(_check(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list")
        return [_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be an object")
        if len(args) == 2:
            return {str(k): _check(v, args[1], f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    raise TypeError(f"no JSON reading for {tp!r} ({where})")  # a schema bug, not a user's store


def _json(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_json()
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    return value


class Section:
    """A record section: a frozen dataclass with typed fields and `extra` for keys it does not know."""

    NAME: ClassVar[str] = "section"

    @classmethod
    def from_json(cls: type[S], d: Any, where: str | None = None) -> S:
        where = cls.NAME if where is None else where
        if isinstance(d, cls):
            return d
        if not isinstance(d, Mapping):
            raise ValueError(f"{where} must be an object")
        hints = _hints(cls)
        known = {k: _check(v, hints[k], f"{where}.{k}" if where else k) for k, v in d.items() if k in hints}
        missing = [f.name for f in fields(cls)  # type: ignore[arg-type]
                   if f.name in hints and f.name not in known
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{where}.{missing[0]} is missing" if where else f"{missing[0]} is missing")
        extra = {k: v for k, v in d.items() if k not in hints}
        return cls(**known, **({"extra": extra} if "extra" in cls.__dataclass_fields__ else {}))  # type: ignore

    def to_json(self) -> dict[str, Any]:
        """Every field (null where absent: a stable shape for jq and pandas), then the unknown keys."""
        out = {f.name: _json(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}  # type: ignore[arg-type]
        extra = getattr(self, "extra", None) or {}
        return {**out, **{k: v for k, v in extra.items() if k not in out}}

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def section(cls: type) -> type:
    """A frozen, keyword-only dataclass (the store's field order never constrains defaults)."""
    return dataclass(frozen=True, kw_only=True)(cls)
