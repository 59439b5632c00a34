"""The `decolorize` stage: strip ANSI escape sequences (colors, cursor moves) from the line."""
from __future__ import annotations

import re
from dataclasses import dataclass

from logpipe.batch import Batch
from logpipe.pipeline.stage import Stage, StageEnv

# Loki's pattern (from acarl005/stripansi); `[0-9]` where Go writes \d, which is ASCII-only in
# RE2 but would match any Unicode digit in Python.
ANSI = re.compile(
    "[\x1b\x9b][\\[\\]()#;?]*(?:(?:(?:[a-zA-Z0-9]*(?:;[a-zA-Z0-9]*)*)?\x07)"
    "|(?:(?:[0-9]{1,4}(?:;[0-9]{0,4})*)?[0-9A-PRZcf-ntqry=><~]))"
)


@dataclass
class DecolorizeConfig:
    def build(self, env: StageEnv) -> "DecolorizeStage":
        return DecolorizeStage()


class DecolorizeStage(Stage):
    name = "decolorize"

    def process(self, batch: Batch) -> Batch:
        lines = batch.lines
        text = "\n".join(lines)
        if "\x1b" not in text and "\x9b" not in text:
            return batch
        # No escape sequence spans a newline, so one pass over the joined batch does, unless a
        # line holds a newline of its own (then the split does not give the lines back).
        out = ANSI.sub("", text).split("\n")
        batch.lines = out if len(out) == len(lines) else [ANSI.sub("", line) for line in lines]
        return batch
