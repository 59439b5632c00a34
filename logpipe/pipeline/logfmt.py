"""The `logfmt` stage: extract `key=value` pairs (go-logfmt's syntax) by a mapping."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from logpipe.batch import Batch
from logpipe.config.decode import Ctx, join
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import source_texts

# One key=value pair as go-logfmt reads it: a key of printable non-space characters without
# `=` or `"`, then optionally `=` and a bare or double-quoted value.
_PAIR = re.compile(r'[ \t]*([^\s="]+)(?:=("(?:[^"\\]|\\.)*"|[^\s"=]*))?(?=[ \t]|$)')


def decode_logfmt(text: str, wanted: frozenset[str]) -> tuple[dict[str, str], bool]:
    """The wanted keys of one line, and whether the whole line decoded. Like Promtail, values
    read before a syntax error are kept."""
    out: dict[str, str] = {}
    pos, end = 0, len(text)
    while pos < end:
        m = _PAIR.match(text, pos)
        if m is None or m.end() == pos:
            return out, text[pos:].strip() == ""
        key, value = m.group(1), m.group(2)
        if key in wanted:
            if value is None:
                out[key] = ""
            elif value.startswith('"'):
                try:
                    out[key] = json.loads(value)
                except ValueError:
                    return out, False
            else:
                out[key] = value
        pos = m.end()
    return out, True


@dataclass
class LogfmtConfig:
    mapping: dict[str, str | None] = field(default_factory=dict)
    source: str | None = None

    def validate(self, ctx: Ctx, path: str) -> None:
        if not self.mapping:
            ctx.error(join(path, "mapping"), "logfmt mapping is required")
        if self.source == "":
            ctx.error(join(path, "source"), "empty source")

    def build(self, env: StageEnv) -> "LogfmtStage":
        return LogfmtStage(self, env)


class LogfmtStage(Stage):
    name = "logfmt"

    def __init__(self, config: LogfmtConfig, env: StageEnv):
        self.mapping = {name: key or name for name, key in config.mapping.items()}
        self.wanted = frozenset(self.mapping.values())
        self.source = config.source
        self.metrics = env.metrics

    def process(self, batch: Batch) -> Batch:
        texts = source_texts(batch, self.source)
        if texts is None:
            return batch
        wanted = self.wanted
        parsed = [decode_logfmt(t, wanted) if t is not None else ({}, True) for t in texts]
        bad = sum(1 for _, ok in parsed if not ok)
        if bad:
            self.metrics.stage_error("logfmt", "malformed", bad)
        for name, key in self.mapping.items():
            values = [d.get(key) for d, _ in parsed]
            if all(v is None for v in values):
                continue
            col = batch.column(name)
            batch.fields[name] = [old if new is None else new for old, new in zip(col, values)]
        return batch
