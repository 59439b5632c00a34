"""One tailed file: block reads from a byte offset, lines cut and decoded once per block, and
a bound on the memory any line can take, however long it is.

Offsets are bytes of the file. `line_start` is where the first byte not yet turned into an
entry lies: the position a restart resumes from. A line is cut only at a newline that starts
a whole code unit of the encoding (two bytes in UTF-16), so a block that ends inside a
character or a line leaves those bytes pending until the next read.
"""
from __future__ import annotations

import codecs
import os
import time
import zlib
from dataclasses import dataclass
from typing import Iterable, Iterator

BLOCK = 1 << 20  # bytes asked of one read
BATCH = 256 << 10  # bytes of lines per batch: a block gives several batches, each with its own position
PIECE = 32 << 10  # bytes decoded at once
FINGERPRINT_MAX = 1024  # bytes of a file's head that identify its content across restarts

_BOMS = {  # codecs whose byte order is read from the file's first bytes
    "utf-16": ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"), "utf-16-be"),
    "utf-32": ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), "utf-32-be"),
}
_OWN_BOM = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE,
            "utf-32-le": codecs.BOM_UTF32_LE, "utf-32-be": codecs.BOM_UTF32_BE}


@dataclass(frozen=True)
class Framing:
    """How lines are cut and decoded in one encoding."""

    codec: str
    nl: bytes  # the newline, encoded
    unit: int  # a newline counts only at a multiple of this many bytes from the line start
    bom: int = 0  # bytes of byte-order mark at the start of the file, never part of a line
    # At most this many UTF-8 bytes (what Loki's line limit counts) per byte of the file:
    # 1 for UTF-8 itself; 3 bounds every other encoding (a Latin-1 or Shift_JIS byte can
    # become a 3-byte character).
    growth: int = 1

    @staticmethod
    def resolve(encoding: str, head: bytes) -> "Framing | None":
        """The framing for `encoding` given the file's first bytes; None while the file is
        too short to tell its byte order."""
        name = codecs.lookup(encoding or "utf-8").name
        bom = 0
        if name in _BOMS:
            little, big, default = _BOMS[name]
            width = len(little[0])
            if len(head) < width:
                return None
            name = default  # no mark: big-endian, as IANA (and Go, hence Promtail) read it
            for mark, codec in (little, big):
                if head.startswith(mark):
                    name, bom = codec, len(mark)
                    break
        elif name in _OWN_BOM and head.startswith(_OWN_BOM[name]):
            bom = len(_OWN_BOM[name])
        nl = "\n".encode(name)
        growth = 1 if name == "utf-8" else 3
        if nl == b"\n" and "a".encode(name) == b"a":
            # ASCII-compatible (UTF-8, Latin-1, Shift_JIS, GBK...): byte 0x0A is never part
            # of another character, so a plain byte search finds every newline.
            return Framing(name, nl, 1, bom, growth)
        return Framing(name, nl, len(nl), bom, growth)

    def last_newline(self, data: bytes | bytearray, start: int = 0, end: int | None = None) -> int:
        """Index of the last newline in data[start:end], or -1; `start` is a line start."""
        nl, unit = self.nl, self.unit
        i = data.rfind(nl, start, end)
        while unit > 1 and i > start and (i - start) % unit:
            i = data.rfind(nl, start, i + len(nl) - 1)
        return i

    def first_newline(self, data: bytes | bytearray, start: int = 0, end: int | None = None) -> int:
        nl, unit = self.nl, self.unit
        i = data.find(nl, start, end)
        while unit > 1 and i > start and (i - start) % unit:
            i = data.find(nl, i + 1, end)
        return i

    def decode(self, data: bytes | bytearray, start: int = 0, end: int | None = None) -> tuple[list[str], int, int]:
        """The lines of data[start:end] (whole lines, the last one without its newline), how
        many held bytes that are not text in this encoding (decoded with U+FFFD, passed on as
        Promtail does), and the longest run of bytes decoded at once (a bound on line length)."""
        end = len(data) if end is None else end
        lines, bad, longest = [], 0, 0
        for part, n_bad, n_longest, _ in self.groups(data, start, end, end - start + 1):
            lines.extend(part)
            bad += n_bad
            longest = max(longest, n_longest)
        return lines, bad, longest

    def groups(self, data: bytes | bytearray, start: int, end: int,
               size: int) -> Iterator[tuple[list[str], int, int, int]]:
        """`decode` of data[start:end] in groups of about `size` bytes cut at newlines; each
        group also gives the index of the newline that ends it (`end` for the last).

        Decoding goes in pieces of about PIECE bytes: short-lived objects of that size come
        from memory the allocator reuses, where megabyte strings would cost fresh pages."""
        view = memoryview(data)
        step = len(self.nl)
        try:
            lines: list[str] = []
            bad = longest = 0
            group_start = start
            while True:
                cut = end
                if end - start > PIECE:
                    cut = self.last_newline(data, start, min(start + PIECE + step, end))
                    if cut <= start:  # a line longer than a piece: it is one piece
                        cut = self.first_newline(data, start + step, end)
                        cut = end if cut < 0 else cut
                part, n_bad = self._decode(view[start:cut])
                lines.extend(part)
                bad += n_bad
                longest = max(longest, cut - start)
                if cut >= end:
                    yield lines, bad, longest, end
                    return
                start = cut + step
                if start - group_start >= size:
                    yield lines, bad, longest, cut
                    lines, bad, longest, group_start = [], 0, 0, start
        finally:
            view.release()

    def _decode(self, raw: memoryview) -> tuple[list[str], int]:
        try:
            text = str(raw, self.codec)
            bad = 0
        except UnicodeDecodeError:
            text = str(raw, self.codec, "replace")
            bad = -1
        if "\r" in text:  # CRLF files: the CR is not part of the line
            text = text.replace("\r\n", "\n")
            if text.endswith("\r"):
                text = text[:-1]
        lines = text.split("\n")
        if bad:
            bad = sum(1 for line in lines if "\ufffd" in line)
        return lines, bad


