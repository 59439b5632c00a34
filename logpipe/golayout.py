"""Parsing time strings with Go reference layouts ("2006-01-02T15:04:05Z07:00"), as Go's
time.Parse does, corners included: any fractional second after the seconds field, `.000`
exact and `.999` any number of digits, `_2` space-padded days, case-insensitive month and day
names, `Z07:00` accepting `Z`, zone abbreviations taken as UTC offsets of 0 unless known.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Callable

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]

NAMED = {
    "ANSIC": "Mon Jan _2 15:04:05 2006",
    "UnixDate": "Mon Jan _2 15:04:05 MST 2006",
    "RubyDate": "Mon Jan 02 15:04:05 -0700 2006",
    "RFC822": "02 Jan 06 15:04 MST",
    "RFC822Z": "02 Jan 06 15:04 -0700",
    "RFC850": "Monday, 02-Jan-06 15:04:05 MST",
    "RFC1123": "Mon, 02 Jan 2006 15:04:05 MST",
    "RFC1123Z": "Mon, 02 Jan 2006 15:04:05 -0700",
    "RFC3339": "2006-01-02T15:04:05Z07:00",
    "RFC3339Nano": "2006-01-02T15:04:05.999999999Z07:00",
}

# Go's std chunks, longest first where one is a prefix of another.
_CHUNKS = [
    "January", "Jan", "Monday", "Mon", "MST", "Z070000", "Z07:00:00", "Z0700", "Z07:00", "Z07",
    "-070000", "-07:00:00", "-0700", "-07:00", "-07", "2006", "002", "__2", "_2", "01", "02", "03",
    "04", "05", "06", "15", "PM", "pm", "1", "2", "3", "4", "5",
]
_FRAC = re.compile(r"[.,](0+|9+)(?![0-9])")


class LayoutError(ValueError):
    pass


@dataclass
class Parsed:
    year: int | None
    unix_ns: int


def tokenize(layout: str) -> list[tuple[str, str]]:
    """Split a layout into ("lit", text) and ("std", chunk) pieces, as Go's nextStdChunk."""
    out: list[tuple[str, str]] = []
    i = 0
    lit = ""
    while i < len(layout):
        m = _FRAC.match(layout, i)
        # a fractional-second chunk only right after a seconds field, as Go requires
        if m and out and out[-1] == ("std", "05") and not lit or m and out and out[-1] == ("std", "5") and not lit:
            out.append(("std", layout[i] + m.group(1)))
            i = m.end()
            continue
        for c in _CHUNKS:
            if layout.startswith(c, i):
                # Go: "Jan"/"Mon" need the next letter not to be lower case ("Janet" is literal)
                if c in ("Jan", "Mon") and i + len(c) < len(layout) and layout[i + len(c)].islower():
                    continue
                if c in ("2006", "01", "02", "03", "04", "05", "06", "15", "002") or c[0].isdigit():
                    pass
                if lit:
                    out.append(("lit", lit))
                    lit = ""
                out.append(("std", c))
                i += len(c)
                break
        else:
            lit += layout[i]
            i += 1
    if lit:
        out.append(("lit", lit))
    return out


def _getnum(s: str, pos: int, fixed: bool, width: int = 2) -> tuple[int, int]:
    if pos >= len(s) or not s[pos].isdigit():
        raise LayoutError("bad number")
    if width == 2:
        if pos + 1 >= len(s) or not s[pos + 1].isdigit():
            if fixed:
                raise LayoutError("bad number")
            return int(s[pos]), pos + 1
        return int(s[pos : pos + 2]), pos + 2
    j = pos
    while j < len(s) and j - pos < width and s[j].isdigit():
        j += 1
    if j - pos != width and fixed:
        raise LayoutError("bad number")
    return int(s[pos:j]), j


def _lookup(names: list[str], s: str, pos: int, abbrev: bool) -> tuple[int, int]:
    for idx, name in enumerate(names):
        n = name[:3] if abbrev else name
        if s[pos : pos + len(n)].lower() == n.lower():
            return idx, pos + len(n)
    raise LayoutError("bad name")


def _frac_ns(digits: str) -> int:
    return int((digits + "000000000")[:9])


