"""What every stage shares: the Stage base, the build environment, and the runner."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from logpipe.batch import Batch
from logpipe.telemetry import SelfMetrics


@dataclass
class StageEnv:
    """What a stage may use besides its config: the job it runs in and where to count."""

    job: str = ""
    metrics: SelfMetrics = field(default_factory=SelfMetrics)
    # The wall clock (Unix seconds) stages read "now" from: a year-less timestamp's year,
    # older_than. Injected so that a dry run can be reproduced exactly (`--clock`).
    clock: Callable[[], float] = time.time
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("logpipe.pipeline"))


class Stage:
    """A batch transformation. Subclasses set `name` and implement `process`.

    A stage that holds entries back across batches (multiline blocks, CRI partial lines) sets
    `holds_entries` and implements `flush`."""

    name = "stage"
    holds_entries = False

    def process(self, batch: Batch) -> Batch:
        raise NotImplementedError

    def flush(self, now: float | None) -> Batch | None:
        """The held entries due for release at `now` (time.monotonic() seconds), or all of
        them when `now` is None (the input ended); None when there are none."""
        return None


class Pipeline:
    """Stages run in order over whole batches."""

    def __init__(self, stages: Sequence[Stage]):
        self.stages = list(stages)
        # True when a stage holds entries back: the caller must then call flush() now and
        # then (a timer's worth, e.g. every second) and once with None when the input ends.
        self.holds_entries = any(s.holds_entries for s in self.stages)

    @staticmethod
    def build(specs: Sequence, env: StageEnv) -> "Pipeline":
        return Pipeline([spec.config.build(env) for spec in specs])

    def process(self, batch: Batch) -> Batch:
        for stage in self.stages:
            if not batch.lines:
                break
            batch = stage.process(batch)
        return batch

    def flush(self, now: float | None = None) -> Batch | None:
        """Release what stages hold (see Stage.flush); what stage i releases runs through
        the stages after it. None when nothing is due."""
        if not self.holds_entries:
            return None
        out: Batch | None = None
        for stage in self.stages:
            if out is not None and out.lines:
                out = stage.process(out)
            held = stage.flush(now) if stage.holds_entries else None
            if held is not None and held.lines:
                out = held if out is None or not out.lines else Batch.concat([out, held])
        return out if out is not None and out.lines else None

    def steps(self, batch: Batch) -> Iterator[tuple[int, Stage, Batch]]:
        """Run stage by stage, yielding (index, stage, batch after it), for `inspect`."""
        for i, stage in enumerate(self.stages):
            if not batch.lines:
                return
            batch = stage.process(batch)
            yield i, stage, batch
