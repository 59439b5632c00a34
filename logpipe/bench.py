"""`logpipe bench`: a job over its own source (journal or files) or over a file held in
memory, optionally pushing to a Loki receiver, in lines per CPU-second and peak RssAnon."""
from __future__ import annotations

import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from logpipe.batch import Batch
from logpipe.sources.stdin import decode_lines

if TYPE_CHECKING:
    from logpipe.agent import Job
    from logpipe.sinks.loki import LokiClient
    from logpipe.sources.file import FileOptions


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


def memory_batches(job: "Job", lines: list[str], batch_size: int = 8192) -> Iterator[Batch]:
    """`lines` in batches, as a source would hand them over."""
    ts0 = time.time_ns()
    for start in range(0, len(lines), batch_size):
        chunk = lines[start : start + batch_size]
        yield Batch.of_lines(chunk, list(range(ts0 + start, ts0 + start + len(chunk))), job.labels)


def source_batches(job: "Job", opts: "FileOptions | None" = None) -> Iterator[Batch]:
    """The job's own source read to its end: its journal, or its files from their start."""
    if job.config.journal is not None:
        from logpipe.sources.journal import JournalSource

        yield from JournalSource(job, job.config.journal, None, job.env.metrics, follow=False).batches(threading.Event())
    else:
        from logpipe.sources.file import FileSource

        assert opts is not None
        yield from FileSource(job, opts, None, job.env.metrics, follow=False).batches(threading.Event())


def run_job(job: "Job", batches: Iterator[Batch], sink: Callable[[Batch], None] | None = None,
            source_only: bool = False) -> tuple[int, int]:
    """Every batch through the job (unless `source_only`) and then `sink`: (entries in, out)."""
    n_in = n_out = 0
    for batch in batches:
        n_in += len(batch)
        if not source_only:
            batch = job.process(batch)
            if sink is not None and batch.lines:
                sink(batch)
        n_out += len(batch)
    return n_in, n_out


def encode_only(client: "LokiClient", batches: Iterable[Batch], encoding: str) -> int:
    """Batch `batches` as `client` does (a push once its batchsize is reached) and encode each
    push, sending nothing; the entries encoded."""
    from logpipe.positions import AckTracker
    from logpipe.sinks.loki import Pending, encode

    tracker, pending, n = AckTracker(None), Pending(), 0

    def flush() -> None:
        for push in client.pushes(pending):
            encode(push, encoding, client.cfg.compression)

    for batch in batches:
        n += len(batch)
        pending.add(batch, tracker.ticket("bench", None, 1))
        if pending.size >= client.cfg.batchsize:
            flush()
            pending = Pending()
    flush()
    return n


def bench_loki(job: "Job", batches: Callable[[], Iterator[Batch]], encoding: str) -> list[Figures]:
    """The job's pipeline alone, then again with a Loki client (1 MiB batches) pushing to a
    receiver in another process, and the encoding alone over the first 100,000 entries out
    of the pipeline: what the sink costs per entry, and encoding's share of the whole."""
    import subprocess
    import sys

    from logpipe.config.schema import ClientConfig
    from logpipe.positions import AckTracker
    from logpipe.sinks.loki import LokiClient

    name = f"{job.name} ({len(job.pipeline.stages)} stages)"
    # the receiver reads nothing: decoding on the other core would slow this one (shared caches)
    receiver = subprocess.Popen([sys.executable, "-m", "logpipe.loki_receiver", "--discard"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        url = receiver.stdout.readline().strip()  # type: ignore[union-attr]
        alone = measure(f"{name}, no sink", lambda: run_job(job, batches()))
        client = LokiClient(ClientConfig(url=url, encoding=encoding), job.env.metrics)  # type: ignore[arg-type]
        tracker = AckTracker(None)

        def with_sink() -> tuple[int, int]:
            counts = run_job(job, batches(), lambda batch: client.send(batch, tracker.ticket("bench", None, 1)))
            client.close(600)
            return counts

        sent = measure(f"{name}, Loki {encoding}", with_sink)
        # the entries to encode, made beforehand: kept during the run above, they would slow it
        kept: list[Batch] = []
        for batch in batches():
            if (out := job.process(batch)).lines:
                kept.append(out)
            if sum(map(len, kept)) >= 100_000:
                break

        def encode_kept() -> tuple[int, int]:
            n = encode_only(client, kept, encoding)
            return n, n

        encoded = measure(f"{name}, {encoding} encoding alone", encode_kept)
    finally:
        receiver.stdin.close()  # type: ignore[union-attr]
        receiver.wait(10)
    return [alone, sent, encoded]
