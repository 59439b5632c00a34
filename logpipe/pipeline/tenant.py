"""The `tenant` stage: set the reserved `__tenant_id__` label that picks the Loki tenant.

The value comes from `source` (an extracted value), `label` (a label's value) or `value` (a
constant), exactly one of them; an empty or missing value leaves the entry's tenant as it was.
"""
from __future__ import annotations

from dataclasses import dataclass

from logpipe.batch import Batch, LabelSet
from logpipe.config.decode import Ctx
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import ValueCache, go_string

TENANT_LABEL = "__tenant_id__"


@dataclass
class TenantConfig:
    source: str = ""
    label: str = ""
    value: str = ""

    def validate(self, ctx: Ctx, path: str) -> None:
        given = [k for k in ("source", "label", "value") if getattr(self, k)]
        if not given:
            ctx.error(path, "label, source or value config are required")
        elif len(given) > 1:
            ctx.error(path, "label, source and value are mutually exclusive: you should set source, value or label but not all")

    def build(self, env: StageEnv) -> "TenantStage":
        return TenantStage(self, env)


class TenantStage(Stage):
    name = "tenant"

    def __init__(self, config: TenantConfig, env: StageEnv):
        self.source = config.source
        self.label = config.label
        self.value = config.value
        self.metrics = env.metrics
        self._set = ValueCache(_with_tenant)
        self._texts = ValueCache(go_string)
        self._from_label = ValueCache(lambda ls: _with_tenant((ls, ls.get(self.label))))

    def process(self, batch: Batch) -> Batch:
        if self.source:
            col = batch.field(self.source)
            if col is None:
                return batch
            try:
                texts = list(map(self._texts.__getitem__, col))
            except TypeError:  # an unhashable value: no caching
                texts = list(map(go_string, col))
            # A value with no text (a map, a list) is skipped, as Promtail does; say so once.
            bad = texts.count(None) - col.count(None)
            if bad:
                self.metrics.stage_error(self.name, "not_a_string", bad)
            batch.labels = list(map(self._set.__getitem__, zip(batch.labels, texts)))
        elif self.label:
            batch.labels = list(map(self._from_label.__getitem__, batch.labels))
        else:
            value = self.value
            batch.labels = list(map(self._set.__getitem__, zip(batch.labels, [value] * len(batch))))
        return batch


def _with_tenant(key: tuple[LabelSet, str | None]) -> LabelSet:
    labels, tenant = key
    return labels.updated({TENANT_LABEL: tenant}) if tenant else labels
