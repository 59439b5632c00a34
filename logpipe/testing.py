"""Helpers to drive pipelines from tests (the project's and users'): config text in, entries out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from logpipe.batch import Batch, LabelSet
from logpipe.config.decode import Ctx
from logpipe.config.yamlsrc import parse_yaml
from logpipe.pipeline import decode_stages
from logpipe.pipeline.stage import Pipeline, StageEnv
from logpipe.telemetry import SelfMetrics

DEFAULT_TS = 1_700_000_000_000_000_000


@dataclass
class Result:
    batch: Batch
    metrics: SelfMetrics

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [self.batch.entry(i) for i in range(len(self.batch))]

    @property
    def lines(self) -> list[str]:
        return list(self.batch.lines)

    @property
    def labels(self) -> list[dict[str, str]]:
        return [ls.as_dict() for ls in self.batch.labels]

    @property
    def extracted(self) -> list[dict[str, Any]]:
        return [self.batch.extracted(i) for i in range(len(self.batch))]

    def counter(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        return sum(s.value for fam in self.metrics.registry.collect() for s in fam.samples
                   if s.name == name and labels.items() <= s.labels.items())


def build_pipeline(stages: str | list[Any], env: StageEnv | None = None) -> Pipeline:
    """Build a pipeline from `pipeline_stages` YAML text (or the equivalent Python list).

    Raises ConfigError exactly as loading a config file would."""
    text = stages if isinstance(stages, str) else yaml.safe_dump(stages)
    ctx = Ctx("<stages>")
    specs = decode_stages(parse_yaml(text), ctx, "pipeline_stages")
    ctx.raise_if_any()
    return Pipeline.build(specs, env or StageEnv())


def run_pipeline(
    stages: str | list[Any],
    lines: list[str],
    labels: dict[str, str] | None = None,
    ts: int | list[int] = DEFAULT_TS,
) -> Result:
    """Run `lines` through the stages as one batch, then end the input (stages that hold
    entries back, like multiline, release them); the result holds the batch and counters."""
    env = StageEnv(metrics=SelfMetrics())
    pipeline = build_pipeline(stages, env)
    batch = Batch.of_lines(list(lines), ts, LabelSet.of(labels or {}))
    out = pipeline.process(batch)
    held = pipeline.flush(None)
    if held is not None:
        out = Batch.concat([out, held])
    return Result(out, env.metrics)
