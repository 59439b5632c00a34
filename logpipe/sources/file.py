"""Tailing files: Promtail's static_configs with `__path__` globs.

One source per scrape config follows every file its globs match, in one thread: discovery
re-runs every `target_config.sync_period`, each file is read in large blocks (see filetail),
and growth is found by polling at `global.file_watch_config` frequencies.

Each file is its own ack stream: a batch holds lines of one file and its ack is that file's
position, under a key of job, device, inode and path, so a rotated file and its successor at
the same path never share a position. The value is `offset:n:crc`, the crc of the file's
first n bytes, so an inode that now holds other content is read from its start. A file is
known by its inode while it is followed: renamed to another path the globs match, it is not
read twice.

Where reading starts: at the saved position; else (a Promtail positions file) at Promtail's
offset for the path; else at the start, or, for files present at startup with
`tail_from_end`, after the last whole line. Files found later are always read from the start.

Rotation, deletion and truncation:
- rename + create: the old file's open handle is read to its end before the new file is
  followed from its start, and watched a little longer for a writer that has not reopened;
- copytruncate: a file shorter than what was read, or whose first bytes changed, is read
  again from 0;
- a deleted file is read to its end through the open handle, then released; so is a file
  the globs no longer match. A released file's position entry is removed once its last
  position is committed.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from logpipe.batch import Batch, LabelSet
from logpipe.positions import Positions
from logpipe.sources.filetail import BLOCK, FileTail, LineLimit
from logpipe.telemetry import SelfMetrics

if TYPE_CHECKING:
    from logpipe.agent import Job
    from logpipe.config import Config, ScrapeConfig

log = logging.getLogger("logpipe.file")

DEFAULT_MAX_LINE_SIZE = 256 * 1024  # Loki's default limit; lines are bounded even when unset
ROUND_BLOCKS = 8  # blocks read from one file before the next file gets its turn
END_MARK = ":end"  # a released file's last position: the entry may be removed once committed


# -- globs ---------------------------------------------------------------------------------

def expand_braces(pattern: str) -> list[str]:
    """`{a,b}` alternatives (nested too), as Promtail's doublestar globs allow."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth = 0
    for end in range(start, len(pattern)):
        if pattern[end] == "{":
            depth += 1
        elif pattern[end] == "}":
            depth -= 1
            if depth == 0:
                break
    else:
        return [pattern]
    body, parts, depth, last = pattern[start + 1 : end], [], 0, 0
    for i, c in enumerate(body):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(body[last:i])
            last = i + 1
    parts.append(body[last:])
    out: list[str] = []
    for part in parts:
        out.extend(expand_braces(pattern[:start] + part + pattern[end + 1 :]))
    return list(dict.fromkeys(out))


