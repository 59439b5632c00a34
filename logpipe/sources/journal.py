"""The systemd journal as a streaming source (systemd-python's reader, raw fast path).

Per entry only the fields the job needs are fetched raw (MESSAGE, the realtime timestamp,
and the fields relabel_configs read); the cursor is fetched once per batch. Each distinct
tuple of field values becomes one LabelSet, so relabeling runs once per distinct tuple.
"""
from __future__ import annotations

import logging
import os
import struct
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import orjson

from logpipe.batch import Batch, LabelSet
from logpipe.config.schema import JournalConfig
from logpipe.errors import SourceError
from logpipe.pipeline.values import ValueCache
from logpipe.positions import Positions
from logpipe.telemetry import SelfMetrics

if TYPE_CHECKING:
    from logpipe.agent import Job

log = logging.getLogger("logpipe.journal")

PRIORITY_KEYWORDS = {
    "0": "emerg", "1": "alert", "2": "crit", "3": "error", "4": "warning", "5": "notice", "6": "info", "7": "debug",
}
SYSTEM_JOURNAL_DIRS = ("/var/log/journal", "/run/log/journal")
_ALL_FIELDS_ACTIONS = ("labelmap", "labeldrop", "labelkeep")


def fields_needed(job: "Job", cfg: JournalConfig) -> list[str] | None:
    """The journal fields relabeling reads, or None when it needs them all."""
    rules = job.config.relabel_configs
    if cfg.json or any(r.action in _ALL_FIELDS_ACTIONS for r in rules):
        return None
    names: set[str] = set()
    for r in rules:
        for label in [*r.source_labels, r.target_label]:
            if label == "__journal_priority_keyword":
                names.add("PRIORITY")
            elif label.startswith("__journal_"):
                names.add(label[len("__journal_"):].upper())
    names.discard("MESSAGE")
    return sorted(names)


