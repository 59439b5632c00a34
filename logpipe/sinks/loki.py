"""The Loki sink: batches entries per tenant and stream, encodes them as Loki's push API wants
(protobuf in raw snappy, what Promtail sends, or JSON, gzipped by default), and delivers them
with retries. It acknowledges a batch only on 2xx (or when it drops it on purpose, counted).

Back-pressure, not loss: `send` blocks while the queue is full, so while Loki is down or
says 429 the sources stop reading and the journal and the files are the buffer.
"""
from __future__ import annotations

import gzip
import logging
import queue
import random
import threading
import time
import weakref
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import cramjam
import httpx
import numpy as np
import orjson
from prometheus_client import Counter, Gauge, Histogram

from logpipe.batch import Batch, LabelSet
from logpipe.config.schema import ClientConfig
from logpipe.positions import Ticket
from logpipe.sinks.proto import push_pb2
from logpipe.sinks.pushproto import push_request, utf8_sizes
from logpipe.telemetry import SelfMetrics

log = logging.getLogger("logpipe.loki")

TENANT_LABEL = "__tenant_id__"  # Promtail's tenant stage sets it; it never reaches Loki as a label


def label_string(labels: dict[str, str]) -> str:
    """Loki's label selector text: `{a="x", b="y"}`, sorted, values escaped as Go's %q does."""
    parts = []
    for k in sorted(labels):
        v = labels[k].replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{k}="{v}"')
    return "{" + ", ".join(parts) + "}"


@dataclass
class Push:
    """One request's worth of entries for one tenant, as columns, stream after stream."""

    tenant: str
    streams: list[tuple[str, dict[str, str], int]]  # label text, labels, number of entries
    ts: np.ndarray
    lines: list[str]
    sizes: np.ndarray  # of the lines, in UTF-8 bytes
    ascii: bool  # every line is ASCII
    metadata: list[dict[str, str] | None] | None = None  # None: no entry has any


class Pending:
    """What a client has batched so far: the entries in arrival order, as columns, and the
    tickets they complete."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ts: list[int] = []
        self.labels: list[LabelSet] = []
        self.metadata: list[dict[str, str] | None] | None = None
        self.tickets: list[tuple[Ticket, int]] = []
        self.sizes: list[np.ndarray] = []  # per batch: its lines' sizes in UTF-8 bytes
        self.ascii = True
        self.size = 0
        self.started = 0.0  # when the first entry came: batchwait counts from it

    def add(self, batch: Batch, ticket: Ticket) -> None:
        if not self.tickets:
            self.started = time.monotonic()
        self.tickets.append((ticket, len(batch)))
        md = batch.metadata
        if md:
            if self.metadata is None:
                self.metadata = [None] * len(self.lines)
            self.metadata += [{k: v for k, v in zip(md, row) if v is not None} or None for row in zip(*md.values())]
        elif self.metadata is not None:
            self.metadata += [None] * len(batch)
        self.lines += batch.lines
        self.ts += batch.ts
        self.labels += batch.labels
        sizes, ascii = utf8_sizes(batch.lines)
        self.sizes.append(sizes)
        self.ascii = self.ascii and ascii
        self.size += int(sizes.sum())


class SinkMetrics:
    """The sink's own series, in the agent's registry, labelled with the client's host."""

    _registered: "weakref.WeakKeyDictionary[Any, SinkMetrics]" = weakref.WeakKeyDictionary()

    def __init__(self, metrics: SelfMetrics):
        r = metrics.registry
        self.sent_entries = Counter("logpipe_sent_entries", "Entries Loki accepted.", ["host"], registry=r)
        self.sent_bytes = Counter("logpipe_sent_bytes", "Bytes of log lines Loki accepted.", ["host"], registry=r)
        self.duration = Histogram("logpipe_request_duration_seconds", "Duration of push requests.",
                                  ["host", "status_code"], registry=r)
        self.retries = Counter("logpipe_batch_retries", "Push requests retried.", ["host"], registry=r)
        self.pending = Gauge("logpipe_pending_entries", "Entries waiting to be pushed.", ["host"], registry=r)

    @classmethod
    def of(cls, metrics: SelfMetrics) -> "SinkMetrics":
        found = cls._registered.get(metrics.registry)  # one set per registry, shared by its clients
        if found is None:
            found = cls._registered[metrics.registry] = cls(metrics)
        return found