def _translate(pattern: str) -> str:
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            j = pattern.find("]", j)
            if j < 0:
                raise ValueError("unclosed [ in glob")
            body = pattern[i + 1 : j]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching the paths `pattern` matches (`**` crosses directories, `*` does not)."""
    return re.compile("|".join(f"(?:{_translate(p)})" for p in expand_braces(pattern)))


def check_glob(pattern: str) -> str | None:
    """Why `pattern` is not a usable glob, or None."""
    if not pattern.strip():
        return "must not be empty"
    if pattern.count("{") != pattern.count("}"):
        return f"unbalanced braces in glob {pattern!r}"
    try:
        glob_regex(pattern)
    except (ValueError, re.error) as e:
        return f"invalid glob {pattern!r}: {e}"
    return None


class Target:
    """One static_config: its globs and its labels."""

    def __init__(self, labels: dict[str, str]):
        self.labels = labels
        self.patterns = expand_braces(labels["__path__"])
        exclude = labels.get("__path_exclude__")
        self.exclude = glob_regex(exclude) if exclude else None

    def paths(self) -> Iterator[str]:
        for pattern in self.patterns:
            for path in sorted(glob.iglob(pattern, recursive=True, include_hidden=True)):
                if self.exclude is None or not self.exclude.fullmatch(path):
                    yield path


# -- options -------------------------------------------------------------------------------

@dataclass
class FileOptions:
    encoding: str = ""
    tail_from_end: bool = False
    partial_line_timeout: float = 10.0
    sync_period: float = 10.0
    min_poll: float = 0.25
    max_poll: float = 0.25
    max_line_size: int = DEFAULT_MAX_LINE_SIZE
    truncate: bool = False
    block: int = BLOCK

    @staticmethod
    def of(config: "Config", sc: "ScrapeConfig") -> "FileOptions":
        watch, limits = config.global_.file_watch_config, config.limits_config
        return FileOptions(
            encoding=sc.encoding, tail_from_end=sc.tail_from_end, partial_line_timeout=sc.partial_line_timeout,
            sync_period=config.target_config.sync_period, min_poll=watch.min_poll_frequency,
            max_poll=watch.max_poll_frequency, max_line_size=limits.max_line_size or DEFAULT_MAX_LINE_SIZE,
            truncate=limits.max_line_size_truncate,
        )

    @property
    def drain_idle(self) -> float:
        """How long a rotated or deleted file must stay quiet before it is let go: a writer
        may not have reopened its log yet (logrotate signals it after the rename)."""
        return max(1.0, 4 * self.max_poll, self.sync_period)


class FilenameAfterRelabel(dict):
    """Promtail adds `filename` after relabeling: rules never see it or remove it. Wraps the
    job's memoised relabeler the same way (label set in, label set or None out)."""

    def __init__(self, inner: Any):
        super().__init__()
        self.inner = inner

    def __missing__(self, labels: LabelSet) -> LabelSet | None:
        name = labels.get("filename")
        out = self.inner[labels.without(("filename",))] if name is not None else self.inner[labels]
        if out is not None and name is not None:
            out = out.updated({"filename": name})
        if len(self) >= 100_000:
            self.clear()
        self[labels] = out
        return out


@dataclass
class Followed:
    """A file being read, with what the source knows of it."""

    tail: FileTail
    key: str
    labels: LabelSet
    acked: str = ""  # the last position put in a batch
    gone_at: float | None = None  # when the globs stopped matching its inode


# -- the source ----------------------------------------------------------------------------

