"""`logpipe bench`: a pipeline over a file held in memory, in lines per CPU-second and RssAnon."""
from __future__ import annotations

import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from logpipe.batch import Batch
from logpipe.sources.stdin import decode_lines

if TYPE_CHECKING:
    from logpipe.agent import Job


def rss_anon_kib() -> int:
    """Anonymous resident memory: what the process itself holds, not mapped files."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class PeakRss:
    """Samples RssAnon in the background; the kernel keeps no peak for anonymous memory."""

    def __init__(self, every: float = 0.02):
        self.every = every
        self.peak = rss_anon_kib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, rss_anon_kib())

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_kib())


@dataclass
class Figures:
    name: str
    lines_in: int
    lines_out: int
    wall: float
    cpu: float
    peak_rss_kib: int

    def report(self) -> str:
        return (
            f"{self.name}: {self.lines_in} lines in, {self.lines_out} out, {self.wall:.2f}s wall, {self.cpu:.2f}s CPU: "
            f"{self.lines_in / self.wall:,.0f} lines/s, {self.lines_in / self.cpu:,.0f} lines per CPU-second, "
            f"peak RssAnon {self.peak_rss_kib / 1024:.1f} MiB"
        )


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def measure(name: str, work: Callable[[], tuple[int, int] | None]) -> Figures:
    """Run `work` (which returns (lines in, lines out)) and take its CPU, wall and memory."""
    result: list[tuple[int, int]] = []
    with PeakRss() as rss:
        c0, w0 = cpu_seconds(), time.perf_counter()
        result.append(work())  # type: ignore[arg-type]
        cpu, wall = cpu_seconds() - c0, time.perf_counter() - w0
    n_in, n_out = result[0]
    return Figures(name, n_in, n_out, wall, max(cpu, 1e-9), rss.peak)


def load_lines(path: str | Path) -> list[str]:
    lines, _ = decode_lines(Path(path).read_bytes())
    return [line for line in lines if line]


def bench_lines(job: "Job", lines: list[str], batch_size: int = 8192) -> tuple[int, int]:
    """Feed `lines` through the job in batches, as a source would."""
    out = 0
    ts0 = time.time_ns()
    for start in range(0, len(lines), batch_size):
        chunk = lines[start : start + batch_size]
        batch = Batch.of_lines(chunk, list(range(ts0 + start, ts0 + start + len(chunk))), job.labels)
        out += len(job.process(batch))
    return len(lines), out


def bench_loki(job: "Job", lines: list[str], encoding: str, batch_size: int = 8192) -> list[Figures]:
    """The job's pipeline alone, then again with a Loki client (1 MiB batches) pushing to a
    receiver in another process, and the encoding alone over the same entries: what the
    sink costs per entry, and encoding's share of the whole."""
    import subprocess
    import sys

    from logpipe.config.schema import ClientConfig
    from logpipe.positions import AckTracker
    from logpipe.sinks.loki import LokiClient, Push, encode

    name = f"{job.name} ({len(job.pipeline.stages)} stages)"
    # the receiver reads nothing: decoding on the other core would slow this one (shared caches)
    receiver = subprocess.Popen([sys.executable, "-m", "logpipe.loki_receiver", "--discard"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        url = receiver.stdout.readline().strip()  # type: ignore[union-attr]
        alone = measure(f"{name}, no sink", lambda: bench_lines(job, lines, batch_size))
        client = LokiClient(ClientConfig(url=url, encoding=encoding), job.env.metrics)  # type: ignore[arg-type]
        tracker = AckTracker(None)
        kept: list[Batch] = []

        def with_sink() -> tuple[int, int]:
            out, ts0 = 0, time.time_ns()
            for start in range(0, len(lines), batch_size):
                chunk = lines[start : start + batch_size]
                batch = job.process(Batch.of_lines(chunk, list(range(ts0 + start, ts0 + start + len(chunk))), job.labels))
                out += len(batch)
                client.send(batch, tracker.ticket("bench", None, 1))
                if len(kept) * batch_size < 100_000:
                    kept.append(batch)
            client.close(600)
            return len(lines), out

        sent = measure(f"{name}, Loki {encoding}", with_sink)

        def encode_only() -> tuple[int, int]:
            pushes: dict[str, Push] = {}
            for batch in kept:
                client.group(pushes, batch)
            for push in pushes.values():
                encode(push, encoding, client.cfg.compression)
            n = sum(map(len, kept))
            return n, n

        encode = measure(f"{name}, {encoding} encoding alone", encode_only)
    finally:
        receiver.stdin.close()  # type: ignore[union-attr]
        receiver.wait(10)
    return [alone, sent, encode]


def bench_journal(job: "Job") -> tuple[int, int]:
    """Read the job's journal from its start (max_age permitting) to its end, through the job."""
    from logpipe.sources.journal import JournalSource

    assert job.config.journal is not None
    src = JournalSource(job, job.config.journal, None, job.env.metrics, follow=False)
    n_in = n_out = 0
    for batch in src.batches(threading.Event()):
        n_in += len(batch)
        n_out += len(job.process(batch))
    return n_in, n_out