class Layout:
    """A compiled layout; `parse(text, tz)` returns Parsed or raises LayoutError."""

    def __init__(self, layout: str):
        self.layout = layout
        self.tokens = tokenize(layout)
        self.has_year = any(t == "std" and c in ("2006", "06") for t, c in self.tokens)

    def parse(self, s: str, tz: tzinfo | None = None, now: datetime | None = None) -> Parsed:
        """Parse `s`. A layout without a year takes `now`'s year, with Promtail's turn of the
        year: a December timestamp read in January is last year's, and the reverse."""
        year, month, day, yday = None, 1, 1, None
        hour = minute = second = nsec = 0
        pm = None
        offset: int | None = None
        pos = 0
        toks = self.tokens
        for k, (kind, c) in enumerate(toks):
            if kind == "lit":
                if not s.startswith(c, pos):
                    raise LayoutError(f"cannot parse {s[pos:]!r} as {c!r}")
                pos += len(c)
                continue
            if c == "2006":
                if len(s) < pos + 4 or not s[pos : pos + 4].isdigit():
                    raise LayoutError("bad year")
                year, pos = int(s[pos : pos + 4]), pos + 4
            elif c == "06":
                y, pos = _getnum(s, pos, True)
                year = y + (1900 if y >= 69 else 2000)
            elif c == "January":
                m, pos = _lookup(MONTHS, s, pos, False)
                month = m + 1
            elif c == "Jan":
                m, pos = _lookup(MONTHS, s, pos, True)
                month = m + 1
            elif c in ("1", "01"):
                month, pos = _getnum(s, pos, c == "01")
                if not 1 <= month <= 12:
                    raise LayoutError("month out of range")
            elif c == "Monday":
                _, pos = _lookup(DAYS, s, pos, False)
            elif c == "Mon":
                _, pos = _lookup(DAYS, s, pos, True)
            elif c in ("2", "02", "_2"):
                if c == "_2" and pos < len(s) and s[pos] == " ":
                    pos += 1
                day, pos = _getnum(s, pos, c == "02")
            elif c in ("002", "__2"):
                if c == "__2":
                    while pos < len(s) and s[pos] == " ":
                        pos += 1
                yday, pos = _getnum(s, pos, c == "002", 3)
            elif c == "15":
                hour, pos = _getnum(s, pos, False)
                if hour > 23:
                    raise LayoutError("hour out of range")
            elif c in ("3", "03"):
                hour, pos = _getnum(s, pos, c == "03")
                if hour > 12:
                    raise LayoutError("hour out of range")
            elif c in ("4", "04"):
                minute, pos = _getnum(s, pos, c == "04")
                if minute > 59:
                    raise LayoutError("minute out of range")
            elif c in ("5", "05"):
                second, pos = _getnum(s, pos, c == "05")
                if second > 59:
                    raise LayoutError("second out of range")
                # Go reads a fractional second here even when the layout has none, unless the
                # layout's next chunk is a fractional second itself.
                nxt = toks[k + 1] if k + 1 < len(toks) else None
                if (pos + 1 < len(s) and s[pos] in ".," and s[pos + 1].isdigit()
                        and not (nxt and nxt[0] == "std" and nxt[1][0] in ".,")):
                    j = pos + 1
                    while j < len(s) and s[j].isdigit():
                        j += 1
                    nsec, pos = _frac_ns(s[pos + 1 : j]), j
            elif c[0] in ".,":
                digits = c[1:]
                if digits[0] == "0":
                    n = len(digits)
                    if len(s) < pos + 1 + n or s[pos] not in ".," or not s[pos + 1 : pos + 1 + n].isdigit():
                        raise LayoutError("bad fractional second")
                    nsec, pos = _frac_ns(s[pos + 1 : pos + 1 + n]), pos + 1 + n
                elif pos + 1 < len(s) and s[pos] in ".," and s[pos + 1].isdigit():
                    j = pos + 1
                    while j < len(s) and s[j].isdigit():
                        j += 1
                    nsec, pos = _frac_ns(s[pos + 1 : j]), j
            elif c in ("PM", "pm"):
                word = s[pos : pos + 2]
                if c == "PM" and word in ("AM", "PM") or c == "pm" and word in ("am", "pm"):
                    pm = word.upper() == "PM"
                    pos += 2
                else:
                    raise LayoutError("bad AM/PM")
            elif c[0] in "Z-":
                if c[0] == "Z" and s[pos : pos + 1] == "Z":
                    offset, pos = 0, pos + 1
                    continue
                form = c.lstrip("Z-")
                sign = s[pos : pos + 1]
                if sign not in ("+", "-"):
                    raise LayoutError("bad zone")
                pat = {"0700": r"(\d\d)(\d\d)", "07:00": r"(\d\d):(\d\d)", "07": r"(\d\d)",
                       "070000": r"(\d\d)(\d\d)(\d\d)", "07:00:00": r"(\d\d):(\d\d):(\d\d)"}[form]
                m = re.compile(pat).match(s, pos + 1)
                if m is None:
                    raise LayoutError("bad zone")
                parts = [int(g) for g in m.groups()] + [0, 0]
                offset = (parts[0] * 3600 + parts[1] * 60 + parts[2]) * (-1 if sign == "-" else 1)
                pos = m.end()
            elif c == "MST":
                m = re.compile(r"[A-Z]{3,5}|[A-Z]{3}[+-]\d{1,2}").match(s, pos)
                if m is None:
                    raise LayoutError("bad zone abbreviation")
                abbr = m.group(0)
                pos = m.end()
                offset = _abbrev_offset(abbr, tz)
        if pos != len(s):
            raise LayoutError(f"extra text {s[pos:]!r}")
        if pm is not None:
            if pm and hour < 12:
                hour += 12
            elif not pm and hour == 12:
                hour = 0
        y = year if year is not None else 0
        if year is None and now is not None:
            y = now.year
            if month == 12 and now.month == 1:
                y -= 1
            elif month == 1 and now.month == 12:
                y += 1
        if yday is not None:
            base = datetime(max(y, 1), 1, 1) + timedelta(days=yday - 1)
            month, day = base.month, base.day
        try:
            naive = datetime(max(y, 1), month, day, hour, minute, second)
        except ValueError as e:
            raise LayoutError(str(e)) from None
        if offset is not None:
            aware = naive.replace(tzinfo=timezone(timedelta(seconds=offset)))
        else:
            aware = naive.replace(tzinfo=tz or timezone.utc)
        unix = int(aware.timestamp()) if y > 0 else _unix_year0(naive, aware)
        return Parsed(year, unix * 1_000_000_000 + nsec)


