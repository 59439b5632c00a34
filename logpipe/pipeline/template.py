"""The `template` stage: set an extracted value from a Go template.

A template reads a few keys; it is rendered once per distinct tuple of those keys' values
(per line only when it reads `.Entry`), not once per entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from logpipe.batch import Batch
from logpipe.config.decode import Ctx, join
from logpipe.gotemplate import Template, TemplateError, compile_template
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import ValueCache, go_string

KEEP = object()  # the template failed for this entry: the value stays as it was


def template_data(keys: tuple[str, ...], values: tuple[Any, ...]) -> dict[str, str]:
    """Promtail's template data: every extracted value that has text, as a string."""
    data = {}
    for k, v in zip(keys, values):
        text = go_string(v)
        if text is not None:
            data[k] = text
    return data


@dataclass
class TemplateConfig:
    source: str = ""
    template: str = ""

    def validate(self, ctx: Ctx, path: str) -> None:
        if not self.source:
            ctx.error(join(path, "source"), "template source value is required")
        try:
            self.compiled = compile_template(self.template)
        except TemplateError as e:
            ctx.error(join(path, "template"), f"invalid template: {e}")

    def build(self, env: StageEnv) -> "TemplateStage":
        return TemplateStage(self.source, self.compiled, env)


class TemplateStage(Stage):
    name = "template"

    def __init__(self, source: str, template: Template, env: StageEnv):
        self.source = source
        self.template = template
        self.metrics = env.metrics
        self._caches: dict[tuple[str, ...], ValueCache] = {}

    def process(self, batch: Batch) -> Batch:
        t = self.template
        if t.reads_all:
            keys = tuple(dict.fromkeys([*batch.fields, *(k for ls in set(batch.base_labels) for k in ls)]))
        else:
            keys = tuple(sorted(t.fields))
        cols = [batch.field(k) for k in keys]
        present = [(k, c) for k, c in zip(keys, cols) if c is not None]
        keys = tuple(k for k, _ in present)
        value_col = batch.field(self.source)
        uses_entry = "Entry" in t.text
        cache = self._caches.get(keys)
        if cache is None:
            cache = self._caches[keys] = ValueCache(lambda key: self._render(keys, key))
        n = len(batch)
        columns = [value_col or [None] * n, batch.lines if uses_entry else [None] * n, *(c for _, c in present)]
        results = list(map(cache.__getitem__, zip(*columns)))
        out = batch.column(self.source)
        failed = 0
        for i, r in enumerate(results):
            if r is KEEP:
                failed += 1
            else:
                out[i] = r
        if failed:
            self.metrics.stage_error("template", "execution_failed", failed)
        return batch

    def _render(self, keys: tuple[str, ...], key: tuple[Any, ...]) -> Any:
        value, entry, *values = key
        data = template_data(keys, tuple(values))
        text = go_string(value)
        if text is not None:
            data["Value"] = text
        if entry is not None:
            data["Entry"] = entry
        try:
            result = self.template.render(data)
        except TemplateError:
            return KEEP
        return result or None  # an empty result removes the key, as in Promtail
