"""Extracted values as Promtail sees them, and the caches that make per-value work rare."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable, Hashable

_FLOAT_EXACT = 2**53


def go_string(value: Any) -> str | None:
    """Promtail's getString: the text of an extracted value, or None if it has none.

    Numbers print as Go's strconv.FormatFloat(v, 'f', -1, 64): shortest digits, never an
    exponent (1e21 -> "1000000000000000000000"); JSON integers are float64 in Promtail, so
    huge ones lose precision the same way.
    """
    t = type(value)
    if t is str:
        return value
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value) if -_FLOAT_EXACT <= value <= _FLOAT_EXACT else format_float(float(value))
    if t is float:
        return format_float(value)
    return None


def format_float(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    r = repr(v)
    if "e" in r or "E" in r:
        r = format(Decimal(r), "f")
    if r.endswith(".0"):
        r = r[:-2]
    return r


def source_texts(batch: Any, source: str | None) -> list[str | None] | None:
    """What a parsing stage reads: the lines, or with `source` the text of that extracted
    value (None where an entry has none); None when no entry has the value at all (Promtail
    then skips the entry)."""
    if source is None:
        return batch.lines
    col = batch.field(source)
    if col is None:
        return None
    t = set(map(type, col))
    return col if t == {str} else [go_string(v) for v in col]


class ValueCache(dict):
    """A memo for a pure function of a column tuple, filled on a miss.

    Used as `list(map(cache.__getitem__, zip(col_a, col_b)))`: the loop runs in C and only
    a distinct key reaches Python. Python treats True == 1 == 1.0 and -0.0 == 0 as one
    key while Promtail prints them differently, so keys holding such non-string values are
    computed every time instead of cached.
    """

    __slots__ = ("fn", "limit")

    def __init__(self, fn: Callable[[Any], Any], limit: int = 65536):
        super().__init__()
        self.fn = fn
        self.limit = limit

    def __missing__(self, key: Hashable) -> Any:
        value = self.fn(key)
        if _ambiguous(key):
            return value
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


def _ambiguous(key: Any) -> bool:
    for v in key if type(key) is tuple else (key,):
        t = type(v)
        if t is bool or ((t is int or t is float) and (v == 0 or v == 1)):
            return True
    return False
