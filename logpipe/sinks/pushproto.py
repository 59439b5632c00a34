"""Loki's `PushRequest` (push.proto) in protobuf wire format, built for a whole push at once.

Building one `EntryAdapter` object per entry with the protobuf runtime costs more CPU than
the rest of a json pipeline. Here every entry's header (field tags and varints: the entry's
length, its timestamp, its line's length) is computed for the whole push with numpy, and the
request is joined from those headers and the lines in one C-level join. The tests hold the
result byte-identical to `push_pb2.PushRequest.SerializeToString()`; entries with structured
metadata are encoded by the runtime.

The join works on str of Latin-1 characters, one per byte: an ASCII line is then its own
UTF-8 and needs no copy of its own, and the joined text becomes bytes in one memcpy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

_SEP = "\u0100"  # not a Latin-1 character: splits the headers' text into one str per entry


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], np.uint64)  # the least value of 2, 3, ... bytes


def _varint_len(v: np.ndarray) -> np.ndarray:
    return np.searchsorted(_VARINT_LIMITS, v.astype(np.uint64, copy=False), side="right") + 1


def _headers(fields: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]], n: int) -> tuple[list[str], np.ndarray]:
    """Each entry's header, as one str of Latin-1 characters per entry, and its length: for
    each `(tag, values, their varint lengths, present)` (present None: always) the tag byte
    and the value as a varint.

    The headers are laid out as a matrix, a row per entry and a column per byte a field may
    take; a mask keeps the bytes each row has, and the kept bytes, read row by row with a
    separator closing each row, split into the entries' headers in one call."""
    layout = []
    for tag, values, k, present in fields:
        v = values.astype(np.uint64)
        layout.append((tag, v, k, present, int(k.max(initial=0)) if present is None or present.any() else 0))
    width = sum(1 + size for *_, size in layout) + 1
    rows = np.empty((n, width), "<u2")  # read back as UTF-16-LE
    keep = np.empty((n, width), np.bool_)
    length = np.zeros(n, np.int64)
    col = 0
    for tag, v, k, present, size in layout:
        rows[:, col] = tag
        keep[:, col] = True if present is None else present
        length += 1 + k if present is None else np.where(present, 1 + k, 0)
        for b in range(size):
            rows[:, col + 1 + b] = (v >> np.uint64(7 * b)) & np.uint64(0x7F) | (k > b + 1).astype(np.uint64) << np.uint64(7)
            keep[:, col + 1 + b] = (k > b) if present is None else (k > b) & present
        col += 1 + size
    rows[:, col] = ord(_SEP)
    keep[:, col] = True
    return rows[keep].tobytes().decode("utf-16-le").split(_SEP)[:-1], length


def utf8_sizes(lines: list[str]) -> tuple[np.ndarray, bool]:
    """Each line's size in UTF-8 bytes, and whether every line is ASCII (then its own UTF-8).
    Taken when a batch arrives, while its lines are still in the CPU's cache."""
    n = len(lines)
    if all(map(str.isascii, lines)):
        return np.fromiter(map(len, lines), np.int64, n), True
    return np.fromiter((len(x) if x.isascii() else len(x.encode("utf-8", "replace")) for x in lines), np.int64, n), False


def push_request(labels: Sequence[str], counts: Sequence[int], ts: np.ndarray, lines: list[str],
                 sizes: np.ndarray, ascii: bool) -> bytes:
    """The serialized PushRequest of streams given stream after stream: each stream's label
    text and number of entries, and the entries' timestamps (ns), lines, and the lines'
    `utf8_sizes`."""
    total = len(lines)
    if not ascii:  # each line as its UTF-8 bytes, one Latin-1 character per byte
        lines = [x if x.isascii() else x.encode("utf-8", "replace").decode("latin-1") for x in lines]
    sec, nanos = np.divmod(np.asarray(ts, np.int64), 1_000_000_000)
    sec_n, nanos_n, line_n = _varint_len(sec.astype(np.uint64)), _varint_len(nanos.astype(np.uint64)), _varint_len(sizes)
    # proto3 leaves out zeros and empty strings; int64 varints are two's complement
    ts_len = np.where(sec != 0, 1 + sec_n, 0) + np.where(nanos != 0, 1 + nanos_n, 0)
    ts_len_n = _varint_len(ts_len)
    entry_len = 1 + ts_len_n + ts_len + np.where(sizes != 0, 1 + line_n + sizes, 0)
    headers, header_len = _headers([
        (0x12, entry_len, _varint_len(entry_len), None),  # StreamAdapter.entries
        (0x0A, ts_len, ts_len_n, None),  # EntryAdapter.timestamp
        (0x08, sec, sec_n, sec != 0),  # Timestamp.seconds
        (0x10, nanos, nanos_n, nanos != 0),  # Timestamp.nanos
        (0x12, sizes, line_n, sizes != 0),  # EntryAdapter.line
    ], total)

    pieces: list[str] = [""] * (2 * total)
    pieces[0::2] = headers
    pieces[1::2] = lines
    ends = np.cumsum(header_len + sizes)
    prefix = ""  # the headers of streams without entries: they go before the next entry
    start = 0
    for text, count in zip(labels, counts):
        end = start + count
        label_bytes = text.encode()
        entries = int(ends[end - 1] - (ends[start - 1] if start else 0)) if count else 0
        head = b"\x0a" + varint(len(label_bytes)) + label_bytes
        head = (b"\x0a" + varint(len(head) + entries) + head).decode("latin-1")  # PushRequest.streams
        if count:
            pieces[2 * start] = prefix + head + pieces[2 * start]
            prefix = ""
        else:
            prefix += head
        start = end
    pieces.append(prefix)
    return "".join(pieces).encode("latin-1")
