"""The `timestamp` stage: set the entry's time from an extracted value.

A column of RFC 3339 times in UTC (`…Z`, what most JSON loggers write) is parsed in one call
to numpy's ISO 8601 parser. Otherwise each distinct string is parsed once per batch (values
repeat: every line of a second shares its text up to the fraction), RFC 3339 forms through a
regex fast path.
"""
from __future__ import annotations

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
# what numpy's parser reads exactly as Go's RFC3339 layout does: in range, UTC, at most 9 digits
_RFC3339_UTC = re.compile(r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,9})?Z")
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


def rfc3339_utc_column(texts: list[Any]) -> list[int] | None:
    """Unix nanoseconds of a whole column of RFC 3339 UTC times, or None if any is not one."""
    match = _RFC3339_UTC.fullmatch
    if not all(type(t) is str and match(t) for t in texts):
        return None
    try:
        return np.array([t[:-1] for t in texts], dtype="datetime64[ns]").astype(np.int64).tolist()
    except ValueError:  # a day the month does not have
        return None


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
        texts = [go_string(v) for v in col] if col is not None else [None] * n
        stamps: list[int | None] | None = rfc3339_utc_column(texts) if self.utc_column else None  # type: ignore[assignment]
        if stamps is None:
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
