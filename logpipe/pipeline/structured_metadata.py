"""The `structured_metadata` stage (also `non_indexed_labels`, its old name).

Configured like `labels` (`name: source`, an empty source meaning the same name), but the
values go to the entry's structured metadata instead of its stream labels. As in Promtail, a
stream label named like a source also moves: it is set as metadata and removed from the labels,
so a high-cardinality label set by relabeling (a pod uid) stops making streams.
"""
from __future__ import annotations

from typing import Any

from logpipe.batch import Batch
from logpipe.pipeline.labels import LabelsConfig
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import ValueCache, go_string


class StructuredMetadataConfig(LabelsConfig):
    def build(self, env: StageEnv) -> "StructuredMetadataStage":  # type: ignore[override]
        return StructuredMetadataStage(self.sources)


class StructuredMetadataStage(Stage):
    name = "structured_metadata"

    def __init__(self, sources: dict[str, str]):
        self.pairs = list(sources.items())
        self.label_sources = sorted(set(sources.values()))
        self._texts = ValueCache(_text)
        self._without_sources = ValueCache(lambda ls: ls.without(self.label_sources))
        self._label_value = {s: ValueCache(lambda ls, s=s: ls.get(s)) for s in self.label_sources}

    def process(self, batch: Batch) -> Batch:
        for name, source in self.pairs:
            col = batch.field(source)
            if col is None:
                continue
            try:
                texts = list(map(self._texts.__getitem__, col))
            except TypeError:  # an unhashable value: no caching
                texts = list(map(_text, col))
            if texts.count(None) == len(texts):
                continue
            md = batch.metadata_column(name)
            batch.metadata[name] = [t if t is not None else m for t, m in zip(texts, md)]  # type: ignore[index]
        rest = list(map(self._without_sources.__getitem__, batch.labels))
        if rest != batch.labels:
            for name, source in self.pairs:
                values = list(map(self._label_value[source].__getitem__, batch.labels))
                if values.count(None) == len(values):
                    continue
                md = batch.metadata_column(name)
                batch.metadata[name] = [v if v is not None else m for v, m in zip(values, md)]  # type: ignore[index]
            batch.labels = rest
        return batch


def _text(value: Any) -> str | None:
    """Promtail's rule for a label value: text that is valid UTF-8, else nothing."""
    text = go_string(value)
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text
