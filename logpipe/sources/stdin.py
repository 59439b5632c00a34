"""Reading log lines from a byte stream (standard input): one line per entry, in batches."""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator

from logpipe.batch import Batch
from logpipe.telemetry import SelfMetrics

if TYPE_CHECKING:
    from logpipe.agent import Job

BLOCK = 1 << 20


def decode_lines(block: bytes) -> tuple[list[str], int]:
    """Split lines and decode them as UTF-8; returns (lines, count of undecodable lines).

    The whole block is decoded in one call; only a block with bad bytes is decoded line by
    line, with U+FFFD replacing what is not UTF-8 (the entry passes on, as in Promtail)."""
    try:
        lines = block.decode("utf-8").split("\n")
        bad = 0
    except UnicodeDecodeError:
        lines, bad = [], 0
        for raw in block.split(b"\n"):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                lines.append(raw.decode("utf-8", "replace"))
                bad += 1
    if any(line.endswith("\r") for line in lines):
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines, bad


class StdinSource:
    """Yields batches of the stream's lines until end of input.

    Timestamps are the time each block was read plus the entry's offset in nanoseconds, so
    entries keep their order and two equal lines never share a timestamp (Loki would keep
    only one of them). Empty lines are skipped, as Promtail's stdin does."""

    def __init__(self, stream: BinaryIO, job: "Job", metrics: SelfMetrics, batch_size: int = 8192,
                 clock: Callable[[], int] = time.time_ns):
        self.stream = stream
        self.job = job
        self.key = f"stdin-{job.name}"
        self.batch_size = batch_size
        self.clock = clock
        self._entries = metrics.read_entries.labels(job.name)
        self._bytes = metrics.read_bytes.labels(job.name)
        self._bad = metrics.decode_errors.labels(job.name)

    def describe(self) -> dict[str, Any]:
        return {"type": "stdin", "job": self.job.name, "labels": self.job.labels.as_dict()}

    def batches(self, stop: threading.Event | None = None) -> Iterator[Batch]:
        read = getattr(self.stream, "read1", self.stream.read)
        pending = b""
        while stop is None or not stop.is_set():
            block = read(BLOCK)
            if not block:
                break
            data = pending + block if pending else block
            cut = data.rfind(b"\n")
            if cut < 0:
                pending = data
                continue
            pending = data[cut + 1 :]
            yield from self._emit(data[:cut])
        if pending:
            yield from self._emit(pending)

    def _emit(self, data: bytes) -> Iterator[Batch]:
        lines, bad = decode_lines(data)
        if "" in lines:
            lines = [line for line in lines if line]
        if not lines:
            return
        self._entries.inc(len(lines))
        self._bytes.inc(len(data))
        if bad:
            self._bad.inc(bad)
        now = self.clock()
        for start in range(0, len(lines), self.batch_size):
            chunk = lines[start : start + self.batch_size]
            base = now + start
            yield Batch.of_lines(chunk, list(range(base, base + len(chunk))), self.job.labels)
