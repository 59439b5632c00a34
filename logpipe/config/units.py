"""Durations and byte sizes written the way Promtail writes them (`10s`, `1m30s`, `1MiB`)."""
from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w|y)")
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
    "d": 86400.0, "w": 604800.0, "y": 31536000.0,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]i?B?|B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1}
for _i, _p in enumerate("kmgtp", start=1):
    _SIZE_UNITS.update({_p: 1000**_i, _p + "b": 1000**_i, _p + "i": 1024**_i, _p + "ib": 1024**_i})


class Duration(float):
    """A duration in seconds, parsed from Go/Prometheus notation (`500ms`, `1h30m`, `7d`)."""

    @staticmethod
    def parse(text: str) -> "Duration":
        s = text.strip()
        if s in ("0", ""):
            return Duration(0.0)
        pos, total = 0, 0.0
        for m in _DURATION_PART.finditer(s):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if pos != len(s) or pos == 0:
            raise ValueError(f"invalid duration {text!r} (use a number with a unit: 500ms, 10s, 5m, 1h)")
        return Duration(total)


class ByteSize(int):
    """A size in bytes, from an integer or a string with a unit (`1MiB`, `256KB`, `1mb`)."""

    @staticmethod
    def parse(text: str) -> "ByteSize":
        m = _SIZE.fullmatch(text.strip())
        unit = (m.group(2) or "").lower() if m else None
        if m is None or unit not in _SIZE_UNITS:
            raise ValueError(f"invalid size {text!r} (use bytes or a unit: 256KiB, 1MiB)")
        return ByteSize(int(float(m.group(1)) * _SIZE_UNITS[unit]))