class FileSource:
    """Follows the files of one scrape config; yields one file's lines per batch."""

    def __init__(self, job: "Job", opts: FileOptions, positions: Positions | None, metrics: SelfMetrics,
                 follow: bool = True, clock: Callable[[], int] = time.time_ns):
        self.job = job
        self.opts = opts
        self.key = f"file-{job.name}"
        self.prefix = self.key + ":"
        self.positions = positions
        self.follow = follow  # False: stop once every file is read to its end (benchmarks)
        self.clock = clock
        self.targets = [Target(s.labels) for s in job.config.file_targets()]
        self.limit = LineLimit(opts.max_line_size, opts.truncate)
        if not isinstance(job.relabel, FilenameAfterRelabel):  # a job read again (bench) is wrapped once
            job.relabel = FilenameAfterRelabel(job.relabel)
        self._files: dict[tuple[int, int], Followed] = {}
        self._saved = self._saved_positions()
        self._ending: set[str] = set()
        self._sync_now = False
        self._progress = False
        self._buf = bytearray()  # one read buffer for all files: they are read one at a time
        self._warned: set[str] = set()
        self._entries = metrics.read_entries.labels(job.name)
        self._bytes = metrics.read_bytes.labels(job.name)
        self._bad = metrics.decode_errors.labels(job.name)
        self.metrics = metrics

    def describe(self) -> dict[str, Any]:
        files = [{"path": f.tail.path, "position": f.tail.line_start, "read": f.tail.read_pos,
                  "state": "reading" if f.gone_at is None else "draining"} for f in list(self._files.values())]
        return {"type": "file", "job": self.job.name, "paths": [t.labels["__path__"] for t in self.targets],
                "files": files}

    # -- positions -------------------------------------------------------------------------

    def _saved_positions(self) -> dict[tuple[int, int], tuple[str, str]]:
        """This job's saved file positions by (device, inode)."""
        out: dict[tuple[int, int], tuple[str, str]] = {}
        if self.positions is None:
            return out
        for key, value in self.positions.items().items():
            parts = key[len(self.prefix):].split(":", 2) if key.startswith(self.prefix) else []
            if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                out[(int(parts[0]), int(parts[1]))] = (key, value)
        return out

    def _forget(self, keys: list[str]) -> None:
        if self.positions is not None:
            for key in keys:
                self.positions.remove(key)

    def _remove_ended(self) -> None:
        """Drop the entries of released files once their last position is committed: no
        later ack can write them back."""
        if self.positions is None:
            self._ending.clear()
            return
        for key in list(self._ending):
            if (self.positions.get(key) or "").endswith(END_MARK):
                self.positions.remove(key)
                self._ending.discard(key)

    # -- discovery -------------------------------------------------------------------------

    def _discover(self, initial: bool) -> list[Batch]:
        self._sync_now = False
        found: dict[tuple[int, int], tuple[str, Target]] = {}
        for target in self.targets:
            for path in target.paths():
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found.setdefault((st.st_dev, st.st_ino), (path, target))
        if initial:
            # Files that went away while logpipe was stopped: their positions mean nothing now.
            gone = [key for ident, (key, _) in self._saved.items() if ident not in found]
            self._forget(gone)
            self._saved = {i: kv for i, kv in self._saved.items() if i in found}
        out = []
        for ident, (path, target) in found.items():
            f = self._files.get(ident)
            if f is not None:
                f.tail.path, f.gone_at = path, None
                continue
            f = self._open(path, target, initial)
            if f is not None and f.tail.ident in self._files:
                f.tail.close()  # replaced between the glob and the open by a file already followed
            elif f is not None:
                self._files[f.tail.ident] = f
                if f.tail.position() != f.acked:
                    out.append(self._batch(f, []))  # where reading starts, so a restart starts there too
        now = time.monotonic()
        for ident, f in self._files.items():
            if ident not in found and f.gone_at is None:
                f.gone_at = now
        self._remove_ended()
        return out

    def _open(self, path: str, target: Target, initial: bool) -> Followed | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if path not in self._warned:
                self._warned.add(path)
                log.warning("job %s: cannot open %s: %s", self.job.name, path, e.strerror)
            return None
        tail = FileTail(path, fd, self.opts.encoding, self.limit, self.opts.block)
        key, saved = self._saved.pop(tail.ident, (None, None))
        if key is None:
            key = f"{self.prefix}{tail.ident[0]}:{tail.ident[1]}:{os.path.abspath(path)}"
        how = "from the start"
        if saved is not None:
            if tail.resume(saved):
                how = f"at saved offset {tail.line_start}"
            else:
                how = "from the start (it was truncated or rewritten since its position was saved)"
        elif self._promtail_offset(tail):
            how = f"at Promtail's saved offset {tail.line_start}"
        elif initial and self.opts.tail_from_end:
            tail.seek_end()
            how = f"from its end (offset {tail.line_start})"
        self._warned.discard(path)
        log.info("job %s: tailing %s %s", self.job.name, path, how)
        labels = LabelSet.of({**target.labels, "filename": path})
        return Followed(tail, key, labels, acked=saved or "")

    def _promtail_offset(self, tail: FileTail) -> bool:
        """A positions file written by Promtail keys a file by its path alone."""
        if self.positions is None:
            return False
        value = self.positions.get(os.path.abspath(tail.path)) or self.positions.get(tail.path)
        if not value or not value.isdigit() or int(value) > os.fstat(tail.fd).st_size:
            return False
        tail.seek(int(value))
        return True

    # -- reading ---------------------------------------------------------------------------

    def batches(self, stop: threading.Event) -> Iterator[Batch]:
        opts = self.opts
        try:
            yield from self._discover(initial=True)
            next_sync = time.monotonic() + opts.sync_period
            delay = opts.min_poll
            while not stop.is_set():
                if self._sync_now or time.monotonic() >= next_sync:
                    yield from self._discover(initial=False)
                    next_sync = time.monotonic() + opts.sync_period
                self._progress = False
                for f in list(self._files.values()):
                    for batch in self._step(f):
                        yield batch
                        if stop.is_set():
                            return
                if self._progress:
                    delay = opts.min_poll
                    continue
                if not self.follow:
                    for f in list(self._files.values()):
                        lines = f.tail.flush()
                        if lines:
                            yield self._batch(f, lines)
                    return
                stop.wait(max(0.0, min(delay, next_sync - time.monotonic())))
                delay = min(delay * 2, opts.max_poll)
        finally:
            for f in self._files.values():
                f.tail.close()
            self._files.clear()

    def _step(self, f: Followed) -> Iterator[Batch]:
        """Up to ROUND_BLOCKS blocks of one file; at its end, the checks for truncation,
        rotation, an idle partial line and release."""
        tail = f.tail
        for _ in range(ROUND_BLOCKS):
            groups = tail.read(self._buffer(tail))
            if groups is None:
                break
            self._progress = True
            moved = False
            for lines, offset in groups:  # decoded one batch at a time: one alive at once
                moved = True
                yield self._batch(f, lines, offset)
            if not moved and tail.position() != f.acked:  # a long line dropped: move past it
                yield self._batch(f, [])
        else:
            return
        now = time.monotonic()
        if tail.shrunk():
            log.info("job %s: %s was truncated; reading it again from the start", self.job.name, tail.path)
            self._progress = True
            yield self._batch(f, tail.restart())
            return
        if f.gone_at is None and self._moved(tail):
            # Rotated or deleted: read the old handle once more before anything else, and
            # look for the successor now rather than at the next sync.
            f.gone_at = now
            self._sync_now = self._progress = True
            return
        if f.gone_at is not None and self._successor(tail):
            self._sync_now = True  # the path came back (create after rename): follow it now
        idle = now - tail.last_growth
        timeout = self.opts.partial_line_timeout
        if (tail.pending or tail.skipping) and timeout and idle >= timeout:
            yield self._batch(f, tail.flush())
        if f.gone_at is not None and now - max(f.gone_at, tail.last_growth) >= self.opts.drain_idle:
            batch = self._batch(f, tail.flush(), end=True)
            log.info("job %s: %s read to its end and released", self.job.name, tail.path)
            tail.close()
            del self._files[tail.ident]
            self._ending.add(f.key)
            yield batch

    def _buffer(self, tail: FileTail) -> bytearray:
        if len(self._buf) < tail.buffer_size():
            self._buf = bytearray(tail.buffer_size())
        return self._buf

    def _successor(self, tail: FileTail) -> bool:
        """A file not yet followed is at the path this one left."""
        try:
            st = os.stat(tail.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) not in self._files

    @staticmethod
    def _moved(tail: FileTail) -> bool:
        """The path no longer leads to the file being read."""
        try:
            st = os.stat(tail.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != tail.ident

    def _batch(self, f: Followed, lines: list[str], offset: int | None = None, end: bool = False) -> Batch:
        tail, counts = f.tail, f.tail.counts
        value = tail.position(offset)
        f.acked = value
        if lines:
            self._entries.inc(len(lines))
        if counts.bytes:
            self._bytes.inc(counts.bytes)
            counts.bytes = 0
        if counts.bad:
            self._bad.inc(counts.bad)
            counts.bad = 0
        if counts.dropped:
            self.metrics.drop("line_too_long", counts.dropped)
            counts.dropped = 0
        if counts.truncated:
            # A truncated entry lost its tail: counted among drops, under its own reason.
            self.metrics.drop("line_truncated", counts.truncated)
            counts.truncated = 0
        now = self.clock()
        return Batch.of_lines(lines, list(range(now, now + len(lines))), f.labels,
                              ack={f.key: value + END_MARK if end else value})
