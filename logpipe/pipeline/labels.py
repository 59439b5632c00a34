"""The label stages: `labels`, `static_labels`, `labeldrop`, `labelallow`.

New label sets are computed once per distinct (label set, values) and cached, so a batch of
a million entries in a dozen streams does a dozen label computations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from logpipe.batch import Batch, LabelSet
from logpipe.config.decode import Ctx, check_label_name, decode, join
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import ValueCache, go_string


def _decode_names(value: Any, ctx: Ctx, path: str, stage: str) -> list[str] | None:
    names = decode(list[str], value, ctx, path)
    if not isinstance(names, list):
        return None
    if not names:
        ctx.error(path, f"{stage} stage config cannot be empty: list the label names")
        return None
    return names


@dataclass
class LabelsConfig:
    """`labels: {name: source}`; an empty source means the extracted key of the same name."""

    sources: dict[str, str]

    @classmethod
    def from_yaml(cls, value: Any, ctx: Ctx, path: str) -> "LabelsConfig | None":
        raw = decode(dict[str, str | None], value, ctx, path)
        if not isinstance(raw, dict):
            return raw
        if not raw:
            ctx.error(path, "label stage config cannot be empty")
        for name in raw:
            check_label_name(ctx, join(path, name), name)
        return cls({name: src or name for name, src in raw.items()})

    def build(self, env: StageEnv) -> "LabelsStage":
        return LabelsStage(self)


class LabelsStage(Stage):
    name = "labels"

    def __init__(self, config: LabelsConfig):
        self.names = list(config.sources)
        self.sources = list(config.sources.values())
        self._caches: dict[tuple[str, ...], ValueCache] = {}

    def process(self, batch: Batch) -> Batch:
        present = [(n, col) for n, s in zip(self.names, self.sources) if (col := batch.field(s)) is not None]
        if not present:
            return batch
        names = tuple(n for n, _ in present)
        cache = self._caches.get(names)
        if cache is None:
            cache = self._caches[names] = ValueCache(lambda key: _with_values(key[0], names, key[1:]))
        batch.labels = list(map(cache.__getitem__, zip(batch.labels, *(col for _, col in present))))
        return batch


def _with_values(labels: LabelSet, names: tuple[str, ...], values: tuple[Any, ...]) -> LabelSet:
    changes = {}
    for name, value in zip(names, values):
        text = go_string(value)
        if text is not None and _valid_utf8(text):
            changes[name] = text  # Promtail keeps an empty value as a label here
    return labels.updated(changes) if changes else labels


def _valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (from undecodable bytes) are not UTF-8
        return False
    return True


@dataclass
class StaticLabelsConfig:
    """`static_labels: {name: value}`; an empty value sets nothing (Promtail skips it)."""

    values: dict[str, str]

    @classmethod
    def from_yaml(cls, value: Any, ctx: Ctx, path: str) -> "StaticLabelsConfig | None":
        raw = decode(dict[str, str | None], value, ctx, path)
        if not isinstance(raw, dict):
            return raw
        if not raw:
            ctx.error(path, "static_labels stage config cannot be empty")
        for name in raw:
            check_label_name(ctx, join(path, name), name)
        return cls({k: v for k, v in raw.items() if v})

    def build(self, env: StageEnv) -> "LabelMapStage":
        values = self.values
        return LabelMapStage("static_labels", lambda ls: ls.updated(values))


@dataclass
class LabelDropConfig:
    names: list[str]

    @classmethod
    def from_yaml(cls, value: Any, ctx: Ctx, path: str) -> "LabelDropConfig | None":
        names = _decode_names(value, ctx, path, "labeldrop")
        return None if names is None else cls(names)

    def build(self, env: StageEnv) -> "LabelMapStage":
        names = self.names
        return LabelMapStage("labeldrop", lambda ls: ls.without(names))


@dataclass
class LabelAllowConfig:
    names: list[str]

    @classmethod
    def from_yaml(cls, value: Any, ctx: Ctx, path: str) -> "LabelAllowConfig | None":
        names = _decode_names(value, ctx, path, "labelallow")
        return None if names is None else cls(names)

    def build(self, env: StageEnv) -> "LabelMapStage":
        names = self.names
        return LabelMapStage("labelallow", lambda ls: ls.only(names))


class LabelMapStage(Stage):
    """A stage whose new label set depends on the old one alone."""

    def __init__(self, name: str, fn: Any):
        self.name = name
        self._cache = ValueCache(fn)

    def process(self, batch: Batch) -> Batch:
        batch.labels = list(map(self._cache.__getitem__, batch.labels))
        return batch
