"""Durable, ack-driven positions, and the tracker that decides when a position may be saved.

A source's position (a journal cursor, a file offset) reaches the positions file only after
every sink holds every entry read before it. The file is Promtail's format
(`positions: {key: value}`), written atomically (temp file, fsync, rename).
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import yaml

from logpipe.errors import LogpipeError

log = logging.getLogger("logpipe.positions")


class Positions:
    """The positions file: read once at start, written on sync_period and at shutdown."""

    def __init__(self, filename: str | os.PathLike[str], sync_period: float = 10.0, ignore_invalid: bool = False):
        self.path = Path(filename)
        self.sync_period = sync_period
        self._lock = threading.Lock()
        self._values: dict[str, str] = self._read(ignore_invalid)
        self._dirty = False
        self.saved_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self, ignore_invalid: bool) -> dict[str, str]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise LogpipeError(f"cannot read positions file {self.path}: {e.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
            values = data.get("positions") or {}
            if not isinstance(values, dict):
                raise ValueError("`positions` is not a mapping")
            return {str(k): str(v) for k, v in values.items()}
        except (yaml.YAMLError, ValueError, AttributeError) as e:
            # A damaged file is set aside, never silently taken as empty: reading everything
            # again from max_age is a choice the user should see.
            aside = self.path.with_name(self.path.name + f".corrupt-{int(time.time())}")
            if not ignore_invalid:
                raise LogpipeError(
                    f"positions file {self.path} is damaged ({e}); move it away or set "
                    "positions.ignore_invalid_yaml: true to start over"
                ) from None
            os.replace(self.path, aside)
            log.warning("positions file %s is damaged (%s); set aside as %s, starting over", self.path, e, aside)
            return {}

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._values.get(key)

    def items(self) -> dict[str, str]:
        with self._lock:
            return dict(self._values)

    def update(self, values: dict[str, str]) -> None:
        with self._lock:
            self._values.update(values)
            self._dirty = True

    def remove(self, key: str) -> None:
        with self._lock:
            if self._values.pop(key, None) is not None:
                self._dirty = True

    def save(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            text = yaml.safe_dump({"positions": dict(sorted(self._values.items()))}, default_flow_style=False)
            self._dirty = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.saved_at = time.time()

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.sync_period):
                try:
                    self.save()
                except OSError as e:
                    log.error("cannot write positions file %s: %s", self.path, e)

        self._thread = threading.Thread(target=loop, name="positions", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.save()


class Ticket:
    """One batch on its way to the sinks; each sink calls `done()` once it holds the batch."""

    __slots__ = ("tracker", "stream", "ack", "remaining")

    def __init__(self, tracker: "AckTracker", stream: str, ack: dict[str, str] | None, remaining: int):
        self.tracker = tracker
        self.stream = stream
        self.ack = ack
        self.remaining = remaining

    def done(self) -> None:
        self.tracker._done(self)


class AckTracker:
    """Orders acknowledgements per source: a position is committed only when the batch that
    carries it and every earlier batch of that source are held by every sink."""

    def __init__(self, positions: Positions | None):
        self.positions = positions
        self._lock = threading.Lock()
        self._pending: dict[str, deque[Ticket]] = {}
        self._idle = threading.Condition(self._lock)

    def ticket(self, stream: str, ack: dict[str, str] | None, sinks: int) -> Ticket:
        t = Ticket(self, stream, ack, sinks)
        with self._lock:
            self._pending.setdefault(stream, deque()).append(t)
        if sinks == 0:
            self._done(t, count=False)
        return t

    def _done(self, t: Ticket, count: bool = True) -> None:
        commit: dict[str, str] = {}
        with self._lock:
            if count:
                t.remaining -= 1
            q = self._pending[t.stream]
            while q and q[0].remaining <= 0:
                head = q.popleft()
                if head.ack:
                    commit.update(head.ack)
            if not q:  # a file rotated away or deleted leaves no queue behind
                del self._pending[t.stream]
                self._idle.notify_all()
        if commit and self.positions is not None:
            self.positions.update(commit)

    def pending(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._pending.values())

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while any(self._pending.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


