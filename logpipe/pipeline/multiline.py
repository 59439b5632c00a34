"""The `multiline` stage: join continuation lines to the block their stream's `firstline` started.

Per stream (label set): until the stream's first `firstline` match, entries pass through; from
then on every line joins the current block with "\\n". A block is released when the next first
line of its stream arrives, when it reaches `max_lines`, or by `flush()` once no line came for
`max_wait_time` (and at the end of input). The released entry has the first line's timestamp,
labels and extracted values. Blocks still open when a batch ends are carried to later batches.

Released entries are placed at their first line's position in the batch, so output stays in
timestamp order; blocks begun in an earlier batch come before the batch's own entries.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from itertools import compress, filterfalse, repeat
from operator import itemgetter, not_, sub
from typing import Any, Callable

from logpipe.batch import Batch, LabelSet
from logpipe.config.decode import Ctx, join
from logpipe.config.units import Duration
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.re2 import compile_re2


@dataclass
class MultilineConfig:
    firstline: str | None = None
    max_wait_time: Duration = Duration(3.0)
    max_lines: int = 128

    def validate(self, ctx: Ctx, path: str) -> None:
        if self.firstline is None:
            ctx.error(path, "multiline stage config must define `firstline` regular expression")
            return
        try:
            compile_re2(self.firstline)
        except ValueError as e:
            ctx.error(join(path, "firstline"), f"multiline stage first line regex compilation error: {e}")
        if self.max_lines < 0:
            ctx.error(join(path, "max_lines"), "max_lines cannot be negative")

    def build(self, env: StageEnv) -> "MultilineStage":
        assert self.firstline is not None
        return MultilineStage(compile_re2(self.firstline), float(self.max_wait_time), self.max_lines)


class _Block:
    """A stream's open block. `start` is the first line's index in the batch being processed,
    or (between batches) a one-entry copy of it."""

    __slots__ = ("start", "lines", "last")

    def __init__(self) -> None:
        self.start: int | Batch = -1
        self.lines: list[str] = []
        self.last = 0.0


class MultilineStage(Stage):
    name = "multiline"
    holds_entries = True

    def __init__(self, firstline: Any, max_wait: float, max_lines: int, clock: Callable[[], float] = time.monotonic):
        self.firstline = firstline
        self.max_wait = max_wait
        self.max_lines = max_lines
        self.clock = clock
        self.streams: dict[LabelSet, _Block] = {}

    def process(self, batch: Batch) -> Batch:
        lines, labels = batch.lines, batch.labels
        first = list(map(bool, map(self.firstline.search, lines)))
        streams = self.streams
        if not streams and not any(first):
            return batch
        now = self.clock()
        if self.max_lines != 1:
            fast = self._without_joins(batch, first, now)
            if fast is not None:
                return fast
        released: list[tuple[int, str | None]] = []  # (row, joined block or None: passed through)
        carried: list[Batch] = []  # released blocks whose first line came in an earlier batch
        max_lines = self.max_lines
        for ls, rows in _by_stream(labels):
            flags, texts = (first, lines) if len(rows) == len(lines) else (_pick(first, rows), _pick(lines, rows))
            starts = list(compress(range(len(rows)), flags))
            block = streams.get(ls)
            lead = starts[0] if starts else len(rows)
            if block is None:
                # until its first `firstline` match, a stream's lines pass through
                released.extend(zip(rows[:lead], repeat(None)))
                if not starts:
                    continue
                block = streams[ls] = _Block()
            elif lead:
                self._extend(block, texts[:lead], released, carried)
            block.last = now
            if not starts:
                continue
            if block.lines:
                self._release(block, released, carried)
            ends = starts[1:] + [len(rows)]
            if max_lines and max(map(sub, ends, starts)) >= max_lines:
                for a, b in zip(starts, ends):
                    if block.lines:
                        self._release(block, released, carried)
                    block.start = rows[a]
                    self._extend(block, texts[a:b], released, carried)
                continue
            # every block but the stream's last is complete: the next first line ended it
            released.extend([(rows[a], "\n".join(texts[a:b])) for a, b in zip(starts[:-1], ends)])
            block.start = rows[starts[-1]]
            block.lines = texts[starts[-1]:]
        # Every stream keeps its first-line entry: after a release by max_lines or by time,
        # Promtail gives the following continuation lines that same entry's timestamp and labels.
        for block in streams.values():
            if isinstance(block.start, int):
                block.start = Batch.concat([batch], [block.start])
        released.sort(key=itemgetter(0))
        rows = [r for r, _ in released]
        n = len(batch)
        out = Batch.concat([batch], rows) if len(rows) == n and rows != list(range(n)) else batch.select(rows)
        out.lines = [lines[r] if text is None else text for r, text in released]
        return Batch.concat([*carried, out]) if carried else out

    def _without_joins(self, batch: Batch, first: list[bool], now: float) -> Batch | None:
        """The common batch where no line continues a block: every first line is a block of
        one, released by the next first line of its stream, the last one of each stream held.
        Done with C-level passes; None when some continuation line has a block to join."""
        labels, n = batch.labels, len(batch)
        starting = set(compress(labels, first))
        continuing = set(compress(labels, map(not_, first)))
        if not continuing.isdisjoint(starting) or not continuing.isdisjoint(self.streams):
            return None
        # the last first line of each stream stays open; the earlier ones are complete
        last = dict(zip(compress(labels, first), compress(range(n), first)))
        carried = []
        for ls, i in last.items():
            block = self.streams.get(ls)
            if block is None:
                block = self.streams[ls] = _Block()
            elif block.lines:
                self._release(block, [], carried)
            block.start = Batch.concat([batch], [i])
            block.lines = [batch.lines[i]]
            block.last = now
        out = batch.select(list(filterfalse(set(last.values()).__contains__, range(n))))
        return Batch.concat([*carried, out]) if carried else out

    def _extend(self, block: _Block, texts: list[str], released: list[tuple[int, str | None]],
                carried: list[Batch]) -> None:
        """Add lines to the block, releasing it each time it reaches max_lines (Promtail
        counts before comparing, so max_lines 0 never releases)."""
        max_lines = self.max_lines
        while texts:
            if max_lines:
                room = max_lines - len(block.lines)
                block.lines.extend(texts[:room])
                texts = texts[room:]
                if len(block.lines) == max_lines:
                    self._release(block, released, carried)
            else:
                block.lines.extend(texts)
                texts = []

    @staticmethod
    def _release(block: _Block, released: list[tuple[int, str | None]], carried: list[Batch]) -> None:
        text = "\n".join(block.lines)
        block.lines = []
        if isinstance(block.start, int):
            released.append((block.start, text))
        else:
            carried.append(_with_line(block.start, text))

    def flush(self, now: float | None) -> Batch | None:
        due = [b for b in self.streams.values()
               if b.lines and (now is None or now - b.last >= self.max_wait)]
        if not due:
            return None
        due.sort(key=_start_ts)
        out = []
        for b in due:
            assert isinstance(b.start, Batch)
            out.append(_with_line(b.start, "\n".join(b.lines)))
            b.lines = []
        return Batch.concat(out)


def _start_ts(block: _Block) -> int:
    return block.start.ts[0] if isinstance(block.start, Batch) else 0


def _with_line(entry: Batch, line: str) -> Batch:
    copy = Batch.concat([entry], [0])
    copy.lines = [line]
    return copy


def _by_stream(labels: list[LabelSet]) -> list[tuple[LabelSet, list[int]]]:
    """Each distinct label set with the rows it has, in order; one stable C-level sort."""
    distinct = dict.fromkeys(labels)
    if len(distinct) == 1:
        return [(labels[0], list(range(len(labels))))]
    ids = {ls: k for k, ls in enumerate(distinct)}
    keys = list(map(ids.__getitem__, labels))
    order = sorted(range(len(labels)), key=keys.__getitem__)
    counts = Counter(keys)
    out, pos = [], 0
    for ls, k in ids.items():
        out.append((ls, order[pos:pos + counts[k]]))
        pos += counts[k]
    return out


def _pick(col: list[Any], rows: list[int]) -> list[Any]:
    return [col[rows[0]]] if len(rows) == 1 else list(itemgetter(*rows)(col))
