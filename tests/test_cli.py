"""The `logpipe` command as a user runs it: check, dry-run, inspect, run, Promtail's flags."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from logpipe.cli import normalize_argv
from tests.conftest import run_cli

CONFIG = """\
server:
  http_listen_port: 0
scrape_configs:
  - job_name: app
    stdin:
      labels: {job: app, __meta: x}
    relabel_configs:
      - source_labels: [__meta]
        target_label: meta
    pipeline_stages:
      - static_labels: {env: prod}
      - labeldrop: [job]
  - job_name: other
    stdin: {labels: {job: other}}
"""


def test_check_valid(write):
    p = write("ok.yaml", CONFIG)
    r = run_cli("check", "--config", str(p))
    assert r.returncode == 0, r.stderr
    assert b"valid" in r.stdout


def test_check_reports_every_error_and_exits_1(write):
    p = write("bad.yaml", "server:\n  http_listen_port: x\nscrape_configs:\n  - job_name: a\n    pipeline_stages:\n      - nope: {}\n")
    r = run_cli("check", "--config", str(p))
    assert r.returncode == 1
    err = r.stderr.decode().splitlines()
    assert f"{p}:2: server.http_listen_port: expected an integer, got str 'x'" in err
    assert any(line.startswith(f"{p}:6: scrape_configs[0].pipeline_stages[0].nope: unknown stage 'nope'") for line in err)
    assert "Traceback" not in r.stderr.decode()


def test_promtail_flags_are_accepted(write):
    p = write("ok.yaml", CONFIG)
    r = run_cli(f"-config.file={p}", "-check-syntax")
    assert r.returncode == 0, r.stderr
    r = run_cli(f"-config.file={p}", "-dry-run", "-stdin", input="hello\n")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["line"] == "hello"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["-config.file=/c.yaml"], ["run", "--config", "/c.yaml"]),
        (["-config.file", "/c.yaml", "-config.expand-env=true"], ["run", "--config", "/c.yaml", "--config.expand-env"]),
        (["-config.file=/c.yaml", "-config.expand-env=false"], ["run", "--config", "/c.yaml"]),
        (["-config.file=/c.yaml", "-dry-run", "-inspect"], ["inspect", "--config", "/c.yaml"]),
        (["check", "--config", "x"], ["check", "--config", "x"]),
    ],
)
def test_normalize_argv(argv, expected):
    assert normalize_argv(argv) == expected


def test_dry_run_prints_one_json_object_per_entry(write):
    p = write("ok.yaml", CONFIG)
    r = run_cli("dry-run", "--config", str(p), input="first\n\nsecond line\r\nthird")
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["line"] for o in out] == ["first", "second line", "third"]
    assert out[0]["labels"] == {"env": "prod", "meta": "x"}
    assert set(out[0]) == {"ts", "labels", "line", "structured_metadata"}
    assert out[0]["ts"] < out[1]["ts"] < out[2]["ts"]


def test_dry_run_named_job_and_unknown_job(write):
    p = write("ok.yaml", CONFIG)
    r = run_cli("dry-run", "--config", str(p), "--job", "other", input="x\n")
    assert json.loads(r.stdout)["labels"] == {"job": "other"}
    r = run_cli("dry-run", "--config", str(p), "--job", "nope", input="x\n")
    assert r.returncode == 1 and b"no scrape config with job_name 'nope'" in r.stderr


def test_dry_run_of_a_file_job_reads_its_files_not_stdin(write, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("one\ntwo\nthree\n")
    p = write("files.yaml", f"""\
server: {{http_listen_port: 0}}
scrape_configs:
  - job_name: files
    static_configs:
      - labels: {{job: app, __path__: "{tmp_path}/*.log"}}
""")
    r = run_cli("dry-run", "--config", str(p), "--job", "files", input="from stdin\n", timeout=30)
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["line"] for e in out] == ["one", "two", "three"]
    assert out[0]["labels"] == {"job": "app", "filename": str(log)}


def test_invalid_utf8_passes_on_with_replacement(write):
    p = write("ok.yaml", CONFIG)
    r = run_cli("dry-run", "--config", str(p), input=b"ok\nbad \xff\xfe bytes\n")
    out = [json.loads(line)["line"] for line in r.stdout.splitlines()]
    assert out == ["ok", "bad \ufffd\ufffd bytes"]


def test_inspect_shows_each_stage_change(write):
    p = write("ok.yaml", CONFIG)
    r = run_cli("inspect", "--config", str(p), input="hello\n")
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    assert "[1] static_labels: labels: +env=\"prod\"" in text
    assert "[2] labeldrop: labels: -job" in text
    assert '=> {"ts":' in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_with_the_embedded_default_serves_metrics_and_stops_on_sigterm():
    port = free_port()
    env = {**os.environ, "LOGPIPE_HTTP_PORT": str(port)}
    env.pop("LOKI_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "logpipe", "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)
    try:
        body = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
                if b'logpipe_read_entries_total{job="samples"}' in body:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert b'logpipe_read_entries_total{job="samples"}' in body
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    entries = [json.loads(line) for line in out.splitlines()]
    assert len(entries) >= 10
    levels = {e["labels"].get("level") for e in entries}
    assert {"info", "error"} <= levels


def test_run_reads_stdin_and_exits_at_its_end(write):
    p = write("ok.yaml", CONFIG)
    r = run_cli("run", "--config", str(p), input="a\nb\n")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["line"] for line in r.stdout.splitlines()] == ["a", "b"]
