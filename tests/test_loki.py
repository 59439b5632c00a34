"""The Loki sink against a receiver that speaks Loki's push protocol: both encodings, batching,
tenants, faults (bounded, loopback), back-pressure, 4xx drops, and `logpipe run` end to end."""
from __future__ import annotations

import base64
import gc
import os
import threading
import time
import tracemalloc

import pytest

from logpipe.batch import Batch, LabelSet
from logpipe.config import load_config_text
from logpipe.loki_receiver import Limits, LokiReceiver
from logpipe.positions import AckTracker
from logpipe.sinks.loki import LokiClient
from logpipe.telemetry import SelfMetrics
from tests.conftest import run_cli, wait_until

NOW_NS = time.time_ns()


@pytest.fixture
def receiver():
    r = LokiReceiver().start()
    yield r
    r.stop()


def client(receiver: LokiReceiver, **options):
    extra = "".join(f"\n    {k}: {v}" for k, v in options.items())
    cfg = load_config_text(f"clients:\n  - url: {receiver.url}\n    batchwait: 50ms\n"
                           f"    backoff_config: {{min_period: 10ms, max_period: 50ms, max_retries: 3}}{extra}\n")
    metrics = SelfMetrics()
    return LokiClient(cfg.clients[0], metrics), metrics


def batch(lines, labels=None, start=NOW_NS):
    return Batch.of_lines(list(lines), list(range(start, start + len(lines))), LabelSet.of(labels or {"job": "t"}))




@pytest.mark.parametrize("options", [{"encoding": "protobuf"}, {"encoding": "json"},
                                     {"encoding": "json", "compression": "none"}])
def test_round_trip(receiver, options):
    c, metrics = client(receiver, external_labels="{host: node-1}", **options)
    lines = ["plain", "ünïcødé ✓ 日本語 🚀", 'quotes " and \\ backslash', "tab\tand newline\nin one entry"]
    b = batch(lines, {"job": "t", "level": "", "__tenant_id__": "team-a", "__internal": "x"})
    b.metadata_column("trace_id")[1] = "abc123"
    tracker = AckTracker(None)
    c.send(b, tracker.ticket("s", None, 1))
    c.close(5)
    got = receiver.entries
    assert [e.line for e in got] == lines
    assert [e.ts for e in got] == b.ts  # nanoseconds survive
    assert got[0].labels == {"job": "t", "host": "node-1", "service_name": "t"}  # empty value and __ labels gone
    assert got[1].metadata == {"trace_id": "abc123"} and got[0].metadata == {}
    assert {e.tenant for e in got} == {"team-a"}
    assert tracker.pending() == 0
    sent = {name: metrics.registry.get_sample_value(f"logpipe_sent_{name}_total", {"host": c.host})
            for name in ("entries", "bytes")}
    assert sent == {"entries": 4, "bytes": sum(len(line.encode()) for line in lines)}  # bytes, as Loki counts them
    req = receiver.requests[0]
    assert req["content_type"] == ("application/x-protobuf" if options["encoding"] == "protobuf" else "application/json")
    assert req["encoding"] == ("gzip" if options.get("compression", "gzip") == "gzip" and options["encoding"] == "json" else None)


def test_tenants_and_streams_are_grouped(receiver):
    c, _ = client(receiver, tenant_id="default-team")
    tracker = AckTracker(None)
    c.send(batch(["a1", "a2"], {"job": "a", "__tenant_id__": "t1"}), tracker.ticket("s", None, 1))
    c.send(batch(["b1"], {"job": "b"}), tracker.ticket("s", None, 1))
    c.close(5)
    by_tenant = {}
    for e in receiver.entries:
        by_tenant.setdefault(e.tenant, []).append((e.labels["job"], e.line))
    assert by_tenant == {"t1": [("a", "a1"), ("a", "a2")], "default-team": [("b", "b1")]}
    assert len(receiver.requests) == 2  # one push per tenant


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_interleaved_streams_arrive_each_in_order(receiver, encoding):
    """Entries of several streams mixed in one batch, two of whose label sets differ only in
    a label Loki never sees: each stream arrives once per push, its entries in their order."""
    c, _ = client(receiver, encoding=encoding)
    kinds = [{"job": "a"}, {"job": "b"}, {"job": "a", "__path__": "/x"}, {"job": "c", "__tenant_id__": "t2"}]
    b = Batch.of_lines([f"line {i}" for i in range(40)], list(range(NOW_NS, NOW_NS + 40)), LabelSet.of({}))
    b.labels = [LabelSet.of(kinds[i * 7 % 4]) for i in range(40)]
    tracker = AckTracker(None)
    c.send(b, tracker.ticket("s", None, 1))
    c.close(5)
    got: dict[tuple[str, str], list[int]] = {}
    for e in receiver.entries:
        got.setdefault((e.tenant, e.labels["job"]), []).append(int(e.line.split()[1]))
    expect: dict[tuple[str, str], list[int]] = {}
    for i in range(40):
        kind = kinds[i * 7 % 4]
        expect.setdefault((kind.get("__tenant_id__", ""), kind["job"]), []).append(i)
    assert got == expect
    assert len(receiver.requests) == 2


