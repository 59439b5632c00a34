"""The journal source on real journal files: labels, relabeling, matches, max_age, json,
odd fields, resume after kill -9, and following a growing journal."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from logpipe.agent import Job
from logpipe.config import load_config_text
from logpipe.errors import SourceError
from logpipe.positions import Positions
from logpipe.sources.journal import JournalSource, damaged_files
from logpipe.telemetry import SelfMetrics
from tests.conftest import read_json_lines
from tests.journal_files import entry, needs_journal_remote, write_journal

pytestmark = needs_journal_remote

NOW_US = int(time.time() * 1_000_000)

# The relabeling of a real Promtail journal setup.
CONFIG = """\
server: {{http_listen_port: 0}}
positions: {{filename: {positions}, sync_period: 100ms}}
scrape_configs:
  - job_name: journal
    journal:
      path: {path}
      max_age: {max_age}
      json: {json}
      matches: "{matches}"
      labels: {{job: systemd-journal}}
    relabel_configs:
      - source_labels: ['__journal__systemd_unit']
        target_label: 'unit'
      - source_labels: ['__journal_priority_keyword']
        target_label: 'level'
      - source_labels: ['__journal_syslog_identifier']
        target_label: 'ident'
"""


def config_text(tmp_path: Path, max_age: str = "12h", json_mode: bool = False, matches: str = "") -> str:
    return CONFIG.format(path=tmp_path / "journal", positions=tmp_path / "positions.yaml", max_age=max_age,
                         json=str(json_mode).lower(), matches=matches)


def read_all(tmp_path: Path, **kw) -> list:
    """Read the journal through the source and job until caught up; return output entries."""
    config = load_config_text(config_text(tmp_path, **kw))
    metrics = SelfMetrics()
    job = Job(config.scrape_configs[0], metrics)
    src = JournalSource(job, config.scrape_configs[0].journal, None, metrics)
    stop = threading.Event()
    out = []
    for batch in src.batches(stop):
        processed = job.process(batch)
        out.extend(processed.entry(i) for i in range(len(processed)))
        stop.set()  # the first batch holds everything: the reader stops when caught up
    return out, metrics


def test_fields_become_labels_through_relabeling(tmp_path):
    write_journal(tmp_path / "journal" / "a.journal", [
        entry(1, NOW_US - 3000, "ollama.service", 4, "gpu VRAM low"),
        entry(2, NOW_US - 2000, "redis.service", 3, "OOM command not allowed"),
        entry(3, NOW_US - 1000, "ollama.service", 6, "llama runner started"),
    ])
    out, _ = read_all(tmp_path)
    assert [e["line"] for e in out] == ["gpu VRAM low", "OOM command not allowed", "llama runner started"]
    assert out[0]["labels"] == {"job": "systemd-journal", "unit": "ollama.service", "level": "warning", "ident": "ollama"}
    assert out[1]["labels"]["level"] == "error"  # Promtail's keyword for priority 3
    assert out[0]["ts"] == (NOW_US - 3000) * 1000


def test_matches_combine_as_journalctl(tmp_path):
    write_journal(tmp_path / "journal" / "a.journal", [
        entry(1, NOW_US - 3000, "ollama.service", 4), entry(2, NOW_US - 2000, "redis.service", 3),
        entry(3, NOW_US - 1000, "nginx.service", 6),
    ])
    out, _ = read_all(tmp_path, matches="_SYSTEMD_UNIT=ollama.service _SYSTEMD_UNIT=nginx.service")
    assert [e["labels"]["unit"] for e in out] == ["ollama.service", "nginx.service"]
    out, _ = read_all(tmp_path, matches="_SYSTEMD_UNIT=ollama.service PRIORITY=3 + _SYSTEMD_UNIT=redis.service")
    assert [e["labels"]["unit"] for e in out] == ["redis.service"]


def test_max_age_on_first_start(tmp_path):
    write_journal(tmp_path / "journal" / "a.journal", [
        entry(1, NOW_US - 3 * 3600 * 10**6, message="three hours old"),
        entry(2, NOW_US - 10 * 10**6, message="ten seconds old"),
    ])
    out, _ = read_all(tmp_path, max_age="1h")
    assert [e["line"] for e in out] == ["ten seconds old"]


def test_json_mode_line_is_the_whole_entry(tmp_path):
    write_journal(tmp_path / "journal" / "a.journal", [entry(1, NOW_US - 1000, message="a <b> & c")])
    out, _ = read_all(tmp_path, json_mode=True)
    line = out[0]["line"]
    doc = json.loads(line)
    assert doc["MESSAGE"] == "a <b> & c" and doc["_SYSTEMD_UNIT"] == "ollama.service"
    assert "\\u003cb\\u003e \\u0026 c" in line  # Go's encoding/json escapes HTML characters
    assert list(doc) == sorted(doc)
    assert out[0]["labels"]["unit"] == "ollama.service"


def test_odd_fields_are_handled_and_counted(tmp_path):
    write_journal(tmp_path / "journal" / "a.journal", [
        entry(1, NOW_US - 5000, message=b"not utf-8 \xff\xfe here"),
        entry(2, NOW_US - 4000, message="first line\nsecond line"),
        entry(3, NOW_US - 3000, message="x" * 200_000),
        entry(4, NOW_US - 2000, message=False),  # no MESSAGE at all
        entry(5, NOW_US - 1000, message="last", BLOB=b"\x00\x01\x02binary"),
    ])
    out, metrics = read_all(tmp_path)
    assert [e["line"] for e in out] == ["not utf-8 \ufffd\ufffd here", "first line\nsecond line", "x" * 200_000, "last"]
    assert metrics.registry.get_sample_value("logpipe_decode_errors_total", {"job": "journal"}) == 1
    assert metrics.registry.get_sample_value("logpipe_stage_errors_total", {"stage": "journal", "reason": "no_message"}) == 1


def test_missing_directory_is_a_clear_error(tmp_path):
    config = load_config_text(config_text(tmp_path))
    metrics = SelfMetrics()
    src = JournalSource(Job(config.scrape_configs[0], metrics), config.scrape_configs[0].journal, None, metrics)
    with pytest.raises(SourceError, match="journal directory .*journal does not exist"):
        next(src.batches(threading.Event()))


def test_truncated_file_is_reported_and_the_rest_is_read(tmp_path, caplog):
    d = tmp_path / "journal"
    write_journal(d / "good.journal", [entry(i, NOW_US - 10000 + i) for i in range(50)])
    bad = write_journal(d / "bad.journal", [entry(i, NOW_US - 5000 + i, message=f"bad {i}") for i in range(2000)])
    with open(bad, "r+b") as f:
        f.truncate(bad.stat().st_size // 2)
    assert [why.startswith("truncated") for _, why in damaged_files(str(d))] == [True]
    out, _ = read_all(tmp_path)
    assert sum(1 for e in out if e["line"].startswith("message")) == 50
    assert "bad.journal is damaged (truncated" in caplog.text


def run_agent(tmp_path: Path, *extra: str) -> subprocess.Popen:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_text(tmp_path))
    return subprocess.Popen([sys.executable, "-m", "logpipe", "run", "--config", str(cfg), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_follow_new_entries_arrive_within_two_seconds(tmp_path):
    path = tmp_path / "journal" / "live.journal"
    write_journal(path, [entry(0, NOW_US - 1000, message="before start")])
    proc = run_agent(tmp_path)
    try:
        assert [e["line"] for e in read_json_lines(proc, 1, 20)] == ["before start"]
        for i in range(3):
            t0 = time.monotonic()
            write_journal(path, [entry(i, int(time.time() * 1e6), message=f"live {i}")])
            got = read_json_lines(proc, 1, 5)
            assert [e["line"] for e in got] == [f"live {i}"]
            assert time.monotonic() - t0 < 2.0
    finally:
        proc.kill()
        proc.wait()


def test_resume_after_kill_9_loses_nothing_and_repeats_nothing_acknowledged(tmp_path):
    path = tmp_path / "journal" / "a.journal"
    n = 3000
    write_journal(path, [entry(i, NOW_US - 100_000 + i, message=f"m{i}") for i in range(n)])
    seen: list[str] = []
    proc = run_agent(tmp_path)
    seen += [e["line"] for e in read_json_lines(proc, n, 30)]
    assert len(seen) == n
    deadline = time.monotonic() + 10  # let the positions file catch up (sync_period 100ms)
    while time.monotonic() < deadline:
        saved = Positions(tmp_path / "positions.yaml").get("journal-journal")
        if saved and "i=3000;" in saved:  # the cursor of the last entry
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    write_journal(path, [entry(i, NOW_US - 50_000 + i, message=f"m{i}") for i in range(n, n + 500)])
    proc = run_agent(tmp_path)
    try:
        seen += [e["line"] for e in read_json_lines(proc, 500, 30)]
        time.sleep(0.5)
        seen += [e["line"] for e in read_json_lines(proc, 1, 0.3)]
    finally:
        proc.kill()
        proc.wait()
    assert seen == [f"m{i}" for i in range(n + 500)]


def test_ready_targets_and_lag_are_served(tmp_path):
    import urllib.request

    from tests.test_cli import free_port

    write_journal(tmp_path / "journal" / "a.journal", [entry(1, NOW_US - 5 * 10**6, message="five seconds old")])
    port = free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_text(tmp_path).replace("http_listen_port: 0", f"http_listen_port: {port}"))
    proc = subprocess.Popen([sys.executable, "-m", "logpipe", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert len(read_json_lines(proc, 1, 20)) == 1
        base = f"http://127.0.0.1:{port}"
        assert urllib.request.urlopen(base + "/ready", timeout=5).status == 200
        targets = json.loads(urllib.request.urlopen(base + "/targets", timeout=5).read())
        assert targets[0]["type"] == "journal" and targets[0]["job"] == "journal"
        assert targets[0]["position"].startswith("s=")
        assert targets[0]["lag_seconds"] >= 5
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        lag = [line for line in metrics.splitlines() if line.startswith('logpipe_journal_lag_seconds{job="journal"}')]
        assert lag and float(lag[0].split()[-1]) >= 5
        assert "logpipe_positions_age_seconds" in metrics
        assert 'logpipe_read_entries_total{job="journal"} 1.0' in metrics
    finally:
        proc.kill()
        proc.wait()


def test_dry_run_of_a_journal_job_reads_the_journal_and_exits(tmp_path):
    from tests.conftest import run_cli

    write_journal(tmp_path / "journal" / "a.journal", [entry(1, NOW_US - 2000, "redis.service", 4, "one"),
                                                        entry(2, NOW_US - 1000, "redis.service", 6, "two")])
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_text(tmp_path))
    r = run_cli("dry-run", "--config", str(cfg), "--job", "journal", timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(e["line"], e["labels"]["level"]) for e in out] == [("one", "warning"), ("two", "info")]
    assert not (tmp_path / "positions.yaml").exists()  # a dry run moves no position
