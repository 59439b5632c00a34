"""The file source on real files: appends of any size, rotation by rename and by copytruncate,
deletion, many files at once, encodings, lines longer than the limit, partial lines,
positions through acks and restarts, and `logpipe run` tailing a directory."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from logpipe.agent import Agent, Job
from logpipe.batch import Batch
from logpipe.config import load_config_text
from logpipe.errors import ConfigError
from logpipe.positions import Positions, Ticket
from logpipe.sources.file import FileOptions, FileSource, check_glob, expand_braces, glob_regex
from logpipe.sources.filetail import Framing
from logpipe.telemetry import SelfMetrics
from tests.conftest import read_json_lines, wait_until

CONFIG = """\
server: {{http_listen_port: 0}}
positions: {{filename: {positions}, sync_period: 50ms}}
target_config: {{sync_period: {sync}}}
global: {{file_watch_config: {{min_poll_frequency: 10ms, max_poll_frequency: 20ms}}}}
limits_config: {{max_line_size: {max_line_size}, max_line_size_truncate: {truncate}}}
scrape_configs:
  - job_name: files
    encoding: "{encoding}"
    tail_from_end: {tail_from_end}
    partial_line_timeout: {partial}
    static_configs:
      - targets: [localhost]
        labels:
          job: varlog
          __path__: "{path}"
{exclude}"""


def config_text(tmp_path: Path, path: str, *, encoding: str = "", tail_from_end: bool = False, partial: str = "10s",
                sync: str = "100ms", max_line_size: str = "0", truncate: bool = False, exclude: str = "") -> str:
    return CONFIG.format(positions=tmp_path / "positions.yaml", path=path, encoding=encoding,
                         tail_from_end=str(tail_from_end).lower(), partial=partial, sync=sync,
                         max_line_size=max_line_size, truncate=str(truncate).lower(),
                         exclude=f"          __path_exclude__: \"{exclude}\"\n" if exclude else "")


class ListSink:
    """Holds every entry as (filename, line); acknowledges at once unless told to hold."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        self.labels: list[dict[str, str]] = []
        self.held: list[Ticket] = []
        self.hold = False
        self._cond = threading.Condition()

    def send(self, batch: Batch, ticket: Ticket) -> None:
        with self._cond:
            for ls, line in zip(batch.labels, batch.lines):
                self.entries.append((ls.get("filename"), line))
            self.labels.append(batch.labels[0].as_dict())
            if self.hold:
                self.held.append(ticket)
            else:
                ticket.done()
            self._cond.notify_all()

    def close(self, timeout: float) -> None:
        pass

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[str, str]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.entries) < n and time.monotonic() < deadline:
                self._cond.wait(0.05)
            return list(self.entries)

    def lines(self, filename: str | None = None) -> list[str]:
        with self._cond:
            return [line for name, line in self.entries if filename is None or name == filename]


class Running:
    """An agent following the config's files, with a list sink, for the length of a test."""

    def __init__(self, tmp_path: Path, text: str):
        self.config = load_config_text(text)
        self.sink = ListSink()
        self.metrics = SelfMetrics()
        p = self.config.positions
        self.positions = Positions(p.filename, p.sync_period)
        self.agent = Agent(self.config, [self.sink], self.metrics, self.positions)
        self.agent.add_configured_sources()
        self.source = self.agent.sources[0]
        self.agent.start()

    def stop(self) -> None:
        self.agent.shutdown(timeout=2)

    def dropped(self, reason: str) -> float:
        return self.metrics.registry.get_sample_value("logpipe_dropped_entries_total",
                                                      {"reason": reason, "host": ""}) or 0.0

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()




def numbered(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix} {i} é ü 日本 {'x' * (i % 37)}" for i in range(start, start + n)]


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


# -- growth ---------------------------------------------------------------------------------

