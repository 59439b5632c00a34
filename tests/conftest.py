from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
