"""Wiring: a scrape config becomes a Job (relabel + pipeline); the agent runs one thread per
source, hands each processed batch to every sink with an ack ticket, and owns shutdown."""
from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any, BinaryIO, Callable, Iterator, Protocol

from logpipe.batch import EMPTY_LABELS, Batch, LabelSet
from logpipe.config import Config, ScrapeConfig
from logpipe.errors import LogpipeError
from logpipe.pipeline.stage import Pipeline, StageEnv
from logpipe.positions import AckTracker, Positions, Ticket
from logpipe.relabel import Relabeler
from logpipe.telemetry import SelfMetrics, StateCollector, TelemetryServer

log = logging.getLogger("logpipe")


class Sink(Protocol):
    def send(self, batch: Batch, ticket: Ticket) -> None:
        """Take the batch; call ticket.done() once it is held (delivered or counted as dropped)."""

    def close(self, timeout: float) -> None:
        """Deliver what is queued within `timeout` seconds, then stop."""


class Source(Protocol):
    job: "Job"
    key: str  # positions key (one ack stream), or the prefix of its inputs' keys

    def batches(self, stop: threading.Event) -> Iterator[Batch]:
        """Yield batches until the input ends or `stop` is set; batch.ack holds positions."""

    def describe(self) -> dict[str, Any]: ...


class Job:
    """One scrape config at run time: its starting labels, relabeling, then its pipeline."""

    def __init__(self, sc: ScrapeConfig, metrics: SelfMetrics, clock: Callable[[], float] = time.time):
        self.name = sc.job_name
        self.config = sc
        self.labels = LabelSet.of(sc.static_labels())
        self.relabel = Relabeler(sc.relabel_configs)
        self.env = StageEnv(job=sc.job_name, metrics=metrics, clock=clock)
        self.pipeline = Pipeline.build(sc.stages, self.env)
        # Promtail drops a journal entry left with no labels after relabeling.
        self.drop_unlabeled = sc.journal is not None
        self._warned_unlabeled = False

    def relabeled(self, batch: Batch) -> Batch:
        """Apply relabel_configs once per distinct label set; drop what they drop."""
        labels = list(map(self.relabel.__getitem__, batch.labels))
        if self.drop_unlabeled and EMPTY_LABELS in labels:
            if not self._warned_unlabeled:
                log.warning("job %s: journal entries left with no labels are dropped, as Promtail does; "
                            "add journal.labels or relabel_configs", self.name)
                self._warned_unlabeled = True
            labels = [None if ls is EMPTY_LABELS else ls for ls in labels]
        if None in labels:
            keep = [i for i, ls in enumerate(labels) if ls is not None]
            self.env.metrics.drop("relabel", len(labels) - len(keep))
            batch.labels = labels
            batch = batch.select(keep)
            labels = batch.labels
        batch.labels = batch.base_labels = labels
        return batch

    def process(self, batch: Batch) -> Batch:
        return self.pipeline.process(self.relabeled(batch))


class Shutdown(Exception):
    """Raised in the main thread by SIGTERM/SIGINT."""