def test_appends_at_random_sizes_split_lines_and_characters(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    lines = numbered("line", 3000)
    data = ("\n".join(lines) + "\n").encode()
    rnd = random.Random(5)
    with Running(tmp_path, config_text(tmp_path, str(tmp_path / "*.log"))) as run:
        pos = 0
        while pos < len(data):
            step = rnd.choice([1, 2, 3, 7, 50, 333, 4096, 20000])  # cuts lines and UTF-8 characters
            append(log, data[pos : pos + step])
            pos += step
            if rnd.random() < 0.05:
                time.sleep(0.02)  # let the reader catch up mid-line now and then
        run.sink.wait(len(lines))
        assert run.sink.lines() == lines
    assert run.sink.labels[0] == {"job": "varlog", "filename": str(log)}


def test_partial_last_line_waits_for_its_newline_then_idle_timeout(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"one\ntw")
    with Running(tmp_path, config_text(tmp_path, str(log), partial="1s")) as run:
        run.sink.wait(1)
        t0 = time.monotonic()
        append(log, b"o\nthr")
        assert run.sink.wait(2) == [(str(log), "one"), (str(log), "two")]
        time.sleep(0.2)
        if time.monotonic() - t0 < 0.9:  # (a machine too busy to tell is not a failure)
            assert run.sink.lines() == ["one", "two"]  # "thr" is not complete yet
        assert run.sink.wait(3, timeout=5)[-1] == (str(log), "thr")  # sent after 1s idle
        assert time.monotonic() - t0 >= 1.0
        append(log, b"ee\n")
        assert run.sink.wait(4)[-1] == (str(log), "ee")


def test_partial_line_timeout_zero_waits_for_the_newline(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"one\ntwo")
    with Running(tmp_path, config_text(tmp_path, str(log), partial="0")) as run:
        run.sink.wait(1)
        time.sleep(0.5)
        assert run.sink.lines() == ["one"]
        append(log, b" and more\n")
        assert run.sink.wait(2) == [(str(log), "one"), (str(log), "two and more")]


def test_crlf_and_empty_lines(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"a\r\n\r\nb\n\nc\r\n")
    with Running(tmp_path, config_text(tmp_path, str(log))) as run:
        assert [line for _, line in run.sink.wait(5)] == ["a", "", "b", "", "c"]


# -- rotation -------------------------------------------------------------------------------

def test_rename_rotation_reads_the_old_file_to_its_end_then_the_new_one(tmp_path):
    log = tmp_path / "app.log"
    first, late, second = numbered("old", 20000), numbered("late", 50), numbered("new", 5000)
    log.write_bytes(b"")
    # A rotated file is watched for a sync_period after it goes quiet (1.5s here).
    with Running(tmp_path, config_text(tmp_path, str(log), sync="1500ms")) as run:
        with open(log, "ab") as writer:  # the application's handle
            writer.write(("\n".join(first[:10000]) + "\n").encode())
            writer.flush()
            run.sink.wait(1)
            writer.write(("\n".join(first[10000:]) + "\n").encode())
            writer.flush()
            os.rename(log, tmp_path / "app.log.1")  # logrotate's default: rename, then create
            append(log, ("\n".join(second[:100]) + "\n").encode())
            assert wait_until(lambda: any(x.startswith("new") for x in run.sink.lines()))
            # The application has not reopened its log yet: these lines still go to the old file.
            writer.write(("\n".join(late) + "\n").encode())
        append(log, ("\n".join(second[100:]) + "\n").encode())
        got = run.sink.wait(len(first) + len(late) + len(second), timeout=15)
        time.sleep(0.2)
        lines = [line for _, line in got]
        assert len(run.sink.entries) == len(first) + len(late) + len(second)
        assert lines[: len(first)] == first  # the old file read to its end before the new one
        assert [x for x in lines if x.startswith(("old", "late"))] == first + late
        assert [x for x in lines if x.startswith("new")] == second
        assert {name for name, _ in got} == {str(log)}
        # The old file is let go once quiet, and its position entry removed.
        assert wait_until(lambda: len(run.source.describe()["files"]) == 1, 10)
        assert wait_until(lambda: len([k for k in run.positions.items() if k.startswith("file-")]) == 1, 10)


def test_rotation_to_a_name_the_glob_also_matches_is_not_read_twice(tmp_path):
    log = tmp_path / "app.log"
    first, second = numbered("old", 3000), numbered("new", 3000)
    log.write_text("\n".join(first) + "\n")
    with Running(tmp_path, config_text(tmp_path, str(tmp_path / "app.log*"))) as run:
        run.sink.wait(len(first))
        os.rename(log, tmp_path / "app.log.1")
        log.write_text("\n".join(second) + "\n")
        run.sink.wait(len(first) + len(second))
        time.sleep(0.5)  # two more discoveries: app.log.1 is the file already read
        assert run.sink.lines() == first + second


def test_copytruncate_restarts_at_zero(tmp_path):
    log = tmp_path / "app.log"
    a, b, c = numbered("a", 2000), numbered("b", 100), numbered("c", 4000)
    log.write_text("\n".join(a) + "\n")
    with Running(tmp_path, config_text(tmp_path, str(log))) as run:
        run.sink.wait(len(a))
        shutil.copy(log, tmp_path / "app.log.1")  # not matched by the glob
        with open(log, "r+b") as f:
            f.truncate(0)
        time.sleep(0.2)
        append(log, ("\n".join(b) + "\n").encode())  # shorter than before: seen as truncation
        run.sink.wait(len(a) + len(b))
        # Truncated again and at once rewritten past the old size: the changed head tells.
        with open(log, "r+b") as f:
            f.truncate(0)
        append(log, ("\n".join(c) + "\n").encode())
        run.sink.wait(len(a) + len(b) + len(c))
        time.sleep(0.2)
        assert run.sink.lines() == a + b + c


def test_deleted_file_is_read_to_its_end_then_released(tmp_path):
    log = tmp_path / "app.log"
    lines = numbered("d", 200_000)
    log.write_text("\n".join(lines) + "\n")
    with Running(tmp_path, config_text(tmp_path, str(log))) as run:
        run.sink.wait(1)
        os.unlink(log)  # while it is being read
        run.sink.wait(len(lines), timeout=20)
        assert run.sink.lines() == lines
        assert wait_until(lambda: run.source.describe()["files"] == [], 10)
        assert wait_until(lambda: not any(k.startswith("file-") for k in run.positions.items()), 10)


# -- discovery --------------------------------------------------------------------------------

def test_many_files_appearing_at_once_in_nested_directories(tmp_path):
    root = tmp_path / "logs"
    root.mkdir()
    with Running(tmp_path, config_text(tmp_path, str(root / "**" / "*.log"), exclude="**/skip-*.log")) as run:
        written: dict[str, list[str]] = {}
        for i in range(120):
            d = root / f"svc{i % 6}" / ("deep" if i % 2 else "")
            d.mkdir(parents=True, exist_ok=True)
            p = d / f"f{i}.log"
            written[str(p)] = numbered(f"f{i}", 40 + i)
            p.write_text("\n".join(written[str(p)]) + "\n")
        (root / "skip-me.log").write_text("excluded\n")
        (root / "other.txt").write_text("not matched\n")
        total = sum(map(len, written.values()))
        got = run.sink.wait(total, timeout=20)
        time.sleep(0.3)
        assert len(run.sink.entries) == total
        for path, lines in written.items():
            assert [line for name, line in got if name == path] == lines


def test_new_files_are_read_from_their_start_and_tail_from_end_applies_at_start_only(tmp_path):
    old = tmp_path / "old.log"
    old.write_text("before 1\nbefore 2\nhalf")
    with Running(tmp_path, config_text(tmp_path, str(tmp_path / "*.log"), tail_from_end=True)) as run:
        assert wait_until(lambda: run.source.describe()["files"])
        append(old, b"-written\nafter\n")
        new = tmp_path / "new.log"
        new.write_text("n1\nn2\n")
        run.sink.wait(4)
        time.sleep(0.3)
        # Reading starts after the last whole line: the line being written is sent whole.
        assert sorted(run.sink.entries) == [(str(new), "n1"), (str(new), "n2"), (str(old), "after"),
                                            (str(old), "half-written")]


def test_globs():
    assert expand_braces("/var/{a,b{c,d}}/*.log") == ["/var/a/*.log", "/var/bc/*.log", "/var/bd/*.log"]
    rx = glob_regex("/var/log/**/*.{gz,[0-9]}")
    assert rx.fullmatch("/var/log/x.gz") and rx.fullmatch("/var/log/a/b/x.1")
    assert not rx.fullmatch("/var/log/x.log")
    assert glob_regex("/var/*.log").fullmatch("/var/a.log") and not glob_regex("/var/*.log").fullmatch("/var/a/b.log")
    assert check_glob("/var/log/[abc") and check_glob("/var/{a,b") and check_glob("") and not check_glob("/x/**/*.log")


# -- encodings and limits -----------------------------------------------------------------------

def test_utf16_file_with_byte_order_mark_appended_in_odd_pieces(tmp_path):
    log = tmp_path / "win.log"
    lines = numbered("ligne", 2000) + ["emoji 😀 ok", "਀Ā misaligned newline bytes"]
    data = ("\n".join(lines) + "\r\n").encode("utf-16")  # BOM + little-endian
    log.write_bytes(b"")
    with Running(tmp_path, config_text(tmp_path, str(log), encoding="UTF-16")) as run:
        rnd = random.Random(3)
        pos = 0
        while pos < len(data):
            step = rnd.choice([1, 3, 999, 10001])
            append(log, data[pos : pos + step])
            pos += step
        run.sink.wait(len(lines))
        time.sleep(0.1)
        assert run.sink.lines() == lines


def test_latin1_and_big_endian_utf16():
    assert Framing.resolve("ISO-8859-1", b"").decode("caf\xe9\nna\xefve".encode("latin-1")) == (["café", "naïve"], 0, 10)
    be = Framing.resolve("UTF-16", b"\x00a")
    assert (be.codec, be.bom, be.unit) == ("utf-16-be", 0, 2)
    assert Framing.resolve("UTF-16", b"\x00") is None  # too short to tell the byte order
    le = Framing.resolve("UTF-16LE", b"\xff\xfea\x00")
    assert (le.codec, le.bom) == ("utf-16-le", 2)
    data = "਀Ā\nb".encode("utf-16-le")  # bytes 0a 00 at an odd offset are not a newline
    assert le.last_newline(data) == 4 and le.first_newline(data) == 4


@pytest.mark.parametrize("codec", ["utf-8", "utf-16-le", "utf-16-be", "utf-32-le"])
def test_groups_cut_at_newlines_whatever_the_line_lengths(codec):
    rnd = random.Random(codec)
    lines = [rnd.choice(["", "a", "é" * rnd.randrange(1, 300), "\u0a00\u0100" * 5, "x" * rnd.randrange(30_000, 90_000)])
             for _ in range(300)]
    framing = Framing.resolve(codec, b"")
    data = "\n".join(lines).encode(codec)
    out, stops = [], []
    for part, bad, longest, stop in framing.groups(data, 0, len(data), 100_000):
        assert bad == 0 and longest <= len(data)
        out.extend(part)
        stops.append(stop)
    assert out == lines
    assert stops[-1] == len(data)
    assert all(data[s : s + framing.unit] == framing.nl and s % framing.unit == 0 for s in stops[:-1])
    # Each group ends where its lines end: the bytes up to a stop are exactly its lines.
    total = 0
    for part, _, _, stop in framing.groups(data, 0, len(data), 100_000):
        total += len(part)
        assert data[:stop].decode(codec).split("\n") == lines[:total]


def _read_once(tmp_path: Path, text: str) -> tuple[list[str], SelfMetrics]:
    config = load_config_text(text)
    sc = config.scrape_configs[0]
    metrics = SelfMetrics()
    src = FileSource(Job(sc, metrics), FileOptions.of(config, sc), None, metrics, follow=False)
    out: list[str] = []
    for batch in src.batches(threading.Event()):
        out.extend(batch.lines)
    return out, metrics


@pytest.mark.parametrize("truncate", [False, True])
def test_ten_mib_line_is_dropped_or_truncated_counted_and_never_held_whole(tmp_path, truncate):
    log = tmp_path / "big.log"
    with open(log, "wb") as f:
        f.write(b"short one\n")
        chunk = b"0123456789abcdef" * 65536  # 1 MiB
        for _ in range(10):
            f.write(chunk)
        f.write(b"\nshort two\n" + b"y" * 300_000 + b"\nshort three\n")
    tracemalloc.start()
    try:
        lines, metrics = _read_once(tmp_path, config_text(tmp_path, str(log), truncate=truncate))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    limit = 256 * 1024
    if truncate:
        assert lines == ["short one", (chunk * 1)[:limit].decode(), "short two", "y" * limit, "short three"]
    else:
        assert lines == ["short one", "short two", "short three"]
    assert peak < 8 * 1024 * 1024  # a block, a pending line start and the kept head; never 10 MiB
    reason = "line_truncated" if truncate else "line_too_long"
    assert metrics.registry.get_sample_value("logpipe_dropped_entries_total", {"reason": reason, "host": ""}) == 2


def test_max_line_size_is_configurable_and_counts_utf8_bytes(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("ok\n" + "é" * 60 + "\n" + "x" * 100 + "\nend\n")  # 120 UTF-8 bytes, 100 bytes
    lines, _ = _read_once(tmp_path, config_text(tmp_path, str(log), max_line_size="110", truncate=True))
    assert lines == ["ok", "é" * 55, "x" * 100, "end"]
    # In Latin-1 the same line is 60 bytes on disk, and still 120 bytes for Loki.
    log.write_bytes(("ok\n" + "é" * 60 + "\nend\n").encode("latin-1"))
    lines, _ = _read_once(tmp_path, config_text(tmp_path, str(log), max_line_size="110", encoding="ISO-8859-1"))
    assert lines == ["ok", "end"]


# -- positions ------------------------------------------------------------------------------------

def saved_offsets(tmp_path: Path) -> dict[str, int]:
    values = Positions(tmp_path / "positions.yaml").items()
    return {k.rsplit(":", 1)[-1]: int(v.split(":")[0]) for k, v in values.items() if k.startswith("file-")}


def test_restart_resumes_exactly_where_acknowledged_delivery_stopped(tmp_path):
    log = tmp_path / "app.log"
    a, b, c = numbered("a", 5000), numbered("b", 3000), numbered("c", 2000)
    log.write_text("\n".join(a) + "\n")
    text = config_text(tmp_path, str(log))
    with Running(tmp_path, text) as run:
        run.sink.wait(len(a))
    assert run.sink.lines() == a
    assert saved_offsets(tmp_path) == {str(log): log.stat().st_size}

    # Delivered but never acknowledged: the position must not move past it.
    append(log, ("\n".join(b) + "\n").encode())
    acked_size = log.stat().st_size
    with Running(tmp_path, text) as run:
        run.sink.wait(len(b))
        assert run.sink.lines() == b
        run.sink.hold = True
        append(log, ("\n".join(c) + "\n").encode())
        run.sink.wait(len(b) + len(c))
        time.sleep(0.2)
    assert saved_offsets(tmp_path) == {str(log): acked_size}

    with Running(tmp_path, text) as run:
        run.sink.wait(len(c))
        time.sleep(0.3)
        assert run.sink.lines() == c  # exactly the unacknowledged tail, once


def test_position_of_a_replaced_file_is_not_reused(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("first life\n")
    text = config_text(tmp_path, str(log))
    with Running(tmp_path, text) as run:
        run.sink.wait(1)
    os.unlink(log)
    log.write_text("second life, a new inode\n")
    with Running(tmp_path, text) as run:
        assert run.sink.wait(1) == [(str(log), "second life, a new inode")]
    # Rewritten in place while stopped (same inode, different head): read from the start.
    with open(log, "r+b") as f:
        f.truncate(0)
        f.write(b"third life, longer than the ones before it\n")
    with Running(tmp_path, text) as run:
        assert run.sink.wait(1) == [(str(log), "third life, longer than the ones before it")]
        time.sleep(0.2)
        assert len(run.sink.entries) == 1


def test_promtail_positions_file_is_honoured(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("sent by promtail\nnot yet\n")
    (tmp_path / "positions.yaml").write_text(f"positions:\n  {log}: \"17\"\n")
    with Running(tmp_path, config_text(tmp_path, str(log))) as run:
        run.sink.wait(1)
        time.sleep(0.2)
        assert run.sink.lines() == ["not yet"]


def test_each_file_is_its_own_ack_stream(tmp_path):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("a1\n")
    with Running(tmp_path, config_text(tmp_path, str(tmp_path / "*.log"))) as run:
        run.sink.wait(1)
        run.sink.hold = True
        append(a, b"a2\n")
        run.sink.wait(2)
        run.sink.hold = False
        b.write_text("b1\n")
        run.sink.wait(3)
        # b's position commits although a's earlier batch is still unacknowledged.
        assert wait_until(lambda: saved_in(run, "b.log") == 3)
        assert saved_in(run, "a.log") == 3
        run.sink.held[0].done()
        assert wait_until(lambda: saved_in(run, "a.log") == 6)


def saved_in(run: Running, name: str) -> int | None:
    for k, v in run.positions.items().items():
        if k.endswith("/" + name):
            return int(v.split(":")[0])
    return None


# -- config ---------------------------------------------------------------------------------------

def test_bad_file_options_are_load_time_errors_with_line_and_path(tmp_path):
    text = """\
global:
  file_watch_config:
    min_poll_frequency: 1s
    max_poll_frequency: 100ms
scrape_configs:
  - job_name: files
    encoding: klingon
    static_configs:
      - labels:
          __path__: /var/log/[abc.log
          __path_exclude__: "{a,b"
  - job_name: other
    partial_line_timeout: soon
    static_configs: [{labels: {__path__: /var/log/*.log}}]
"""
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "c.yaml")
    found = {(i.line, i.path) for i in e.value.issues}
    assert (4, "global.file_watch_config.max_poll_frequency") in found
    assert (7, "scrape_configs[0].encoding") in found
    assert (10, "scrape_configs[0].static_configs[0].labels.__path__") in found
    assert (11, "scrape_configs[0].static_configs[0].labels.__path_exclude__") in found
    assert (13, "scrape_configs[1].partial_line_timeout") in found
    assert "klingon" in str(e.value) and "c.yaml:7" in str(e.value)


# -- through the CLI ------------------------------------------------------------------------------



def test_logpipe_run_tails_a_directory(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("a first\na second\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_text(tmp_path, str(logs / "*.log")))
    proc = subprocess.Popen([sys.executable, "-m", "logpipe", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        got = read_json_lines(proc, 2, 20)
        assert [e["line"] for e in got] == ["a first", "a second"]
        assert got[0]["labels"] == {"job": "varlog", "filename": str(logs / "a.log")}
        append(logs / "a.log", b"a third\n")
        (logs / "b.log").write_text("b first\n")
        got = read_json_lines(proc, 2, 10)
        assert sorted((e["labels"]["filename"], e["line"]) for e in got) == [
            (str(logs / "a.log"), "a third"), (str(logs / "b.log"), "b first")]
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert saved_offsets(tmp_path) == {str(logs / "a.log"): 25, str(logs / "b.log"): 8}
