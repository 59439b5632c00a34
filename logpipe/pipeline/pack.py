"""The `pack` stage: wrap the line and chosen values into a JSON object, `{...,"_entry": line}`.

Keys are the listed names found in the extracted map (which holds the entry's labels too), in
sorted order, each removed from the labels; the text is Promtail's (json-iterator with HTML
escaping: `<`, `>`, `&` as \\u003c, \\u003e, \\u0026). `ingest_timestamp` (default true)
replaces the timestamp with the time of packing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import repeat
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from operator import itemgetter
from typing import Any, Callable

from logpipe.batch import Batch, LabelSet
from logpipe.pipeline.drop import now_ns
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import ValueCache, go_string

ENTRY_KEY = "_entry"

_ESCAPES = {c: f"\\u{c:04x}" for c in range(0x20)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord('"'): '\\"', ord("\\"): "\\\\",
                 ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                 0x2028: "\\u2028", 0x2029: "\\u2029"})


_SPECIAL = ("<", ">", "&", "\b", "\f", "\u2028", "\u2029")


def go_json_string(text: str) -> str:
    """`text` as json-iterator's default config writes a JSON string."""
    return '"' + text.translate(_ESCAPES) + '"'


def go_json_strings(texts: list[str]) -> list[str]:
    """go_json_string over a column: the C encoder of the json module when no text holds a
    character it writes differently from json-iterator (checked once over the whole column)."""
    joined = "".join(texts)
    if any(c in joined for c in _SPECIAL) or not _encodable(joined):
        return list(map(go_json_string, texts))
    return list(map(encode_basestring, texts))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: json-iterator writes U+FFFD
        return False
    return True


@dataclass
class PackConfig:
    labels: list[str] = field(default_factory=list)
    ingest_timestamp: bool = True

    def build(self, env: StageEnv) -> "PackStage":
        return PackStage(self.labels, self.ingest_timestamp, env.clock)


class PackStage(Stage):
    name = "pack"

    def __init__(self, names: list[str], ingest_timestamp: bool, clock: Callable[[], float] = time.time):
        self.names = sorted(set(names))
        self.ingest_timestamp = ingest_timestamp
        self.clock = clock
        self._prefix = ValueCache(self._prefix_of)
        self._unlabel = ValueCache(_without)

    def process(self, batch: Batch) -> Batch:
        n = len(batch)
        present = [(k, col) for k in self.names if (col := batch.field(k)) is not None]
        keys = tuple(k for k, _ in present)
        if present:
            cols = [col for _, col in present]
            try:
                heads = list(map(self._prefix.__getitem__, zip(repeat(keys), *cols)))
            except TypeError:  # an unhashable value: no caching
                heads = list(map(self._prefix_of, zip(repeat(keys), *cols)))
            texts = go_json_strings(batch.lines)
            batch.lines = [f"{head}{text}}}" for (head, _), text in zip(heads, texts)]
            batch.labels = list(map(self._unlabel.__getitem__, zip(batch.labels, map(itemgetter(1), heads))))
        else:
            batch.lines = [f'{{"{ENTRY_KEY}":{text}}}' for text in go_json_strings(batch.lines)]
        if self.ingest_timestamp:
            # Promtail stamps each entry with time.Now(); consecutive nanoseconds keep their order.
            now = now_ns(self.clock)
            batch.ts = list(range(now, now + n))
        return batch

    @staticmethod
    def _prefix_of(key: tuple[Any, ...]) -> tuple[str, tuple[str, ...]]:
        """For (names, *values): the JSON text before the line, and the names packed (to
        remove from the labels). Values are flat in the key so the cache tells 1 from True."""
        names, values = key[0], key[1:]
        parts, packed = [], []
        for name, value in zip(names, values):
            text = None if value is None else go_string(value)
            if text is None:  # absent, or no text (a map): not packed, and the label stays
                continue
            parts.append(f"{go_json_string(name)}:{go_json_string(text)},")
            packed.append(name)
        return "{" + "".join(parts) + '"' + ENTRY_KEY + '":', tuple(packed)


def _without(key: tuple[LabelSet, tuple[str, ...]]) -> LabelSet:
    labels, names = key
    return labels.without(names) if names else labels
