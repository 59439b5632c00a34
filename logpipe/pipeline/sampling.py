"""The `sampling` stage: keep each entry with probability `rate`, drop and count the rest."""
from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import compress

from logpipe.batch import Batch
from logpipe.config.decode import Ctx, join
from logpipe.pipeline.stage import Stage, StageEnv


@dataclass
class SamplingConfig:
    rate: float = 0.0
    drop_counter_reason: str = ""

    def validate(self, ctx: Ctx, path: str) -> None:
        if not 0.0 <= self.rate <= 1.0:
            ctx.error(join(path, "rate"),
                      f"sampling stage failed to parse rate,Sampling Rate must be between 0.0 and 1.0, received {self.rate:f}")

    def build(self, env: StageEnv) -> "SamplingStage":
        return SamplingStage(self.rate, self.drop_counter_reason or "sampling_stage", env)


class SamplingStage(Stage):
    name = "sampling"

    def __init__(self, rate: float, reason: str, env: StageEnv, rng: random.Random | None = None):
        self.rate = rate
        self.reason = reason
        self.metrics = env.metrics
        self.rng = rng or random.Random()

    def process(self, batch: Batch) -> Batch:
        n = len(batch)
        if self.rate >= 1.0:
            return batch
        rnd, rate = self.rng.random, self.rate
        # Promtail keeps an entry when a random 63-bit number is at most rate * 2^63: the
        # same odds as one uniform draw below `rate` (rate 0 keeps nothing).
        keep = list(compress(range(n), [rnd() < rate for _ in range(n)]))
        if len(keep) == n:
            return batch
        self.metrics.drop(self.reason, n - len(keep))
        return batch.select(keep)