def check_directory(path: str) -> None:
    """A clear error, naming the path and the permission, instead of silently reading nothing."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"journal directory {path} does not exist")
    if not p.is_dir():
        raise SourceError(f"journal path {path} is not a directory")
    need = "run logpipe as root or as a member of the systemd-journal group"
    if not os.access(p, os.R_OK | os.X_OK):
        raise SourceError(f"cannot read journal directory {path}: permission denied ({need})")
    for f in p.rglob("*.journal"):
        if not os.access(f, os.R_OK):
            raise SourceError(f"cannot read journal file {f}: permission denied ({need})")
        break


_HEADER = struct.Struct("<8sII")


def damaged_files(path: str) -> list[tuple[Path, str]]:
    """Journal files whose header says they are not whole; the reader skips such damage
    silently, so the source looks for it and says so."""
    found = []
    for f in sorted(Path(path).rglob("*.journal")):
        try:
            with open(f, "rb") as fh:
                head = fh.read(112)
            size = f.stat().st_size
        except OSError as e:
            found.append((f, f"cannot read: {e.strerror}"))
            continue
        if len(head) < 112 or head[:8] != b"LPKSHHRH":
            found.append((f, "not a journal file"))
            continue
        header_size, arena_size = struct.unpack_from("<QQ", head, 88)
        if size < header_size + arena_size:
            found.append((f, f"truncated ({size} of {header_size + arena_size} bytes)"))
    return found


def open_reader(cfg: JournalConfig) -> Any:
    from systemd import journal

    if cfg.path:
        check_directory(cfg.path)
        for f, why in damaged_files(cfg.path):
            log.warning("journal file %s is damaged (%s): reading what can be read", f, why)
        reader = journal.Reader(path=cfg.path)
    else:
        for d in SYSTEM_JOURNAL_DIRS:
            if Path(d).exists():
                check_directory(d)
        reader = journal.Reader(flags=0)
    reader.data_threshold = 0  # whole fields, however long; line limits are applied later
    for term in cfg.matches.split():
        if term == "+":
            reader.add_disjunction()
        else:
            reader.add_match(term)
    return reader


class JournalSource:
    """Follows the journal; each batch's ack is the cursor of its last entry."""

    def __init__(self, job: "Job", cfg: JournalConfig, positions: Positions | None, metrics: SelfMetrics,
                 reader_factory: Callable[[JournalConfig], Any] = open_reader, clock: Callable[[], float] = time.time,
                 follow: bool = True):
        self.job = job
        self.cfg = cfg
        self.key = f"journal-{job.name}"  # Promtail's positions key for a journal job
        self.positions = positions
        self.reader_factory = reader_factory
        self.clock = clock
        self.follow = follow  # False: stop once caught up (benchmarks, one-shot reads)
        self.fields = fields_needed(job, cfg)
        self.static = job.labels.as_dict()
        self._entries = metrics.read_entries.labels(job.name)
        self._bytes = metrics.read_bytes.labels(job.name)
        self._bad = metrics.decode_errors.labels(job.name)
        self._no_message = metrics.stage_errors.labels("journal", "no_message")
        self.position: str | None = None
        self.last_ts = 0

    def describe(self) -> dict[str, Any]:
        return {"type": "journal", "job": self.job.name, "path": self.cfg.path or "system journal",
                "labels": self.static, "position": self.position,
                "lag_seconds": max(0.0, self.clock() - self.last_ts / 1e9) if self.last_ts else None}

    def _seek(self, r: Any) -> None:
        since_us = int((self.clock() - self.cfg.max_age) * 1_000_000)
        cursor = self.positions.get(self.key) if self.positions is not None else None
        if cursor:
            try:
                r.seek_cursor(cursor)
                if r._next():
                    if r._get_realtime() >= since_us:
                        if not r.test_cursor(cursor):
                            r._previous()  # the saved entry was vacuumed: this one is unread
                        self.position = cursor
                        return
                    log.info("saved journal position of job %s is older than max_age; starting at max_age", self.job.name)
            except (ValueError, OSError) as e:
                log.warning("saved journal cursor of job %s is unusable (%s); starting at max_age", self.job.name, e)
        r.seek_realtime(since_us)

    def _label_set(self, key: tuple) -> LabelSet:
        fields = dict(zip(self.fields, key)) if self.fields is not None else dict(key)
        labels = {}
        for name, value in fields.items():
            if value is None:
                continue
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if name == "PRIORITY":
                labels["__journal_priority_keyword"] = PRIORITY_KEYWORDS.get(text, text)
            labels["__journal_" + name.lower()] = text
        labels.update(self.static)
        return LabelSet.of(labels)

    def batches(self, stop: threading.Event) -> Iterator[Batch]:
        r = self.reader_factory(self.cfg)
        try:
            self._seek(r)
            yield from self._follow(r, stop)
        finally:
            r.close()

    def _follow(self, r: Any, stop: threading.Event) -> Iterator[Batch]:
        nxt, get, realtime = r._next, r._get, r._get_realtime
        fields, size = self.fields, self.cfg.batch_size
        label_sets = ValueCache(self._label_set)
        raws: list[bytes] = []
        stamps: list[int] = []
        keys: list[tuple] = []
        no_msg = 0
        started = time.monotonic()

        def retry(name: str) -> bytes | None:
            try:  # libsystemd can miss a field right at the tail: ask once more
                return get(name)
            except KeyError:
                return None

        append_raw, append_ts, append_key = raws.append, stamps.append, keys.append
        while not stop.is_set():
            caught_up = False
            for _ in range(size - len(raws)):
                if not nxt():
                    caught_up = True
                    break
                if fields is not None:
                    try:  # the hot path: a few C calls and no Python frames per entry
                        key = tuple(map(get, fields))
                        append_raw(get("MESSAGE"))
                        append_key(key)
                        append_ts(realtime())
                        continue
                    except KeyError:
                        raw = retry("MESSAGE")
                        key = tuple(map(retry, fields))
                else:  # json mode, or rules that read every field
                    entry = r._get_all()
                    key = tuple(sorted((k, v[-1] if isinstance(v, list) else v) for k, v in entry.items()))
                    raw = _go_json({k: v.decode("utf-8", "replace") for k, v in key}).encode() if self.cfg.json \
                        else dict(key).get("MESSAGE")
                if raw is None:
                    no_msg += 1
                    continue
                append_raw(raw)
                append_key(key)
                append_ts(realtime())
            if no_msg:
                self._no_message.inc(no_msg)
                no_msg = 0
            if raws and (caught_up or len(raws) >= size or time.monotonic() - started >= self.cfg.batch_wait):
                cursor = r._get_cursor()
                lines, bad = _decode(raws)
                self._entries.inc(len(lines))
                self._bytes.inc(sum(map(len, raws)))
                if bad:
                    self._bad.inc(bad)
                ts = (np.array(stamps, np.int64) * 1000).tolist()  # µs to ns
                self.position, self.last_ts = cursor, ts[-1]
                yield Batch(lines, ts, list(map(label_sets.__getitem__, keys)), ack={self.key: cursor})
                raws, stamps, keys = [], [], []
                append_raw, append_ts, append_key = raws.append, stamps.append, keys.append
                started = time.monotonic()
            if caught_up:
                if not self.follow:
                    return
                r.wait(0.25)  # returns at once when the journal grows; the timeout checks `stop`


def _decode(raws: list[bytes]) -> tuple[list[str], int]:
    """Decode a batch of messages; only a batch holding one that is not UTF-8 is decoded
    message by message, with U+FFFD for what is not."""
    try:
        return list(map(bytes.decode, raws)), 0
    except UnicodeDecodeError:
        pass
    lines, bad = [], 0
    for raw in raws:
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("utf-8", "replace"))
            bad += 1
    return lines, bad


def _go_json(fields: dict[str, str]) -> str:
    """JSON as Go's encoding/json writes a map[string]string: sorted keys, HTML-safe."""
    text = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()
    if "<" in text or ">" in text or "&" in text or "\u2028" in text or "\u2029" in text:
        text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
                .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return text