def encode_protobuf(push: Push) -> bytes:
    if not push.metadata:
        raw = push_request([text for text, _, _ in push.streams], [n for *_, n in push.streams], push.ts, push.lines,
                           push.sizes, push.ascii)
    else:  # structured metadata: through the protobuf runtime
        req = push_pb2.PushRequest()
        rows = zip(push.ts.tolist(), push.lines, push.metadata)
        for text, _, n in push.streams:
            stream = req.streams.add()
            stream.labels = text
            add = stream.entries.add
            for ts, line, md in islice(rows, n):
                e = add(line=line)
                t = e.timestamp
                t.seconds, t.nanos = divmod(ts, 1_000_000_000)
                if md:
                    for k, v in md.items():
                        e.structuredMetadata.add(name=k, value=v)
        raw = req.SerializeToString()
    return cramjam.snappy.compress_raw(raw).read()


def encode_json(push: Push) -> bytes:
    stamps = map(str, push.ts.tolist())
    values: Iterator[Any]
    if push.metadata:
        values = ([ts, line, md] if md else [ts, line] for ts, line, md in zip(stamps, push.lines, push.metadata))
    else:
        values = zip(stamps, push.lines)
    streams = [{"stream": labels, "values": list(islice(values, n))} for _, labels, n in push.streams]
    return orjson.dumps({"streams": streams})


@dataclass
class Request:
    """An encoded push, ready to send again as often as Loki asks."""

    tenant: str
    entries: int
    size: int
    body: bytes
    headers: dict[str, str]


@dataclass
class Outgoing:
    """What one flush produced: a request per tenant, and the tickets they complete together."""

    requests: list[Request]
    tickets: list[tuple[Ticket, int]]


def encode(push: Push, encoding: str, compression: str) -> tuple[bytes, dict[str, str]]:
    """The request body and its headers, as Loki's push endpoint reads them."""
    if encoding == "protobuf":
        return encode_protobuf(push), {"Content-Type": "application/x-protobuf"}
    body, headers = encode_json(push), {"Content-Type": "application/json"}
    if compression == "gzip":
        body, headers["Content-Encoding"] = gzip.compress(body, 1), "gzip"
    return body, headers


