"""The columnar Batch and the interned LabelSet that every stage works on."""
from __future__ import annotations

import weakref
from typing import Any, Iterable, Iterator, Mapping

_INTERNED: weakref.WeakValueDictionary[tuple, "LabelSet"] = weakref.WeakValueDictionary()


class LabelSet:
    """An immutable, interned set of Loki labels.

    Two equal label sets are the same object, so caches key on identity and a stream is
    one object shared by all its entries. Build with `LabelSet.of(...)`, never directly.
    """

    __slots__ = ("items", "_map", "__weakref__")

    items: tuple[tuple[str, str], ...]

    def __init__(self, items: tuple[tuple[str, str], ...]):
        self.items = items
        self._map = dict(items)

    @staticmethod
    def of(labels: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> "LabelSet":
        pairs = labels.items() if isinstance(labels, Mapping) else labels
        key = tuple(sorted(pairs))
        found = _INTERNED.get(key)
        if found is None:
            found = LabelSet(key)
            _INTERNED[key] = found
        return found

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._map.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self.items)

    def as_dict(self) -> dict[str, str]:
        return dict(self._map)

    def updated(self, changes: Mapping[str, str | None]) -> "LabelSet":
        """A label set with `changes` applied; a None value removes the label."""
        merged = dict(self._map)
        for name, value in changes.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        return LabelSet.of(merged)

    def without(self, names: Iterable[str]) -> "LabelSet":
        drop = set(names)
        return LabelSet.of((k, v) for k, v in self.items if k not in drop)

    def only(self, names: Iterable[str]) -> "LabelSet":
        keep = set(names)
        return LabelSet.of((k, v) for k, v in self.items if k in keep)

    def __repr__(self) -> str:
        inner = ", ".join(f'{k}="{_escape(v)}"' for k, v in self.items)
        return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


EMPTY_LABELS = LabelSet.of()


class Batch:
    """N log entries held as columns, never as N objects.

    `fields` is Promtail's extracted map, one column per key, None where a key is absent for
    an entry. As in Promtail, the labels an entry enters the pipeline with are readable as
    extracted values: `field()` derives such a column from `base_labels` on first use.
    """

    __slots__ = ("lines", "ts", "labels", "fields", "metadata", "base_labels", "ack")

    def __init__(
        self,
        lines: list[str],
        ts: list[int],
        labels: list[LabelSet],
        fields: dict[str, list[Any]] | None = None,
        metadata: dict[str, list[str | None]] | None = None,
        ack: Any = None,
    ):
        self.lines = lines
        self.ts = ts
        self.labels = labels
        self.fields = fields if fields is not None else {}
        self.metadata = metadata
        self.base_labels = labels
        self.ack = ack

    def __len__(self) -> int:
        return len(self.lines)

    @staticmethod
    def of_lines(lines: list[str], ts: int | list[int], labels: LabelSet = EMPTY_LABELS, ack: Any = None) -> "Batch":
        n = len(lines)
        ts_col = [ts] * n if isinstance(ts, int) else ts
        return Batch(lines, ts_col, [labels] * n, ack=ack)

    def field(self, name: str) -> list[Any] | None:
        """The column of extracted key `name`, or None when no entry has it."""
        col = self.fields.get(name)
        if col is not None:
            return col
        return self._from_base_labels(name)

    def column(self, name: str) -> list[Any]:
        """A writable column for `name`, created (from base labels, else empty) if needed."""
        col = self.fields.get(name)
        if col is None:
            col = self._from_base_labels(name) or [None] * len(self.lines)
            self.fields[name] = col
        return col

    def _from_base_labels(self, name: str) -> list[Any] | None:
        values: dict[LabelSet, str | None] = {}
        for ls in set(self.base_labels):
            values[ls] = ls.get(name)
        if all(v is None for v in values.values()):
            return None
        col = [values[ls] for ls in self.base_labels]
        self.fields[name] = col
        return col

    def metadata_column(self, name: str) -> list[str | None]:
        if self.metadata is None:
            self.metadata = {}
        col = self.metadata.get(name)
        if col is None:
            col = self.metadata[name] = [None] * len(self.lines)
        return col

    def select(self, keep: list[int]) -> "Batch":
        """Keep only the entries at indices `keep` (in order); one pass over every column."""
        if len(keep) == len(self.lines):
            return self
        pick = _picker(keep)
        out = Batch(
            pick(self.lines),
            pick(self.ts),
            pick(self.labels),
            {k: pick(v) for k, v in self.fields.items()},
            {k: pick(v) for k, v in self.metadata.items()} if self.metadata else self.metadata,
            self.ack,
        )
        out.base_labels = pick(self.base_labels)
        return out

    @staticmethod
    def concat(batches: list["Batch"], order: list[int] | None = None) -> "Batch":
        """The entries of `batches` one after the other, then (if given) picked by `order`,
        positions into that sequence which may repeat or reorder. A field or metadata key some
        batches lack reads as it would in them (base labels, else None). The ack is the last
        non-empty batch's."""
        from itertools import chain

        parts = [b for b in batches if b.lines] or batches[:1]
        if len(parts) == 1 and order is None:
            return parts[0]
        ack = parts[-1].ack if parts else None
        pick = _picker(order) if order is not None else list

        def cat(cols: Iterable[list[Any]]) -> list[Any]:
            if len(parts) == 1:
                return pick(next(iter(cols)))
            return pick(list(chain.from_iterable(cols)))

        names = list(dict.fromkeys(chain.from_iterable(b.fields for b in parts)))
        fields = {k: cat(b.field(k) or [None] * len(b) for b in parts) for k in names}
        md_names = list(dict.fromkeys(chain.from_iterable(b.metadata or () for b in parts)))
        metadata = {k: cat((b.metadata or {}).get(k) or [None] * len(b) for b in parts) for k in md_names}
        out = Batch(cat(b.lines for b in parts), cat(b.ts for b in parts), cat(b.labels for b in parts),
                    fields, metadata or None, ack)
        out.base_labels = cat(b.base_labels for b in parts)
        return out

    def entry(self, i: int) -> dict[str, Any]:
        """One entry as a plain dict (for printing and tests, not for hot paths)."""
        out: dict[str, Any] = {"ts": self.ts[i], "labels": self.labels[i].as_dict(), "line": self.lines[i]}
        md = {k: col[i] for k, col in (self.metadata or {}).items() if col[i] is not None}
        out["structured_metadata"] = md
        return out

    def extracted(self, i: int) -> dict[str, Any]:
        out = {k: v for k, v in self.base_labels[i].items}
        out.update((k, col[i]) for k, col in self.fields.items() if col[i] is not None)
        return out


def _picker(keep: list[int]):
    from operator import itemgetter

    if not keep:
        return lambda col: []
    if len(keep) == 1:
        i = keep[0]
        return lambda col: [col[i]]
    getter = itemgetter(*keep)
    return lambda col: list(getter(col))
