"""Wiring: a scrape config becomes a Job (relabel + pipeline); the agent feeds jobs to sinks."""
from __future__ import annotations

import logging
import signal
import threading
from typing import BinaryIO, Iterable, Iterator, Protocol

from logpipe.batch import Batch, LabelSet
from logpipe.config import Config, ScrapeConfig
from logpipe.errors import LogpipeError
from logpipe.pipeline.stage import Pipeline, StageEnv
from logpipe.relabel import Relabeler
from logpipe.sources.stdin import StdinSource
from logpipe.telemetry import SelfMetrics, TelemetryServer

log = logging.getLogger("logpipe")


class Sink(Protocol):
    def write(self, batch: Batch) -> None: ...
    def close(self) -> None: ...


class Job:
    """One scrape config at run time: its starting labels, relabeling, then its pipeline."""

    def __init__(self, sc: ScrapeConfig, metrics: SelfMetrics):
        self.name = sc.job_name
        self.config = sc
        self.labels = LabelSet.of(sc.static_labels())
        self.relabel = Relabeler(sc.relabel_configs)
        self.env = StageEnv(job=sc.job_name, metrics=metrics)
        self.pipeline = Pipeline.build(sc.stages, self.env)

    def relabeled(self, batch: Batch) -> Batch:
        """Apply relabel_configs once per distinct label set; drop what they drop."""
        labels = list(map(self.relabel, batch.labels))
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
    """Raised in the main thread by SIGTERM/SIGINT to stop reading."""


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


def pump(batches: Iterable[Batch], job: Job, sinks: list[Sink]) -> int:
    """Run every batch through the job into every sink; returns the number of entries out.

    SIGTERM/SIGINT stop the reading; what was already read is processed and flushed."""
    sent = 0
    it: Iterator[Batch] = iter(batches)
    try:
        for batch in it:
            out = job.process(batch)
            if out.lines:
                for sink in sinks:
                    sink.write(out)
                sent += len(out)
    except Shutdown as why:
        log.info("stopping on %s", why)
    finally:
        for sink in sinks:
            sink.close()
    return sent


class Agent:
    """The running process: telemetry server, jobs, sources and sinks."""

    def __init__(self, config: Config, metrics: SelfMetrics | None = None):
        self.config = config
        self.metrics = metrics or SelfMetrics(process=True)
        self.server: TelemetryServer | None = None
        self._running = False

    def ready(self) -> tuple[bool, str]:
        return (True, "ready") if self._running else (False, "not started")

    def start_server(self) -> None:
        s = self.config.server
        if s.disable:
            return
        try:
            self.server = TelemetryServer(s.http_listen_address, s.http_listen_port, self.metrics.registry, self.ready)
        except OSError as e:
            raise LogpipeError(
                f"cannot listen on {s.http_listen_address}:{s.http_listen_port} ({e.strerror}); "
                "set server.http_listen_port to a free port"
            ) from None
        self.server.start()
        log.info("serving /metrics on http://%s:%d", s.http_listen_address, self.server.port)

    def run_stdin(self, stream: BinaryIO, sinks: list[Sink], job_name: str | None = None) -> int:
        sc = stdin_job(self.config, job_name)
        job = Job(sc, self.metrics)
        source = StdinSource(stream, job.name, job.labels, self.metrics)
        self._running = True
        try:
            return pump(source.batches(), job, sinks)
        finally:
            self._running = False

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
