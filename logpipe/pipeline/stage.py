"""What every stage shares: the Stage base, the build environment, and the runner."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from logpipe.batch import Batch
from logpipe.telemetry import SelfMetrics


@dataclass
class StageEnv:
    """What a stage may use besides its config: the job it runs in and where to count."""

    job: str = ""
    metrics: SelfMetrics = field(default_factory=SelfMetrics)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("logpipe.pipeline"))


class Stage:
    """A batch transformation. Subclasses set `name` and implement `process`."""

    name = "stage"

    def process(self, batch: Batch) -> Batch:
        raise NotImplementedError


class Pipeline:
    """Stages run in order over whole batches."""

    def __init__(self, stages: Sequence[Stage]):
        self.stages = list(stages)

    @staticmethod
    def build(specs: Sequence, env: StageEnv) -> "Pipeline":
        return Pipeline([spec.config.build(env) for spec in specs])

    def process(self, batch: Batch) -> Batch:
        for stage in self.stages:
            if not batch.lines:
                break
            batch = stage.process(batch)
        return batch

    def steps(self, batch: Batch) -> Iterator[tuple[int, Stage, Batch]]:
        """Run stage by stage, yielding (index, stage, batch after it), for `inspect`."""
        for i, stage in enumerate(self.stages):
            if not batch.lines:
                return
            batch = stage.process(batch)
            yield i, stage, batch
