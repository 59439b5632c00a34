"""Turn parsed YAML into typed config dataclasses, collecting every problem with its place.

A config dataclass declares its YAML keys as fields (a field's `metadata["yaml"]` renames
one); types may be str, int, float, bool, Duration, ByteSize, Literal[...], list[T],
dict[str, T], T | None and nested dataclasses. After decoding, a dataclass's optional
`validate(self, ctx, path)` checks meaning (regexes compile, names are valid) and reports
through `ctx.error`, so all problems of a file come out at once.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Callable, Literal, Union

from logpipe.config.units import ByteSize, Duration
from logpipe.config.yamlsrc import YMap, YSeq
from logpipe.errors import ConfigError, ConfigIssue

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

_MISSING = object()


class Ctx:
    """Where decoding is: the file, the line of every YAML path seen, the issues found."""

    def __init__(self, file: str):
        self.file = file
        self.lines: dict[str, int] = {}
        self.issues: list[ConfigIssue] = []
        self.base_dir = "."
        self.job_names: set[str] = set()

    def line_of(self, path: str) -> int:
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return 0

    def error(self, path: str, message: str, line: int | None = None) -> None:
        self.issues.append(ConfigIssue(self.file, line or self.line_of(path), path, message))

    def raise_if_any(self) -> None:
        if self.issues:
            raise ConfigError(sorted(self.issues, key=lambda i: (i.line, i.path)))


class Invalid(Exception):
    """Raised by a field parser; decode() turns it into one issue at the field's path."""


def join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def yaml_name(f: dataclasses.Field) -> str:
    return f.metadata.get("yaml", f.name)


def type_name(tp: Any) -> str:
    if tp is str:
        return "a string"
    if tp in (int, ByteSize):
        return "an integer" if tp is int else "a size (bytes, or 1MiB)"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is Duration:
        return "a duration (10s, 5m)"
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return str(tp)


def decode(tp: Any, value: Any, ctx: Ctx, path: str, raw: str | None = None) -> Any:
    """Decode `value` as type `tp`; on a problem, record it and return _MISSING."""
    if tp is Any:
        return value
    from_yaml = getattr(tp, "from_yaml", None)
    if from_yaml is not None:  # a type that decodes itself (e.g. a stage written as a bare map)
        return from_yaml(value, ctx, path)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return decode(args[0], value, ctx, path, raw)
        for a in args:  # first member whose shape fits
            if _shape_fits(a, value):
                return decode(a, value, ctx, path, raw)
        ctx.error(path, f"expected {' or '.join(type_name(a) for a in args)}, got {_describe(value)}")
        return _MISSING
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value, ctx, path)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            ctx.error(path, f"expected a list, got {_describe(value)}")
            return _MISSING
        out = []
        for i, item in enumerate(value):
            p = join(path, i)
            if isinstance(value, YSeq):
                ctx.lines[p] = value.item_lines[i]
            v = decode(item_tp, item, ctx, p, value.raw.get(i) if isinstance(value, YSeq) else None)
            if v is not _MISSING:
                out.append(v)
        return out
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            ctx.error(path, f"expected a mapping, got {_describe(value)}")
            return _MISSING
        out_d = {}
        for k, v in value.items():
            p = join(path, k)
            if isinstance(value, YMap):
                ctx.lines[p] = value.key_lines[k]
            dv = decode(val_tp, v, ctx, p, value.raw.get(k) if isinstance(value, YMap) else None)
            if dv is not _MISSING:
                out_d[str(k)] = dv
        return out_d
    return _decode_scalar(tp, value, ctx, path, raw)


def _shape_fits(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is list:
        return isinstance(value, list)
    if origin is dict or dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    return not isinstance(value, (list, dict))


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def _decode_scalar(tp: Any, value: Any, ctx: Ctx, path: str, raw: str | None) -> Any:
    try:
        if isinstance(value, (dict, list)):
            raise Invalid(f"expected {type_name(tp)}, got {_describe(value)}")
        if tp is str:
            if value is None:
                raise Invalid("expected a string, got nothing")
            # Go's YAML decoder gives a string field the scalar's own text (`1.10`, not 1.1).
            return value if isinstance(value, str) else (raw if raw is not None else str(value))
        if tp is bool:
            if not isinstance(value, bool):
                raise Invalid(f"expected true or false, got {_describe(value)}")
            return value
        if tp is Duration:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                # A bare number is seconds; Promtail (Go) would want a unit, but 0 is common.
                return Duration(float(value))
            if not isinstance(value, str):
                raise Invalid(f"expected a duration (10s, 5m), got {_describe(value)}")
            return Duration.parse(value)
        if tp is ByteSize:
            if isinstance(value, int) and not isinstance(value, bool):
                return ByteSize(value)
            if not isinstance(value, str):
                raise Invalid(f"expected a size, got {_describe(value)}")
            return ByteSize.parse(value)
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise Invalid(f"expected an integer, got {_describe(value)}")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise Invalid(f"expected a number, got {_describe(value)}")
            return float(value)
        if typing.get_origin(tp) is Literal:
            allowed = typing.get_args(tp)
            text = value if isinstance(value, str) else raw
            if text not in allowed:
                raise Invalid(f"must be one of {', '.join(map(str, allowed))}, got {value!r}")
            return text
        raise TypeError(f"config type {tp!r} is not supported")
    except (Invalid, ValueError) as e:
        ctx.error(path, str(e))
        return _MISSING


def _decode_dataclass(cls: type, value: Any, ctx: Ctx, path: str) -> Any:
    if value is None:
        value = YMap()
        value.line, value.key_lines, value.raw = ctx.line_of(path), {}, {}
    if not isinstance(value, dict):
        ctx.error(path, f"expected a mapping, got {_describe(value)}")
        return _MISSING
    hints = typing.get_type_hints(cls)
    by_key = {yaml_name(f): f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    ok = True
    for key, item in value.items():
        p = join(path, key)
        line = value.key_lines.get(key) if isinstance(value, YMap) else None
        if line:
            ctx.lines[p] = line
        f = by_key.get(key)
        if f is None:
            near = _closest(str(key), by_key)
            hint = f" (did you mean {near!r}?)" if near else ""
            ctx.error(p, f"unknown key {key!r}{hint}; valid keys: {', '.join(sorted(by_key))}", line)
            ok = False
            continue
        raw = value.raw.get(key) if isinstance(value, YMap) else None
        v = decode(hints[f.name], item, ctx, p, raw)
        if v is _MISSING:
            ok = False
        else:
            kwargs[f.name] = v
    for key, f in by_key.items():
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if key in value:
                continue  # already reported as invalid
            ctx.error(path, f"missing required key {key!r}")
            ok = False
    if not ok:
        return _MISSING
    obj = cls(**kwargs)
    validate: Callable[..., None] | None = getattr(obj, "validate", None)
    if validate is not None:
        validate(ctx, path)
    return obj


def _closest(key: str, candidates: dict[str, Any]) -> str | None:
    import difflib

    found = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.75)
    return found[0] if found else None


def check_label_name(ctx: Ctx, path: str, name: str) -> bool:
    if not LABEL_NAME.fullmatch(name):
        ctx.error(path, f"invalid label name {name!r}: must match [a-zA-Z_][a-zA-Z0-9_]*")
        return False
    return True


def field(yaml: str | None = None, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING) -> Any:
    """A config field whose YAML key differs from its Python name (e.g. Go's `MaxAge` style)."""
    meta = {"yaml": yaml} if yaml else {}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)