class LineLimit:
    """Promtail's max_line_size (in UTF-8 bytes, as Loki counts) and max_line_size_truncate."""

    def __init__(self, max_bytes: int, truncate: bool):
        self.max = max_bytes
        self.truncate = truncate

    def apply(self, lines: list[str], counts: "Counts") -> list[str]:
        """`lines` with the too-long ones truncated or dropped; a no-op for short lines."""
        limit = self.max
        if max(map(len, lines), default=0) * 4 <= limit:  # 4: the most UTF-8 bytes per char
            return lines
        out = []
        for line in lines:
            if len(line) * 4 > limit and len(line.encode("utf-8", "surrogatepass")) > limit:
                if not self.truncate:
                    counts.dropped += 1
                    continue
                counts.truncated += 1
                line = self.cut(line)
            out.append(line)
        return out

    def cut(self, line: str) -> str:
        """The line's first `max` UTF-8 bytes, never half a character."""
        return line.encode("utf-8", "surrogatepass")[: self.max].decode("utf-8", "ignore")


class Counts:
    """What reading found, drained by the source into its metrics once per batch."""

    __slots__ = ("bytes", "bad", "dropped", "truncated")

    def __init__(self) -> None:
        self.bytes = self.bad = self.dropped = self.truncated = 0


class FileTail:
    """An open file read forward from `line_start`; see the module docstring."""

    def __init__(self, path: str, fd: int, encoding: str, limit: LineLimit, block: int = BLOCK):
        st = os.fstat(fd)
        self.path = path
        self.fd = fd
        self.ident = (st.st_dev, st.st_ino)
        self.encoding = encoding
        self.limit = limit
        self.block = block
        self.framing: Framing | None = None
        self.read_pos = 0  # next byte to read
        self.line_start = 0
        self.pending = b""  # the start of a line whose newline has not been read yet
        self.skipping = False  # inside a line longer than the limit: its bytes are discarded
        self.head = b""  # while skipping with truncation: the part of the line that is kept
        self.fp_len = 0
        self.fp_crc = 0
        self.last_growth = time.monotonic()
        self.counts = Counts()

    # -- position --------------------------------------------------------------------------

    def position(self, offset: int | None = None) -> str:
        """The saved form: offset of the next unread line (or `offset`), and the fingerprint
        of the file's head that tells this content from a successor's at the same inode."""
        return f"{self.line_start if offset is None else offset}:{self.fp_len}:{self.fp_crc:08x}"

    def seek(self, offset: int) -> None:
        self.read_pos = self.line_start = offset
        self.pending, self.skipping, self.head = b"", False, b""

    def resume(self, saved: str) -> bool:
        """Start at a saved position if it belongs to this content; False otherwise."""
        try:
            offset_s, fp_len_s, crc_s = saved.split(":")[:3]
            offset, fp_len, crc = int(offset_s), int(fp_len_s), int(crc_s, 16)
        except ValueError:
            return False
        if os.fstat(self.fd).st_size < offset:
            return False  # truncated while logpipe was not running
        if fp_len and not self._head_matches(fp_len, crc):
            return False  # the inode now holds other content
        self.fp_len, self.fp_crc = fp_len, crc
        self.seek(offset)
        return True

    def seek_end(self) -> None:
        """Start after the last whole line (tail_from_end), so a half-written line is not
        sent as a fragment."""
        size = os.fstat(self.fd).st_size
        framing = self._framing()
        if framing is None:
            self.seek(size)
            return
        start = max(framing.bom, size - self.limit.max * framing.unit - framing.unit)
        start += -(start - framing.bom) % framing.unit  # a code unit boundary
        cut = framing.last_newline(os.pread(self.fd, size - start, start))
        if cut >= 0:
            self.seek(start + cut + len(framing.nl))
        elif start > framing.bom:
            self.seek(size)  # the last line is longer than the limit: skip what is there
        self._update_fingerprint()

    def _head_matches(self, n: int, crc: int) -> bool:
        head = os.pread(self.fd, n, 0)
        return len(head) == n and zlib.crc32(head) == crc

    def _update_fingerprint(self) -> None:
        if self.fp_len < FINGERPRINT_MAX and self.read_pos > self.fp_len:
            head = os.pread(self.fd, min(FINGERPRINT_MAX, self.read_pos), 0)
            self.fp_len, self.fp_crc = len(head), zlib.crc32(head)

    def _framing(self) -> Framing | None:
        if self.framing is None:
            self.framing = Framing.resolve(self.encoding, os.pread(self.fd, 4, 0))
            if self.framing is not None and self.read_pos < self.framing.bom:
                self.seek(self.framing.bom)
        return self.framing

    # -- reading ---------------------------------------------------------------------------

    def shrunk(self) -> bool:
        """True when the file is now shorter than what was read (copytruncate). A rewrite
        that outgrows the old size is caught by `read` checking the file's head."""
        return os.fstat(self.fd).st_size < self.read_pos

    def restart(self) -> list[str]:
        """Read again from the start (the file was truncated); the partial line read before
        is sent, since its bytes are gone from the file."""
        lines = self.flush()
        self.framing = None
        self.fp_len = self.fp_crc = 0
        self.seek(0)
        return lines

    def buffer_size(self) -> int:
        """The read buffer `read` needs: a block after the longest pending line start."""
        framing = self._framing()
        unit = framing.unit if framing is not None else 4
        return self.block + (self.limit.max + 1) * unit

    def read(self, buf: bytearray) -> Iterable[tuple[list[str], int]] | None:
        """The whole lines of the next block, in groups of about BATCH bytes, each with the
        offset after its last line; None when there is nothing new to read.

        `buf` (of `buffer_size()` bytes, shared by the files of a source) receives the
        pending bytes then the block, so a block is read and decoded without being copied."""
        framing = self._framing()
        if framing is None:
            return None
        p = len(self.pending)
        view = memoryview(buf)
        try:
            got = os.preadv(self.fd, [view[p : p + self.block]], self.read_pos)
            if not got:
                return None
            # Checked after the read, so that a truncate and rewrite past the old size, even
            # one racing this read, is not taken for growth (a few bytes read per block).
            if self.fp_len and not self._head_matches(self.fp_len, self.fp_crc):
                return [(self.restart(), 0)]
            view[:p] = self.pending
        finally:
            view.release()
        self.last_growth = time.monotonic()
        self.read_pos += got
        self.counts.bytes += got
        if self.fp_len < FINGERPRINT_MAX:
            self._update_fingerprint()
        end, start, step = p + got, 0, len(framing.nl)
        origin = self.read_pos - end  # the file offset of buf[0]
        first: list[str] = []
        if self.skipping:
            cut = framing.first_newline(buf, 0, end)
            if cut < 0:
                self.pending = bytes(buf[end - end % framing.unit : end])  # keep code units aligned
                return []
            first = self._end_long_line()
            start = cut + step
            self.line_start = origin + start
        cut = framing.last_newline(buf, start, end)
        if cut < 0:
            self.pending = bytes(buf[start:end])
            self.line_start = origin + start
            if end - start > self.limit.max * framing.unit:
                self._start_long_line()
            return [(first, self.line_start)] if first else []
        self.pending = bytes(buf[cut + step : end])
        self.line_start = origin + cut + step
        return self._groups(buf, start, cut, origin, first)

    def _groups(self, buf: bytearray, start: int, end: int, origin: int,
                first: list[str]) -> Iterator[tuple[list[str], int]]:
        # Lazy, so that one batch's lines are alive at a time; `buf` is not written again
        # before the caller has taken every group.
        assert self.framing is not None
        step = len(self.framing.nl)
        for lines, bad, longest, stop in self.framing.groups(buf, start, end, BATCH):
            self.counts.bad += bad
            if longest * self.framing.growth > self.limit.max:
                lines = self.limit.apply(lines, self.counts)
            if first:
                lines, first = first + lines, []
            yield lines, origin + stop + step

    def _start_long_line(self) -> None:
        # Past this many bytes the line is longer than the limit in any encoding: keep at
        # most the part that truncation sends, never the whole line.
        assert self.framing is not None
        data, unit = self.pending, self.framing.unit
        self.skipping = True
        self.head = data[: self.limit.max * unit] if self.limit.truncate else b""
        self.pending = data[len(data) - len(data) % unit:]

    def _end_long_line(self) -> list[str]:
        assert self.framing is not None
        self.skipping = False
        head, self.head = self.head, b""
        if not self.limit.truncate:
            self.counts.dropped += 1
            return []
        self.counts.truncated += 1
        return [self.limit.cut(self._decode_one(head))]

    def _decode_one(self, data: bytes) -> str:
        assert self.framing is not None
        lines, bad, _ = self.framing.decode(data)
        self.counts.bad += bad
        return lines[0] if len(lines) == 1 else "\n".join(lines)

    def flush(self) -> list[str]:
        """Send the last line although no newline ended it (idle timeout, or the file is
        released); its bytes count as read."""
        if self.skipping:
            lines = self._end_long_line()
        elif self.pending and self.framing is not None:
            lines = self.limit.apply([self._decode_one(self.pending)], self.counts)
        else:
            return []
        self.pending = b""
        self.line_start = self.read_pos
        return lines

    def close(self) -> None:
        os.close(self.fd)
