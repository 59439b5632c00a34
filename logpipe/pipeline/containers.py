"""The `cri` and `docker` stages: container runtime log formats, as Promtail builds them.

Both are fixed pipelines of ordinary stages (Promtail's extensions.go), decoded from the same
YAML a user would write, so they mean exactly what those stages mean:

- docker: `json` (output: log, stream: stream, timestamp: time), `labels` (stream),
  `timestamp` (timestamp, RFC3339Nano), `output` (output).
- cri: `regex` (`^(?s)(?P<time>\\S+?) (?P<stream>stdout|stderr) (?P<flags>\\S+?) (?P<content>.*)$`),
  `labels` (stream), `timestamp` (time, RFC3339Nano), `output` (content); then partial lines
  (flags `P`) are held per stream and joined to the stream's next full line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from logpipe.batch import Batch, LabelSet
from logpipe.config.decode import Ctx, join
from logpipe.pipeline.drop import parse_datasize
from logpipe.pipeline.stage import Pipeline, Stage, StageEnv

DOCKER_STAGES: list[dict[str, Any]] = [
    {"json": {"expressions": {"output": "log", "stream": "stream", "timestamp": "time"}}},
    {"labels": {"stream": None}},
    {"timestamp": {"source": "timestamp", "format": "RFC3339Nano"}},
    {"output": {"source": "output"}},
]
CRI_STAGES: list[dict[str, Any]] = [
    {"regex": {"expression": r"^(?s)(?P<time>\S+?) (?P<stream>stdout|stderr) (?P<flags>\S+?) (?P<content>.*)$"}},
    {"labels": {"stream": None}},
    {"timestamp": {"source": "time", "format": "RFC3339Nano"}},
    {"output": {"source": "content"}},
]


def _decode_fixed(stages: list[dict[str, Any]], ctx: Ctx, path: str) -> list:
    from logpipe.pipeline import decode_stages  # the stage table imports this module

    inner = Ctx(ctx.file)
    specs = decode_stages(stages, inner, path)
    for issue in inner.issues:  # only if a stage it is built of is broken
        ctx.error(path, f"cannot build the stage: {issue.path}: {issue.message}")
    return specs


@dataclass
class DockerConfig:
    specs: list = field(default_factory=list, init=False)

    def validate(self, ctx: Ctx, path: str) -> None:
        self.specs = _decode_fixed(DOCKER_STAGES, ctx, path)

    def build(self, env: StageEnv) -> "FixedPipelineStage":
        return FixedPipelineStage("docker", Pipeline.build(self.specs, env))


class FixedPipelineStage(Stage):
    """A stage that is a pipeline of other stages."""

    def __init__(self, name: str, pipeline: Pipeline):
        self.name = name
        self.pipeline = pipeline

    def process(self, batch: Batch) -> Batch:
        return self.pipeline.process(batch)


@dataclass
class CriConfig:
    max_partial_lines: int = 0
    max_partial_line_size: str = "0"  # bytes, or with a unit as Promtail's sizes (1KB = 1024)
    max_partial_line_size_truncate: bool = False
    size: int = field(default=0, init=False)
    specs: list = field(default_factory=list, init=False)

    def validate(self, ctx: Ctx, path: str) -> None:
        try:
            self.size = parse_datasize(self.max_partial_line_size)
        except ValueError as e:
            ctx.error(join(path, "max_partial_line_size"), str(e))
        self.specs = _decode_fixed(CRI_STAGES, ctx, path)

    def build(self, env: StageEnv) -> "CriStage":
        size = self.size if self.max_partial_line_size_truncate else None
        # Promtail: 0 means the default of 100 streams with partial lines in flight
        return CriStage(Pipeline.build(self.specs, env), self.max_partial_lines or 100, size, env)


class _Partial:
    """A stream's partial line: the latest `P` entry (its batch index, or between batches a
    one-entry copy) with the text joined so far."""

    __slots__ = ("entry", "text")

    def __init__(self, entry: int | Batch, text: str):
        self.entry = entry
        self.text = text


class CriStage(Stage):
    name = "cri"
    holds_entries = True

    def __init__(self, base: Pipeline, max_partial_lines: int, truncate_to: int | None, env: StageEnv):
        self.base = base
        self.max_partial_lines = max_partial_lines
        self.truncate_to = truncate_to
        self.env = env
        self.partials: dict[LabelSet, _Partial] = {}

    def _cut(self, text: str) -> str:
        size = self.truncate_to
        if size is None or len(text) <= size // 4:
            return text
        if text.isascii():
            return text[:size]
        raw = text.encode("utf-8", "surrogatepass")
        # Promtail cuts bytes; a character split in two is left out instead of kept broken
        return raw[:size].decode("utf-8", "ignore") if len(raw) > size else text

    def process(self, batch: Batch) -> Batch:
        batch = self.base.process(batch)
        flags = batch.field("flags")
        if not self.partials and (flags is None or "P" not in flags):
            return batch
        if flags is None:
            flags = [None] * len(batch)
        partials = self.partials
        parts: list[Batch] = [batch]
        order: list[int] = []  # positions in the concatenation of `parts`
        texts: list[str] = []

        def emit(entry: int | Batch, text: str) -> None:
            if isinstance(entry, Batch):
                order.append(sum(len(p) for p in parts))
                parts.append(entry)
            else:
                order.append(entry)
            texts.append(text)

        for i, (line, ls, flag) in enumerate(zip(batch.lines, batch.labels, flags)):
            prev = partials.get(ls)
            if flag == "P":
                if len(partials) >= self.max_partial_lines:
                    # Promtail's bound is on streams in flight: past it, every held line goes out
                    self.env.log.warning("cri stage: partial lines upperbound exceeded (%d); merging them to single lines",
                                         self.max_partial_lines)
                    for p in partials.values():
                        emit(p.entry, p.text)
                    partials.clear()
                    partials[ls] = _Partial(i, self._cut(line))
                else:
                    partials[ls] = _Partial(i, self._cut(prev.text + line if prev else line))
                continue
            if prev is not None:
                del partials[ls]
                emit(i, self._cut(prev.text + line))
            else:
                emit(i, line)
        for p in partials.values():
            if isinstance(p.entry, int):
                p.entry = Batch.concat([batch], [p.entry])
        out = Batch.concat(parts, order)
        out.lines = texts
        return out

    def flush(self, now: float | None) -> Batch | None:
        # Promtail holds partial lines until their full line comes (no timeout); at the end
        # of input they are released rather than lost.
        if now is not None or not self.partials:
            return None
        held = []
        for p in self.partials.values():
            assert isinstance(p.entry, Batch)
            copy = Batch.concat([p.entry], [0])
            copy.lines = [p.text]
            held.append(copy)
        self.partials.clear()
        return Batch.concat(held)
