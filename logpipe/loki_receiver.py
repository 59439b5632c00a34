"""A receiver that speaks Loki's push API, for tests (the project's and users'): protobuf in
raw snappy and JSON (plain or gzip), Loki's validation rules and status codes as a real Loki
answers them, and fault modes a test can switch on. It records what it accepted."""
from __future__ import annotations

import gzip
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cramjam
import orjson

from logpipe.sinks.loki import label_string
from logpipe.sinks.proto import push_pb2

_LABELS = re.compile(r'\s*([^=\s,{}]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SERVICE_FROM = ("service_name", "service", "app", "application", "name", "app_kubernetes_io_name",
                 "container", "container_name", "component", "workload", "job")


@dataclass
class Accepted:
    tenant: str
    labels: dict[str, str]
    ts: int
    line: str
    metadata: dict[str, str]


@dataclass
class Limits:
    """Loki's defaults that shape its answers (see LOKI-FACTS.md)."""

    max_label_names: int = 15
    max_line_size: int = 256 * 1024
    creation_grace_period: float = 600.0
    reject_old_samples_max_age: float | None = None  # None: old samples accepted
    rate_limit_bytes: float | None = None  # per tenant and second; None: no limit


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that goes away mid-request (a killed agent) is what the fault tests do."""


class LokiReceiver:
    """Start with `start()`; `url` is the push endpoint; `entries` what was accepted."""

    def __init__(self, limits: Limits | None = None, port: int = 0, record: bool = True, decode: bool = True):
        self.limits = limits or Limits()
        self.record = record  # False: count what was accepted, keep nothing
        self.decode = decode  # False: answer 204 unread, so a benchmark measures the sender alone
        self.accepted = 0
        self.entries: list[Accepted] = []
        self.requests: list[dict[str, Any]] = []  # one per request: content type, encoding, tenant, status
        self.lock = threading.Lock()
        self.fail_next: list[int] = []  # answer the next requests with these statuses, storing nothing
        self.failing: int | None = None  # then answer every request with this status, until cleared
        self.drop_next = 0  # close the connection of the next N requests without an answer
        self.delay = 0.0  # seconds to wait before answering
        self._rate: dict[str, tuple[float, float]] = {}
        self._port = port
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/loki/api/v1/push"

    def start(self) -> "LokiReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/stats"):
                    self._answer(200, orjson.dumps({"accepted": receiver.accepted, "requests": len(receiver.requests)}))
                else:
                    self._answer(200 if self.path.startswith("/ready") else 404, b"ready\n")

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/loki/api/v1/push":
                    self._answer(404, b"404 page not found\n")
                    return
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    if receiver.drop_next:
                        receiver.drop_next -= 1
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    fail = receiver.fail_next.pop(0) if receiver.fail_next else receiver.failing
                if fail is not None:
                    receiver._log(self.headers, fail)
                    self._answer(fail, b"injected fault\n")
                    return
                status, text = receiver.push(body, dict(self.headers)) if receiver.decode else (204, "")
                self._answer(status, text.encode() + (b"\n" if text else b""))

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Go down (the port refuses connections) until start() again, on the same port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _log(self, headers: Any, status: int) -> None:
        with self.lock:
            self.requests.append({"content_type": headers.get("Content-Type"), "status": status,
                                  "encoding": headers.get("Content-Encoding"), "tenant": headers.get("X-Scope-OrgID", "")})

    # -- Loki's push handling --------------------------------------------------------------
    def push(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        tenant = headers.get("X-Scope-OrgID", "")
        ctype = headers.get("Content-Type", "")
        try:
            streams = self._decode(body, ctype, headers.get("Content-Encoding", ""))
        except ValueError as e:
            self._log(headers, 400)
            return 400, str(e)
        if not streams:
            self._log(headers, 422)
            return 422, "error at least one valid stream is required for ingestion"
        size = sum(len(line) for _, entries in streams for _, line, _ in entries)
        if not self._allow(tenant, size):
            self._log(headers, 429)
            return 429, f"Ingestion rate limit exceeded for user {tenant or 'fake'}"
        errors: list[str] = []
        accepted: list[Accepted] = []
        now = time.time()
        for label_text, entries in streams:
            try:
                labels = parse_labels(label_text)
            except ValueError as e:
                errors.append(f"couldn't parse labels: {e}")
                continue
            if "service_name" not in labels:
                labels["service_name"] = next((labels[k] for k in _SERVICE_FROM if labels.get(k)), "unknown_service")
            shown = label_string(labels)
            if len(labels) > self.limits.max_label_names:
                errors.append(f"entry for stream '{shown}' has {len(labels)} label names; limit {self.limits.max_label_names}")
                continue
            for ts, line, md in entries:
                if len(line.encode()) > self.limits.max_line_size:
                    errors.append(f"max entry size '{self.limits.max_line_size}' bytes exceeded for stream '{shown}' "
                                  f"while adding an entry with length '{len(line.encode())}' bytes")
                elif ts / 1e9 > now + self.limits.creation_grace_period:
                    errors.append(f"entry for stream '{shown}' has timestamp too new: {ts}")
                elif self.limits.reject_old_samples_max_age and ts / 1e9 < now - self.limits.reject_old_samples_max_age:
                    errors.append(f"entry for stream '{shown}' has timestamp too old: {ts}")
                else:
                    accepted.append(Accepted(tenant, labels, ts, line, md))
        with self.lock:
            self.accepted += len(accepted)
            if self.record:
                self.entries.extend(accepted)  # Loki stores the valid entries even when it answers 400
        status = 400 if errors else 204
        self._log(headers, status)
        return status, "\n".join(errors)

    def _allow(self, tenant: str, size: int) -> bool:
        limit = self.limits.rate_limit_bytes
        if limit is None:
            return True
        with self.lock:
            tokens, last = self._rate.get(tenant, (limit, time.monotonic()))
            now = time.monotonic()
            tokens = min(limit, tokens + (now - last) * limit)
            if size > tokens:
                self._rate[tenant] = (tokens, now)
                return False
            self._rate[tenant] = (tokens - size, now)
            return True

    def _decode(self, body: bytes, ctype: str, encoding: str) -> list[tuple[str, list[tuple[int, str, dict[str, str]]]]]:
        if ctype.startswith("application/x-protobuf"):
            try:
                raw = cramjam.snappy.decompress_raw(body).read()
            except Exception:  # noqa: BLE001 - any decoding failure is Loki's 400
                raise ValueError("snappy: corrupt input") from None
            req = push_pb2.PushRequest()
            try:
                req.ParseFromString(raw)
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"proto: {e}") from None
            return [(s.labels, [(e.timestamp.seconds * 1_000_000_000 + e.timestamp.nanos, e.line,
                                 {p.name: p.value for p in e.structuredMetadata}) for e in s.entries])
                    for s in req.streams]
        if encoding == "gzip":
            try:
                body = gzip.decompress(body)
            except OSError as e:
                raise ValueError(f"gzip: {e}") from None
        try:
            doc = orjson.loads(body)
            out = []
            for s in doc.get("streams", []):
                labels = label_string(s["stream"])
                out.append((labels, [(int(v[0]), v[1], dict(v[2]) if len(v) > 2 else {}) for v in s["values"]]))
            return out
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"loghttp: {e}") from None


def parse_labels(text: str) -> dict[str, str]:
    """A `{a="b", c="d"}` selector as Loki parses it; ValueError names what is wrong."""
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError("1:1: parse error: unexpected input, expected {")
    inner, pos, out = text[1:-1], 0, {}
    while pos < len(inner):
        m = _LABELS.match(inner, pos)
        if m is None:
            raise ValueError(f"1:{pos + 2}: parse error: unexpected character inside braces")
        name = m.group(1)
        if not _NAME.fullmatch(name):
            bad = next((c for c in name if not (c.isalnum() or c == "_")), name[0])
            raise ValueError(f"1:{pos + 2 + name.index(bad)}: parse error: unexpected character inside braces: '{bad}'")
        out[name] = orjson.loads(f'"{m.group(2)}"')
        pos = m.end()
    return out


def main() -> None:
    """`python -m logpipe.loki_receiver [PORT] [--discard]`: serve on loopback until stdin
    closes, counting what it accepts (GET /stats) without keeping it, or with --discard
    answering 204 to every push unread; prints its push URL first."""
    import sys

    args = sys.argv[1:]
    port = next((int(a) for a in args if a.isdigit()), 0)
    receiver = LokiReceiver(port=port, record=False, decode="--discard" not in args).start()
    print(receiver.url, flush=True)
    sys.stdin.read()
    receiver.stop()


if __name__ == "__main__":
    main()