def _unix_year0(naive: datetime, aware: datetime) -> int:
    # Year 0 does not exist for Python's datetime; only used to carry month..second to the
    # year-less logic, which replaces the year before the value is used.
    off = aware.utcoffset() or timedelta(0)
    return int((naive - datetime(1970, 1, 1) - off).total_seconds())


_KNOWN_ABBREV = {"UTC": 0, "GMT": 0, "Z": 0}


def _abbrev_offset(abbr: str, tz: tzinfo | None) -> int:
    if abbr in _KNOWN_ABBREV:
        return 0
    if tz is not None:  # ParseInLocation: the location's own abbreviation gives its offset
        now = datetime.now(tz)
        if now.tzname() == abbr and now.utcoffset() is not None:
            return int(now.utcoffset().total_seconds())  # type: ignore[union-attr]
    return 0  # Go fabricates a location with this name and offset 0


def unix_parser(kind: str) -> Callable[[str], int]:
    """Unix, UnixMs, UnixUs, UnixNs as Promtail parses them (Unix takes a fraction)."""
    if kind == "Unix":
        def parse(s: str) -> int:
            if s.count(".") == 1:
                sec, frac = s.split(".")
                if not frac.lstrip("+-").isdigit():
                    raise LayoutError("bad fraction")
                # Promtail: int64(float64(frac) * 10^(9-len(frac)))
                return _go_int(sec) * 1_000_000_000 + int(float(int(frac)) * 10 ** (9 - len(frac)))
            return _go_int(s) * 1_000_000_000
        return parse
    scale = {"UnixMs": 1_000_000, "UnixUs": 1_000, "UnixNs": 1}[kind]
    return lambda s: _go_int(s) * scale


def _go_int(s: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", s):
        raise LayoutError(f"invalid integer {s!r}")
    return int(s)