class LokiClient:
    """One `clients` entry. The sending (source) thread groups and encodes, so the bounded queue
    holds compressed requests; a worker thread sends them through one pooled HTTP client."""

    def __init__(self, cfg: ClientConfig, metrics: SelfMetrics, transport: httpx.BaseTransport | None = None):
        self.cfg = cfg
        self.host = urlparse(cfg.url).netloc
        self.metrics = metrics
        self.m = SinkMetrics.of(metrics)
        self.queue: queue.Queue[Outgoing | None] = queue.Queue(maxsize=max(1, cfg.max_inflight_batches))
        self.external = dict(cfg.external_labels)
        self._streams: dict[LabelSet, tuple[str, str, dict[str, str]]] = {}  # -> (tenant, text, labels)
        self._lock = threading.Lock()  # guards what is being batched: several sources send at once
        self._pending = Pending()
        self._stop = threading.Event()
        self._healthy = True
        self._last_error = ""
        self._warned: set[str] = set()
        self.http = httpx.Client(timeout=cfg.timeout, headers=self._headers(), auth=self._auth(),
                                 verify=self._verify(), cert=self._cert(), proxy=cfg.proxy_url or None,
                                 transport=transport)
        self._worker = threading.Thread(target=self._run, name=f"loki:{self.host}", daemon=True)
        self._worker.start()

    # -- configuration ---------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        h = {"User-Agent": "logpipe", **self.cfg.headers}
        token = self.cfg.bearer_token or (Path(self.cfg.bearer_token_file).read_text().strip()
                                          if self.cfg.bearer_token_file else "")
        if token:
            h["Authorization"] = f"Bearer {token}"
        return h

    def _auth(self) -> tuple[str, str] | None:
        ba = self.cfg.basic_auth
        if ba is None:
            return None
        password = Path(ba.password_file).read_text().strip() if ba.password_file else ba.password
        return (ba.username, password)

    def _verify(self) -> Any:
        t = self.cfg.tls_config
        if t.insecure_skip_verify:
            return False
        return t.ca_file or True

    def _cert(self) -> Any:
        t = self.cfg.tls_config
        return (t.cert_file, t.key_file) if t.cert_file else None

    # -- the sink protocol -------------------------------------------------------------------
    def send(self, batch: Batch, ticket: Ticket) -> None:
        """Batch the entries; once `batchsize` is reached, encode and queue them, waiting while
        the queue is full (back-pressure: the caller reads no further)."""
        self.m.pending.labels(self.host).inc(len(batch))
        with self._lock:
            self._pending.add(batch, ticket)
            out = self._take() if self._pending.size >= self.cfg.batchsize else None
        if out is not None:
            self._put(out)

    def ready(self) -> tuple[bool, str]:
        return (True, "ready") if self._healthy else (False, f"Loki at {self.host}: {self._last_error}")

    def close(self, timeout: float) -> None:
        """Deliver what is batched and queued within `timeout`, then stop; the rest is read
        again on the next start."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._worker.join(timeout)
        self._stop.set()
        self._worker.join(1.0)
        self.http.close()

    # -- batching ----------------------------------------------------------------------------
    def _stream(self, ls: LabelSet) -> tuple[str, str, dict[str, str]]:
        found = self._streams.get(ls)
        if found is None:
            labels = {**self.external, **{k: v for k, v in ls.items if v != ""}}  # Loki drops empty values
            tenant = labels.pop(TENANT_LABEL, None) or self.cfg.tenant_id
            for k in [k for k in labels if k.startswith("__")]:
                del labels[k]
            if len(self._streams) > 65536:
                self._streams.clear()
            found = self._streams[ls] = (tenant, label_string(labels), labels)
        return found

    def pushes(self, pending: Pending) -> list[Push]:
        """The pending entries as one push per tenant, grouped per stream, each stream's
        entries in the order they came."""
        n = len(pending.lines)
        if not n:
            return []
        ids = np.fromiter(map(id, pending.labels), np.int64, n)  # label sets are interned
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        bounds = np.flatnonzero(np.diff(ids, prepend=ids[0] - 1, append=ids[-1] + 1)).tolist()
        tenants: dict[str, dict[str, tuple[dict[str, str], list[np.ndarray]]]] = {}
        for start, end in zip(bounds, bounds[1:]):
            tenant, text, labels = self._stream(pending.labels[int(order[start])])
            tenants.setdefault(tenant, {}).setdefault(text, (labels, []))[1].append(order[start:end])
        lines = np.fromiter(pending.lines, object, n)
        ts = np.fromiter(pending.ts, np.int64, n)
        sizes = np.concatenate(pending.sizes)
        out = []
        for tenant, by_text in tenants.items():
            # label sets that differ only in what Loki never sees share a stream, in arrival order
            runs = [np.sort(np.concatenate(r)) if len(r) > 1 else r[0] for _, r in by_text.values()]
            idx = np.concatenate(runs)
            streams = [(text, labels, len(r)) for (text, (labels, _)), r in zip(by_text.items(), runs)]
            metadata = [pending.metadata[i] for i in idx.tolist()] if pending.metadata else []
            out.append(Push(tenant, streams, ts[idx], lines[idx].tolist(), sizes[idx], pending.ascii,
                            metadata if any(metadata) else None))
        return out

    def _take(self) -> Outgoing | None:
        """Encode what is batched (the lock is held) and start a new batch."""
        pending = self._pending
        if not pending.tickets:
            return None
        self._pending = Pending()
        return Outgoing([self._encode(push) for push in self.pushes(pending)], pending.tickets)

    def _encode(self, push: Push) -> Request:
        body, headers = encode(push, self.cfg.encoding, self.cfg.compression)
        if push.tenant:
            headers["X-Scope-OrgID"] = push.tenant
        return Request(push.tenant, len(push.lines), int(push.sizes.sum()), body, headers)

    def _put(self, out: Outgoing) -> None:
        while not self._stop.is_set():
            try:
                self.queue.put(out, timeout=0.5)
                return
            except queue.Full:
                pass

    # -- the worker ------------------------------------------------------------------------
    def _run(self) -> None:
        tick = min(max(self.cfg.batchwait / 4, 0.01), 0.25)
        while True:
            try:
                out = self.queue.get(timeout=tick)
                closing = out is None
            except queue.Empty:
                out, closing = None, False
            if out is None:
                with self._lock:  # a batch that waited batchwait goes out even if small
                    if closing or time.monotonic() - self._pending.started >= self.cfg.batchwait:
                        out = self._take()
            if out is not None and not self._deliver_all(out):
                return  # stopped while retrying: what was not acknowledged is read again
            if closing or self._stop.is_set():
                return

    def _deliver_all(self, out: Outgoing) -> bool:
        for request in out.requests:
            if not self._deliver(request):
                return False
        for ticket, n in out.tickets:
            ticket.done()
            self.m.pending.labels(self.host).dec(n)
        return True

    def _deliver(self, request: Request) -> bool:
        """Push until Loki takes it or says it never will; False if stopped meanwhile."""
        backoff = self.cfg.backoff_config
        delay, attempt = backoff.min_period, 0
        while True:
            status, text = self._post(request.body, request.headers)
            if 200 <= status < 300:
                self._healthy = True
                self.m.sent_entries.labels(self.host).inc(request.entries)
                self.m.sent_bytes.labels(self.host).inc(request.size)
                return True
            if status == 429 and self.cfg.drop_rate_limited_batches:
                self._drop(request, "loki_rate_limited", text)
                return True
            if 400 <= status < 500 and status != 429:
                # Loki stored the valid entries and names each bad one on a line of its answer:
                # sending again gains nothing, and only the named ones are lost
                named = sum(1 for line in text.splitlines() if line.strip())
                dropped = min(request.entries, named or request.entries)
                self._drop(request, "loki_rejected", text, dropped)
                self.m.sent_entries.labels(self.host).inc(request.entries - dropped)
                return True
            self._healthy = False
            self._last_error = f"HTTP {status}: {text[:200]}" if status else text
            attempt += 1
            if attempt > backoff.max_retries and self.cfg.drop_after_max_retries:
                self._drop(request, "loki_max_retries", self._last_error)
                return True
            self.m.retries.labels(self.host).inc()
            if attempt == backoff.max_retries + 1:
                log.warning("Loki at %s still failing after %d retries (%s); holding the batch and retrying "
                            "every %gs while sources wait", self.host, backoff.max_retries, self._last_error,
                            backoff.max_period)
            sleep = min(delay, backoff.max_period) * random.uniform(0.5, 1.0)
            delay = min(delay * 2, backoff.max_period)
            if self._stop.wait(sleep):
                return False

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        t0 = time.perf_counter()
        try:
            # httpx leaves each exchange in reference cycles (a response and its stream) that
            # only the cycle collector frees, which tune_memory makes rare: a body handed over
            # as bytes would be held there, dozens of 300 KiB bodies at a time. An iterator lets
            # go of it once sent; the explicit length keeps the request unchunked.
            r = self.http.post(self.cfg.url, content=iter((body,)), headers={**headers, "Content-Length": str(len(body))})
        except httpx.HTTPError as e:
            self.m.duration.labels(self.host, "error").observe(time.perf_counter() - t0)
            return 0, f"{type(e).__name__}: {e}"
        self.m.duration.labels(self.host, str(r.status_code)).observe(time.perf_counter() - t0)
        return r.status_code, r.text

    def _drop(self, request: Request, reason: str, message: str, n: int | None = None) -> None:
        n = request.entries if n is None else n
        self.metrics.drop(reason, n, self.host)
        if reason not in self._warned:  # once per reason: Loki's message says what to fix
            self._warned.add(reason)
            log.error("Loki at %s refused %d entries (%s): %s", self.host, n, reason, message.strip())