def test_batchwait_holds_a_small_batch_until_due(receiver):
    c, _ = client(receiver, batchwait="400ms")
    t0 = time.monotonic()
    c.send(batch(["x"]), AckTracker(None).ticket("s", None, 1))
    time.sleep(0.2)
    assert receiver.entries == []
    assert wait_until(lambda: receiver.entries, 3)
    assert time.monotonic() - t0 >= 0.35
    c.close(1)


def test_batchsize_splits_pushes(receiver):
    c, _ = client(receiver, batchsize=2000, batchwait="5s", max_inflight_batches=100)
    tracker = AckTracker(None)
    for i in range(20):
        c.send(batch([f"{i}-{j}-" + "x" * 90 for j in range(5)]), tracker.ticket("s", None, 1))
    c.close(10)
    assert len(receiver.entries) == 100
    assert len(receiver.requests) >= 4  # 10 KB in pushes of about 2 KB, not one push after 5s


def test_sent_bodies_are_freed_without_the_cycle_collector():
    """The agent runs Python's cycle collector rarely, and httpx leaves every exchange in
    reference cycles: a body caught in them stayed in memory long after Loki took it (19 MiB
    in case A's benchmark). With the collector off, 40 pushes of about 200 KiB each leave less
    than 2 MiB held."""
    receiver = LokiReceiver(record=False).start()  # keeps no entries: all memory held is the client's
    c, _ = client(receiver, batchsize="256KiB", batchwait="5s", max_inflight_batches=2)
    tracker = AckTracker(None)
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        for i in range(40):
            lines = [base64.b64encode(os.urandom(192)).decode() for _ in range(1024)]  # snappy leaves 3/4
            c.send(batch(lines, start=NOW_NS + i * 1024), tracker.ticket("s", None, 1))
        c.close(30)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
        receiver.stop()
    assert receiver.accepted == 40 * 1024
    assert held < 2 * 2**20, f"{held / 2**20:.1f} MiB still held after delivery"


@pytest.mark.parametrize("fault", ["500", "429", "drop", "slow"])
def test_transient_faults_are_retried_and_nothing_is_lost(receiver, fault):
    c, metrics = client(receiver, **({"timeout": "200ms"} if fault == "slow" else {}))
    if fault == "drop":
        receiver.drop_next = 2
    elif fault == "slow":
        receiver.delay = 0.5  # past the client's timeout: the request fails and is sent again
        threading.Timer(0.6, lambda: setattr(receiver, "delay", 0.0)).start()
    else:
        receiver.fail_next = [int(fault)] * 3
    tracker = AckTracker(None)
    for i in range(5):
        c.send(batch([f"{i}"], start=NOW_NS + i), tracker.ticket("s", None, 1))
    c.close(10)
    got = sorted(e.line for e in receiver.entries)
    if fault == "slow":  # Loki may have stored a push whose answer came too late: at least once
        got = sorted(set(got))
    assert got == [str(i) for i in range(5)]
    assert metrics.registry.get_sample_value("logpipe_batch_retries_total", {"host": c.host}) >= 2
    assert tracker.pending() == 0


def test_down_then_up_back_pressure_and_no_loss(receiver):
    receiver.stop()
    c, _ = client(receiver, max_inflight_batches=2, batchsize=30)
    tracker = AckTracker(None)
    sent = []

    def produce():
        for i in range(30):
            c.send(batch([f"line {i}"], start=NOW_NS + i), tracker.ticket("s", None, 1))
            sent.append(i)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    time.sleep(1.0)
    # a request is 5 lines (batchsize 30, lines of 6-7 bytes): the worker retries one, the queue
    # holds max_inflight_batches, the producer waits to queue the fourth instead of reading on
    assert 3 * 5 <= len(sent) < 4 * 5
    receiver.start()
    t.join(20)
    c.close(10)
    assert sorted(e.line for e in receiver.entries) == sorted(f"line {i}" for i in range(30))
    assert tracker.pending() == 0


