"""The `timestamp` stage: set the entry's time from an extracted value.

A column of RFC 3339 times in UTC (`…Z`, what most JSON loggers write) is parsed with numpy
for the whole column at once. Otherwise each distinct string is parsed once per batch (values
repeat: every line of a second shares its text up to the fraction), RFC 3339 forms through a
regex fast path.
"""
from __future__ import annotations

import functools
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from logpipe.batch import Batch, LabelSet
from logpipe.config.decode import Ctx, join
from logpipe.golayout import NAMED, Layout, LayoutError, unix_parser
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import go_string

UNIX_FORMATS = ("Unix", "UnixMs", "UnixUs", "UnixNs")
FUDGE_CACHE_SIZE = 10_000  # Promtail keeps the last known timestamp of this many streams
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:[.,](\d+))?(Z|[+-]\d\d:\d\d)$")


@dataclass
class TimestampConfig:
    source: str = ""
    format: str = ""
    fallback_formats: list[str] = field(default_factory=list)
    location: str | None = None
    action_on_failure: str = "fudge"

    def validate(self, ctx: Ctx, path: str) -> None:
        if not self.source:
            ctx.error(join(path, "source"), "timestamp source value is required")
        if not self.format:
            ctx.error(join(path, "format"), "timestamp format is required")
        self.tz = None
        if self.location:
            try:
                self.tz = ZoneInfo(self.location)
            except (ZoneInfoNotFoundError, ValueError):
                ctx.error(join(path, "location"), f"unknown time zone location {self.location!r}")
        if self.action_on_failure not in ("fudge", "skip"):
            ctx.error(join(path, "action_on_failure"),
                      f"invalid action_on_failure {self.action_on_failure!r}: must be fudge or skip")

    def build(self, env: StageEnv) -> "TimestampStage":
        return TimestampStage(self, env)


def make_parser(fmt: str, tz: Any, clock: Callable[[], float]) -> Callable[[str], int]:
    """A function from text to Unix nanoseconds (raising ValueError), for one format."""
    if fmt in UNIX_FORMATS:
        return unix_parser(fmt)
    layout = Layout(NAMED.get(fmt, fmt))
    if fmt in ("RFC3339", "RFC3339Nano") and tz is None:
        slow = layout.parse

        def rfc3339(s: str) -> int:
            m = _RFC3339.match(s)
            if m is None:
                return slow(s).unix_ns
            y, mo, d, h, mi, sec, frac, zone = m.groups()
            dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), tzinfo=timezone.utc)
            ns = int(dt.timestamp()) * 1_000_000_000 + (int((frac + "000000000")[:9]) if frac else 0)
            if zone != "Z":
                off = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
                ns -= (off if zone[0] == "+" else -off) * 1_000_000_000
            return ns

        return rfc3339
    if layout.has_year:
        return lambda s: layout.parse(s, tz).unix_ns
    return lambda s: layout.parse(s, tz, datetime.fromtimestamp(clock(), tz or timezone.utc)).unix_ns


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def rfc3339_utc_column(texts: list[Any]) -> list[int] | None:
    """Unix nanoseconds of a whole column of RFC 3339 UTC times, or None if any is not one.

    The texts of each length are laid side by side as a matrix of bytes, one row per time:
    every check and every field is then a column operation. Most columns have one length,
    seen without measuring each text."""
    n = len(texts)
    if not n:
        return []
    try:
        joined = ("\n".join(texts) + "\n").encode("ascii")
    except (TypeError, UnicodeEncodeError):  # not all text, or not all ASCII
        return None
    raw = np.frombuffer(joined, np.uint8)
    width, rest = divmod(len(raw), n)
    if not rest and (raw[width - 1 :: width] == 10).all():
        # Every row ends at a newline, as the texts do. Texts of other lengths would need a
        # newline of their own (a row's end falls inside them), and then are no times: so the
        # rows are the texts whenever the answer is not None.
        ns = _utc_times(raw.reshape(n, width)[:, :-1])
        return None if ns is None else ns.tolist()
    lengths = np.fromiter(map(len, texts), np.int64, n)
    out = np.empty(n, np.int64)
    starts = np.cumsum(lengths + 1) - lengths - 1
    for w in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == w)
        ns = _utc_times(raw[starts[rows, None] + np.arange(w)])
        if ns is None:
            return None
        out[rows] = ns
    return out.tolist()


@functools.lru_cache(maxsize=16)
def _place_values(width: int) -> np.ndarray:
    """For the digits of a `width`-character time, in order, the weight each has in year,
    month, day, hour, minute, second and nanoseconds."""
    fields = [(0, 4), (5, 2), (8, 2), (11, 2), (14, 2), (17, 2), (20, max(width - 21, 0))]
    cols = [c for start, n in fields for c in range(start, start + n)]
    weights = np.zeros((len(cols), len(fields)))
    for f, (start, n) in enumerate(fields):
        for c in range(start, start + n):
            weights[cols.index(c), f] = 10.0 ** (start + n - 1 - c + (9 - n if f == 6 else 0))
    return weights


