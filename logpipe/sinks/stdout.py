"""The stdout sink: one JSON object per entry (the dry-run format), for runs without Loki."""
from __future__ import annotations

from typing import BinaryIO

import orjson

from logpipe.batch import Batch, LabelSet
from logpipe.positions import Ticket


class StdoutSink:
    """Writes `{"ts": ns, "labels": {...}, "line": "...", "structured_metadata": {...}}` lines."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self._labels_json: dict[LabelSet, bytes] = {}

    def _labels(self, ls: LabelSet) -> bytes:
        j = self._labels_json.get(ls)
        if j is None:
            if len(self._labels_json) > 65536:
                self._labels_json.clear()
            j = self._labels_json[ls] = orjson.dumps(ls.as_dict())
        return j

    def send(self, batch: Batch, ticket: Ticket | None = None) -> None:
        dumps = orjson.dumps
        labels = self._labels
        md = batch.metadata
        if md:
            keys = list(md)
            cols = [md[k] for k in keys]
            mds = [dumps({k: v for k, v in zip(keys, row) if v is not None}) for row in zip(*cols)]
        else:
            mds = [b"{}"] * len(batch)
        parts = [
            b'{"ts":%d,"labels":%s,"line":%s,"structured_metadata":%s}\n' % (ts, labels(ls), dumps(line), m)
            for ts, ls, line, m in zip(batch.ts, batch.labels, batch.lines, mds)
        ]
        self.out.write(b"".join(parts))
        self.out.flush()
        if ticket is not None:
            ticket.done()

    def close(self, timeout: float = 0.0) -> None:
        self.out.flush()
