from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, input: bytes | str = b"", env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the installed `logpipe` entry point as a user would."""
    data = input.encode() if isinstance(input, str) else input
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "logpipe", *args], input=data, capture_output=True, timeout=timeout, env=full_env
    )


@pytest.fixture
def write(tmp_path: Path):
    def _write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return _write


def wait_until(cond, timeout: float = 10.0) -> bool:
    """Poll `cond` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def read_json_lines(proc: subprocess.Popen, want: int, timeout: float) -> list[dict]:
    """Entries the stdout sink of `proc` printed, until `want` of them or `timeout` seconds."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while len(out) < want and time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            buf += chunk
            *done, buf = buf.split(b"\n")
            out.extend(orjson.loads(line) for line in done if line)
        else:
            time.sleep(0.02)
    return out
