"""Real journal files for tests, written by Debian's systemd-journal-remote from export format."""
from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from typing import Iterable, Mapping

import pytest

JOURNAL_REMOTE = next((p for p in ("/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote")
                       if Path(p).exists()), None)

needs_journal_remote = pytest.mark.skipif(
    JOURNAL_REMOTE is None and not shutil.which("systemd-journal-remote"),
    reason="systemd-journal-remote is not installed (bash deploy/setup.sh test installs it as root)",
)


def export_entry(fields: Mapping[str, str | bytes]) -> bytes:
    """One entry in the journal export format; binary-safe for any value."""
    out = bytearray()
    for k, v in fields.items():
        data = v.encode() if isinstance(v, str) else v
        if b"\n" in data or not _printable(data):
            out += k.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += k.encode() + b"=" + data + b"\n"
    return bytes(out) + b"\n"


def _printable(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def write_journal(path: Path, entries: Iterable[Mapping[str, str | bytes]]) -> Path:
    """Append entries to the journal file `path` (created if missing; name ends in .journal).
    Each entry needs __REALTIME_TIMESTAMP (microseconds) or journal-remote drops it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(export_entry(e) for e in entries)
    exe = JOURNAL_REMOTE or shutil.which("systemd-journal-remote")
    subprocess.run([exe, f"--output={path}", "-"], input=data, check=True, capture_output=True, timeout=120)
    return path


def entry(n: int, ts_us: int, unit: str = "ollama.service", priority: int = 6, message: str | bytes | None = None,
          **extra: str | bytes) -> dict[str, str | bytes]:
    e: dict[str, str | bytes] = {"__REALTIME_TIMESTAMP": str(ts_us), "_SYSTEMD_UNIT": unit, "PRIORITY": str(priority),
                                 "SYSLOG_IDENTIFIER": unit.split(".")[0], "_HOSTNAME": "gpu-node-1"}
    if message is not False:
        e["MESSAGE"] = message if message is not None else f"message {n}"
    e.update(extra)
    return e