def on_signals() -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: object) -> None:
        raise Shutdown(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def stdin_job(config: Config, name: str | None) -> ScrapeConfig:
    """The scrape config that reads standard input: the named one, else the first with `stdin`,
    else (Promtail's --stdin) the first one."""
    if name is not None:
        return config.job(name)
    for sc in config.scrape_configs:
        if sc.stdin is not None:
            return sc
    return config.job(None)


class Agent:
    """The running process: telemetry server, positions, sources, sinks, and shutdown."""

    def __init__(self, config: Config, sinks: list[Sink], metrics: SelfMetrics | None = None,
                 positions: Positions | None = None):
        self.config = config
        self.sinks = sinks
        self.metrics = metrics or SelfMetrics(process=True)
        self.positions = positions
        self.tracker = AckTracker(positions)
        self.sources: list[Source] = []
        self.server: TelemetryServer | None = None
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failed: list[BaseException] = []
        self.metrics.registry.register(StateCollector(self.state_gauges))

    def ready(self) -> tuple[bool, str]:
        """Ready once sources run and every sink can deliver; otherwise why not."""
        if not self._threads:
            return False, "not started"
        if self._failed:
            return False, f"a source failed: {self._failed[0]}"
        for sink in self.sinks:
            check = getattr(sink, "ready", None)
            if check is not None:
                ok, why = check()
                if not ok:
                    return False, why
        return True, "ready"

    def targets(self) -> list[dict[str, Any]]:
        return [source.describe() for source in self.sources]

    def state_gauges(self) -> list[tuple[str, str, dict[str, str], float]]:
        out: list[tuple[str, str, dict[str, str], float]] = []
        for t in self.targets():
            if t.get("type") == "journal" and t.get("lag_seconds") is not None:
                out.append(("logpipe_journal_lag_seconds", "Age of the newest journal entry read, per job.",
                            {"job": t["job"]}, t["lag_seconds"]))
        if self.positions is not None:
            out.append(("logpipe_positions_age_seconds", "Seconds since the positions file was last written.",
                        {}, time.time() - self.positions.saved_at))
        return out

    def start_server(self) -> None:
        s = self.config.server
        if s.disable:
            return
        try:
            self.server = TelemetryServer(s.http_listen_address, s.http_listen_port, self.metrics.registry,
                                          self.ready, self.targets)
        except OSError as e:
            raise LogpipeError(
                f"cannot listen on {s.http_listen_address}:{s.http_listen_port} ({e.strerror}); "
                "set server.http_listen_port to a free port"
            ) from None
        self.server.start()
        log.info("serving /metrics on http://%s:%d", s.http_listen_address, self.server.port)

    def add_stdin(self, stream: BinaryIO, job_name: str | None = None, clock_ns: int | None = None) -> None:
        """Read `stream` with the stdin job; `clock_ns` pins "now" (reproducible dry runs)."""
        from logpipe.sources.stdin import StdinSource

        if clock_ns is None:
            job = Job(stdin_job(self.config, job_name), self.metrics)
            self.sources.append(StdinSource(stream, job, self.metrics))
        else:
            job = Job(stdin_job(self.config, job_name), self.metrics, clock=lambda: clock_ns / 1e9)
            self.sources.append(StdinSource(stream, job, self.metrics, clock=lambda: clock_ns))

    def add_journal(self, sc: ScrapeConfig, follow: bool = True) -> None:
        from logpipe.sources.journal import JournalSource

        assert sc.journal is not None
        self.sources.append(JournalSource(Job(sc, self.metrics), sc.journal, self.positions, self.metrics,
                                          follow=follow))

    def add_files(self, sc: ScrapeConfig, follow: bool = True) -> None:
        from logpipe.sources.file import FileOptions, FileSource

        self.sources.append(FileSource(Job(sc, self.metrics), FileOptions.of(self.config, sc), self.positions,
                                       self.metrics, follow=follow))

    def add_configured_sources(self) -> None:
        """A source for each scrape config that reads something other than stdin."""
        for sc in self.config.scrape_configs:
            if sc.journal is not None:
                self.add_journal(sc)
            if sc.file_targets():
                self.add_files(sc)

    def _pump(self, source: Source) -> None:
        job, sinks, tracker = source.job, self.sinks, self.tracker
        try:
            for batch in source.batches(self.stop_event):
                ack = batch.ack
                # An empty batch only moves a position (a file opened, a long line dropped).
                out = job.process(batch) if batch.lines else batch
                # positions commit in read order per key: a batch that moves one position (the
                # journal's, one file's) is ordered with that key; one that moves none, in its source
                stream = next(iter(ack)) if ack and len(ack) == 1 else source.key
                ticket = tracker.ticket(stream, ack, len(sinks) if out.lines else 0)
                if out.lines:
                    for sink in sinks:
                        sink.send(out, ticket)
        except Exception as e:  # a source that dies is reported, and /ready says so
            log.exception("source %s stopped: %s", source.key, e)
            self._failed.append(e)

    def start(self) -> None:
        if self.positions is not None:
            self.positions.start()
        for source in self.sources:
            t = threading.Thread(target=self._pump, args=(source,), name=f"source:{source.key}", daemon=True)
            self._threads.append(t)
            t.start()

    def wait(self) -> None:
        """Block until every source has ended (stdin at EOF) or a signal arrives."""
        try:
            for t in self._threads:
                while t.is_alive():
                    t.join(0.2)
        except Shutdown as why:
            log.info("stopping on %s", why)
            self.stop_event.set()

    def serve_forever(self) -> None:
        try:
            self.stop_event.wait()
        except Shutdown as why:
            log.info("stopping on %s", why)
            self.stop_event.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop reading, let sources finish their batch, flush sinks, save positions."""
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout=2.0)
        for sink in self.sinks:
            sink.close(timeout)
        if self.positions is not None:
            self.positions.stop()
        if self.server is not None:
            self.server.stop()