def test_max_retries_drop_only_when_asked(receiver):
    receiver.failing = 500
    c, metrics = client(receiver, drop_after_max_retries="true")
    c.send(batch(["gone"]), AckTracker(None).ticket("s", None, 1))
    c.close(5)
    assert receiver.entries == []
    assert metrics.registry.get_sample_value("logpipe_dropped_entries_total",
                                             {"reason": "loki_max_retries", "host": c.host}) == 1


def test_4xx_drops_exactly_the_bad_entries_and_delivery_goes_on():
    receiver = LokiReceiver(Limits(max_line_size=100)).start()
    try:
        c, metrics = client(receiver)
        tracker = AckTracker(None)
        c.send(batch(["ok 1", "x" * 200, "ok 2"]), tracker.ticket("s", None, 1))
        time.sleep(0.3)
        c.send(batch(["after"], start=NOW_NS + 10), tracker.ticket("s", None, 1))
        c.close(5)
        assert [e.line for e in receiver.entries] == ["ok 1", "ok 2", "after"]
        assert metrics.registry.get_sample_value("logpipe_dropped_entries_total",
                                                 {"reason": "loki_rejected", "host": c.host}) == 1
        assert tracker.pending() == 0
    finally:
        receiver.stop()


@pytest.mark.parametrize("body, ctype, status", [
    (b"not json", "application/json", 400),
    (b"\x00garbage", "application/x-protobuf", 400),
    (b'{"streams":[]}', "application/json", 422),
    (b'{"streams":[{"stream":{"bad-label":"x"},"values":[["1","a"]]}]}', "application/json", 400),
])
def test_receiver_answers_as_loki_does(receiver, body, ctype, status):
    assert receiver.push(body, {"Content-Type": ctype})[0] == status


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_logpipe_run_delivers_to_loki(receiver, tmp_path, encoding):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"server: {{http_listen_port: 0}}\npositions: {{filename: {tmp_path}/p.yaml}}\n"
                   f"clients:\n  - url: {receiver.url}\n    encoding: {encoding}\n"
                   "scrape_configs:\n  - job_name: app\n    stdin: {labels: {job: app}}\n"
                   "    pipeline_stages:\n      - regex: {expression: 'level=(?P<level>\\w+)'}\n      - labels: {level: }\n")
    lines = [f"level={'info' if i % 3 else 'error'} n={i}" for i in range(500)]
    r = run_cli("run", "--config", str(cfg), input="\n".join(lines) + "\n", timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    by_level: dict[str, list[str]] = {}
    for e in receiver.entries:
        by_level.setdefault(e.labels["level"], []).append(e.line)
    assert by_level == {"info": [x for x in lines if "info" in x], "error": [x for x in lines if "error" in x]}


def test_embedded_default_pushes_to_loki_url(receiver):
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "LOKI_URL": receiver.url, "LOGPIPE_HTTP_PORT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "logpipe", "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: len(receiver.entries) >= 10, 30), proc.stderr.read1().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    assert proc.stdout.read() == b""  # entries went to Loki, not stdout


def test_the_batch_protobuf_encoder_equals_the_protobuf_runtime():
    import random

    import numpy as np

    from logpipe.sinks.proto import push_pb2
    from logpipe.sinks.pushproto import push_request, utf8_sizes

    rnd = random.Random(5)
    for _ in range(100):
        streams = []
        for k in range(rnd.randint(1, 4)):
            n = rnd.randint(0, 40)
            ts = [rnd.choice([0, 1, 10**9, -1, -10**9 - 5, rnd.randint(-2**62, 2**62), NOW_NS + rnd.randint(0, 10**9)])
                  for _ in range(n)]
            lines = [rnd.choice(["", "x", "ünïcødé ✓ 日本語 🚀", "a" * rnd.randint(100, 300), "b" * 20000]) for _ in range(n)]
            streams.append((f'{{job="j{k}", x="ü"}}', ts, lines))
        req = push_pb2.PushRequest()
        for labels, ts, lines in streams:
            s = req.streams.add(labels=labels)
            for t, line in zip(ts, lines):
                e = s.entries.add(line=line)
                e.timestamp.seconds, e.timestamp.nanos = divmod(t, 1_000_000_000)
        flat_ts = np.array([t for _, ts, _ in streams for t in ts], np.int64)
        flat_lines = [line for _, _, lines in streams for line in lines]
        raw = push_request([s[0] for s in streams], [len(s[1]) for s in streams], flat_ts, flat_lines,
                           *utf8_sizes(flat_lines))
        assert raw == req.SerializeToString()
