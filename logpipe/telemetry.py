"""logpipe's own metrics and the HTTP server that exposes them (`/metrics`, `/ready`)."""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from logpipe import __version__

log = logging.getLogger("logpipe.telemetry")


class SelfMetrics:
    """The `logpipe_*` series, registered in one injected registry (never the global one).

    Every method takes a count: callers count once per batch, never once per entry.
    """

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = False):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.read_entries = Counter("logpipe_read_entries", "Entries read, per job.", ["job"], registry=r)
        self.read_bytes = Counter("logpipe_read_bytes", "Bytes read, per job.", ["job"], registry=r)
        self.decode_errors = Counter(
            "logpipe_decode_errors", "Entries whose bytes were not valid text (decoded with replacement).",
            ["job"], registry=r,
        )
        self.stage_errors = Counter(
            "logpipe_stage_errors", "Entries a stage could not process (passed on unchanged).",
            ["stage", "reason"], registry=r,
        )
        self.dropped = Counter("logpipe_dropped_entries", "Entries dropped on purpose, per reason (and Loki client host).",
                               ["reason", "host"], registry=r)
        self.scrubbed = Counter("logpipe_scrubbed", "Secrets masked by the scrub stage, per rule.", ["rule"], registry=r)
        self.metric_value_errors = Counter(
            "logpipe_metric_value_errors", "Values a metrics stage skipped: not a number (or a negative counter add).",
            ["metric"], registry=r,
        )
        self.metric_series_dropped = Counter(
            "logpipe_metric_series_dropped", "New series a metrics stage refused past max_series, per batch.",
            ["metric"], registry=r,
        )
        self.build_info = Gauge("logpipe_build_info", "logpipe's version.", ["version"], registry=r)
        self.build_info.labels(__version__).set(1)

    def stage_error(self, stage: str, reason: str, n: int = 1) -> None:
        if n:
            self.stage_errors.labels(stage, reason).inc(n)

    def drop(self, reason: str, n: int = 1, host: str = "") -> None:
        if n:
            self.dropped.labels(reason, host).inc(n)


class StateCollector:
    """Gauges read at scrape time from the running agent (lag, positions age): values that
    are a function of now, so they are computed when Prometheus asks, not kept up to date."""

    def __init__(self, read: Callable[[], list[tuple[str, str, dict[str, str], float]]]):
        self.read = read

    def collect(self):  # noqa: ANN201 (prometheus_client's collector protocol)
        from prometheus_client.core import GaugeMetricFamily

        families: dict[str, GaugeMetricFamily] = {}
        for name, help_text, labels, value in self.read():
            fam = families.get(name)
            if fam is None:
                fam = families[name] = GaugeMetricFamily(name, help_text, labels=list(labels))
            fam.add_metric(list(labels.values()), value)
        return list(families.values())


class TelemetryServer:
    """Promtail's `server` block: `/metrics`, `/ready` and `/targets`, on loopback by default."""

    def __init__(self, address: str, port: int, registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]],
                 targets: Callable[[], list[dict]] = list):
        registry_ = registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry_), CONTENT_TYPE_LATEST)
                elif path == "/ready":
                    ok, why = ready()
                    self._send(200 if ok else 503, (why or "ready").encode() + b"\n", "text/plain")
                elif path == "/targets":
                    import orjson

                    self._send(200, orjson.dumps(targets(), option=orjson.OPT_INDENT_2), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")
            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("http: " + fmt, *args)

        self.httpd = ThreadingHTTPServer((address, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="telemetry", daemon=True)

    def start(self) -> "TelemetryServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
