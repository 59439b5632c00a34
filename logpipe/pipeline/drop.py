"""The `drop` stage: drop entries that meet every configured condition (they AND together).

Each condition narrows a list of candidate indices with one C-level pass, cheapest first
(length, age, source presence, regex), so later conditions only see what is still a candidate.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from itertools import compress
from typing import Any, Callable

from logpipe.batch import Batch
from logpipe.config.decode import Ctx, join
from logpipe.config.units import Duration
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import ValueCache, go_string
from logpipe.re2 import compile_re2

_DATASIZE = re.compile(r"(\d+)\s*([A-Z]*)")
_DATASIZE_UNITS = {"": 1, "B": 1, "BYTE": 1, "BYTES": 1}
for _i, _p in enumerate("KMGTPE", start=1):
    for _name in (_p, _p + "B"):
        _DATASIZE_UNITS[_name] = 1024**_i


def parse_datasize(text: str) -> int:
    """A size the way Promtail's flagext.ByteSize reads it: an integer with an optional unit,
    case-insensitive, every unit a power of 1024 (`8kb` is 8192 bytes, not 8000)."""
    m = _DATASIZE.fullmatch(text.strip().upper())
    if m is None or m.group(2) not in _DATASIZE_UNITS:
        raise ValueError(f'strconv.UnmarshalText: parsing "{text.upper()}": invalid syntax')
    return int(m.group(1)) * _DATASIZE_UNITS[m.group(2)]


def now_ns(clock: Callable[[], float]) -> int:
    """Unix nanoseconds from a stage clock (Unix seconds), exact when it is the real one."""
    return time.time_ns() if clock is time.time else round(clock() * 1e9)


def utf8_lengths_over(lines: list[str], limit: int) -> list[bool]:
    """Whether each line is longer than `limit` bytes in UTF-8, encoding only the lines whose
    character count cannot decide it."""
    def over(line: str) -> bool:
        n = len(line)
        if n > limit:
            return True
        if n * 4 <= limit or line.isascii():
            return False
        return len(line.encode("utf-8", "surrogatepass")) > limit

    return list(map(over, lines))


@dataclass
class DropConfig:
    source: str | list[str] | None = None
    separator: str = ";"
    value: str | None = None
    expression: str | None = None
    older_than: Duration | None = None
    longer_than: str | None = None
    drop_counter_reason: str = ""

    def validate(self, ctx: Ctx, path: str) -> None:
        if self.source is None and self.expression is None and self.older_than is None and self.longer_than is None:
            ctx.error(path, "drop stage config must contain at least one of `source`, `expression`, `older_than` or `longer_than`")
        if self.value is not None and self.source is None:
            ctx.error(join(path, "value"), "drop stage config must contain `source` if `value` is specified")
        if self.value is not None and self.expression is not None:
            ctx.error(path, "drop stage config error, `value` and `expression` cannot both be defined at the same time.")
        if self.expression is not None:
            try:
                compile_re2(self.expression)
            except ValueError as e:
                ctx.error(join(path, "expression"), f"drop stage regex compilation error: {e}")
        if self.longer_than is not None:
            try:
                parse_datasize(self.longer_than)
            except ValueError as e:
                ctx.error(join(path, "longer_than"), f"drop stage failed to parse longer_than to bytes: {e}")

    def build(self, env: StageEnv) -> "DropStage":
        return DropStage(self, env)


class DropStage(Stage):
    name = "drop"

    def __init__(self, config: DropConfig, env: StageEnv):
        self.metrics = env.metrics
        self.reason = config.drop_counter_reason or "drop_stage"
        self.clock = env.clock
        self.longer_than = parse_datasize(config.longer_than) if config.longer_than is not None else None
        self.older_than_ns = round(config.older_than * 1e9) if config.older_than is not None else None
        src = config.source
        self.sources = [src] if isinstance(src, str) else src
        self.separator = config.separator
        self.value = config.value
        # `value` is Promtail's ^QuoteMeta(value)$: an exact comparison of the joined sources.
        self.regex = compile_re2(config.expression) if config.expression is not None else None
        self._hits = ValueCache(self._hit)

    def process(self, batch: Batch) -> Batch:
        n = len(batch)
        cand: list[int] = list(range(n))
        if self.longer_than is not None:
            cand = list(compress(cand, utf8_lengths_over(batch.lines, self.longer_than)))
        if cand and self.older_than_ns is not None:
            cutoff = now_ns(self.clock) - self.older_than_ns
            ts = batch.ts
            cand = [i for i in cand if ts[i] < cutoff]
        if cand and self.sources is not None:
            cand = self._by_sources(batch, cand)
        elif cand and self.regex is not None:
            lines = batch.lines
            cand = list(compress(cand, map(self.regex.search, (lines[i] for i in cand))))
        if not cand:
            return batch
        self.metrics.drop(self.reason, len(cand))
        if len(cand) == n:
            return batch.select([])
        dropped = set(cand)
        return batch.select([i for i in range(n) if i not in dropped])

    def _by_sources(self, batch: Batch, cand: list[int]) -> list[int]:
        cols = [batch.field(s) for s in self.sources]
        if self.value is None and self.regex is None:
            # Promtail drops when every source is in the extracted map.
            if any(c is None for c in cols):
                return []
            return [i for i in cand if all(c[i] is not None for c in cols)]
        # With a value or expression, sources that are absent are left out of the join, and
        # a value with no text (a map, a list) spares the entry.
        present = [c for c in cols if c is not None]
        rows = list(zip(*([c[i] for i in cand] for c in present))) if present else [()] * len(cand)
        try:
            hits = list(map(self._hits.__getitem__, rows))
        except TypeError:  # an unhashable value (a list from a custom stage): no caching
            hits = list(map(self._hit, rows))
        return list(compress(cand, hits))

    def _join(self, values: tuple[Any, ...]) -> str | None:
        texts = []
        for v in values:
            if v is None:
                continue
            s = go_string(v)
            if s is None:
                return None
            texts.append(s)
        return self.separator.join(texts)

    def _hit(self, values: tuple[Any, ...]) -> bool:
        joined = self._join(values)
        if joined is None:
            return False
        if self.value is not None:
            return joined == self.value
        return self.regex.search(joined) is not None
