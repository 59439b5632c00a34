"""The `output` stage: replace the log line with an extracted value."""
from __future__ import annotations

from dataclasses import dataclass

from logpipe.batch import Batch
from logpipe.config.decode import Ctx, join
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import go_string


@dataclass
class OutputConfig:
    source: str = ""

    def validate(self, ctx: Ctx, path: str) -> None:
        if not self.source:
            ctx.error(join(path, "source"), "output source value is required if output is specified")

    def build(self, env: StageEnv) -> "OutputStage":
        return OutputStage(self.source)


class OutputStage(Stage):
    name = "output"

    def __init__(self, source: str):
        self.source = source

    def process(self, batch: Batch) -> Batch:
        col = batch.field(self.source)
        if col is None:
            return batch
        # A value with no text (absent, null, a map) leaves the line as it was, as in Promtail.
        batch.lines = [line if (s := go_string(v)) is None else s for line, v in zip(batch.lines, col)]
        return batch