def _utc_times(b: np.ndarray) -> np.ndarray | None:
    """Rows of ASCII `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, as Go's RFC3339 reads them (in range,
    at most 9 digits of fraction); None if any is not."""
    width = b.shape[1]
    digits = width - 21 if width > 20 else 0
    if not (width == 20 or 1 <= digits <= 9):
        return None
    seps = {4: "-", 7: "-", 10: "T", 13: ":", 16: ":", 19: "." if digits else "Z", width - 1: "Z"}
    if not (b[:, list(seps)] == np.frombuffer("".join(seps.values()).encode(), np.uint8)).all():
        return None
    number_cols = [c for c in range(width - 1) if c not in seps]
    digits_of = b[:, number_cols] - ord("0")  # uint8: what is below "0" wraps around
    if (digits_of > 9).any():
        return None
    # every field at once: the digits times their place values, one matrix product (exact in
    # float64: no field reaches 2**53)
    fields = (digits_of.astype(np.float64) @ _place_values(width)).astype(np.int64).T
    hour, minute, second, frac = fields[3:]
    if not ((hour <= 23).all() and (minute <= 59).all() and (second <= 59).all()):
        return None
    days = _days(*fields[:3, :1]) if (b[:, :10] == b[0, :10]).all() else _days(*fields[:3])  # most often one day
    if days is None:
        return None
    return ((days * 86400 + hour * 3600 + minute * 60 + second) * 1_000_000_000) + frac


def _days(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray | None:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's days_from_civil);
    None if one is not a date, or beyond what int64 nanoseconds hold."""
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    days_in_month = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + (leap & (month == 2))
    if not (month_ok.all() and ((day >= 1) & (day <= days_in_month)).all() and ((year > 1678) & (year < 2262)).all()):
        return None
    y = year - (month <= 2)
    era, yoe = np.divmod(y, 400)
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


class TimestampStage(Stage):
    name = "timestamp"

    def __init__(self, config: TimestampConfig, env: StageEnv):
        self.source = config.source
        self.parsers = [make_parser(f, config.tz, env.clock) for f in [config.format, *config.fallback_formats]]
        self.utc_column = config.format in ("RFC3339", "RFC3339Nano") and config.tz is None
        self.fudge = config.action_on_failure == "fudge"
        self.metrics = env.metrics
        self.last_known: OrderedDict[LabelSet, int] = OrderedDict()

    def _parse(self, text: str) -> int | None:
        for parse in self.parsers:
            try:
                return parse(text)
            except (LayoutError, ValueError, OverflowError):
                continue
        return None

    def process(self, batch: Batch) -> Batch:
        col = batch.field(self.source)
        n = len(batch)
        stamps: list[int | None] | None = rfc3339_utc_column(col) if self.utc_column and col else None  # type: ignore[assignment]
        if stamps is None:
            texts = [go_string(v) for v in col] if col is not None else [None] * n
            parsed: dict[str | None, int | None] = {None: None}
            for t in texts:
                if t not in parsed:
                    parsed[t] = self._parse(t)  # type: ignore[arg-type]
            stamps = [parsed[t] for t in texts]
        failed = stamps.count(None)
        ts = batch.ts
        if not failed:
            batch.ts = stamps  # type: ignore[assignment]
        else:
            self.metrics.stage_error("timestamp", "parse_failed", failed)
            batch.ts = [old if new is None else new for old, new in zip(ts, stamps)]
        if self.fudge:
            if failed:
                self._fudge(batch, stamps)
            else:  # the last time of each stream, in one C-level pass
                self.last_known.update(dict(zip(batch.labels, stamps)))  # type: ignore[arg-type]
                while len(self.last_known) > FUDGE_CACHE_SIZE:
                    self.last_known.popitem(last=False)
        return batch

    def _fudge(self, batch: Batch, stamps: list[int | None]) -> None:
        """Promtail's fudge: an entry whose time failed gets its stream's last known time plus
        1ns (and becomes the last known); with none known yet it keeps its own time."""
        last = self.last_known
        ts = batch.ts
        for i, (ls, st) in enumerate(zip(batch.labels, stamps)):
            if st is not None:
                last[ls] = st
                last.move_to_end(ls)
            else:
                prev = last.get(ls)
                if prev is not None:
                    ts[i] = last[ls] = prev + 1
        while len(last) > FUDGE_CACHE_SIZE:
            last.popitem(last=False)
