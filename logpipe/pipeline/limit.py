"""The `limit` stage: a token bucket (`rate` per second, `burst` deep) over entries.

With `drop: true`, entries beyond the bucket's tokens are dropped and counted (reason
`ratelimit_drop_stage`); with `by_label_name`, each value of that label has its own bucket
and entries without the label pass. With `drop: false` Promtail blocks each entry until a
token is free; here the whole batch waits once, as long as its last entry would have, which
blocks the source thread: back-pressure, the journal or file is the buffer meanwhile.
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from logpipe.batch import Batch
from logpipe.config.decode import Ctx, join
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import ValueCache

DROP_REASON = "ratelimit_drop_stage"
MIN_DISTINCT_LABELS = 10000  # Promtail raises smaller max_distinct_labels to this


@dataclass
class LimitConfig:
    rate: float = 0.0
    burst: int = 0
    drop: bool = False
    by_label_name: str = ""
    max_distinct_labels: int = MIN_DISTINCT_LABELS

    def validate(self, ctx: Ctx, path: str) -> None:
        if self.rate <= 0 or self.burst <= 0:
            ctx.error(path, "limit stage failed to parse rate or burst (both must be greater than 0)")
        if self.by_label_name and not self.drop:
            ctx.error(join(path, "by_label_name"), "When ratelimiting by label, drop must be true")

    def build(self, env: StageEnv) -> "LimitStage":
        if self.by_label_name and self.max_distinct_labels < MIN_DISTINCT_LABELS:
            env.log.warning("limit stage: max_distinct_labels was adjusted up to the minimal reasonable value of %d",
                            MIN_DISTINCT_LABELS)
        return LimitStage(self, env)


class Bucket:
    """golang.org/x/time/rate's Limiter: starts full, refills `rate` tokens a second."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last: float | None = None

    def advance(self, now: float) -> None:
        if self.last is not None and now > self.last:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        if self.last is None or now > self.last:
            self.last = now

    def take_up_to(self, n: int, now: float) -> int:
        """Take as many of `n` tokens as there are (Allow() called n times at one instant)."""
        self.advance(now)
        k = min(n, max(0, math.floor(self.tokens + 1e-9)))
        self.tokens -= k
        return k

    def wait_for(self, n: int, now: float) -> float:
        """Take `n` tokens, going into debt; seconds until the debt is paid (Wait() n times)."""
        self.advance(now)
        self.tokens -= n
        return max(0.0, -self.tokens / self.rate)


class LimitStage(Stage):
    name = "limit"

    def __init__(self, config: LimitConfig, env: StageEnv, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate = config.rate
        self.burst = config.burst
        self.drop = config.drop
        self.label = config.by_label_name
        self.max_labels = max(config.max_distinct_labels, MIN_DISTINCT_LABELS)
        self.metrics = env.metrics
        self.log: logging.Logger = env.log
        self.clock = clock
        self.sleep = sleep
        self.bucket = Bucket(self.rate, self.burst)
        # Promtail's generational map: at most max_distinct_labels recent values, in two halves.
        self._new: dict[str, Bucket] = {}
        self._old: dict[str, Bucket] = {}
        self._value_of = ValueCache(lambda ls: ls.get(self.label))

    def process(self, batch: Batch) -> Batch:
        n = len(batch)
        now = self.clock()
        if self.label:
            return self._by_label(batch, now)
        if not self.drop:
            wait = self.bucket.wait_for(n, now)
            if wait > 0:
                self.sleep(wait)
            return batch
        k = self.bucket.take_up_to(n, now)
        if k == n:
            return batch
        self.metrics.drop(DROP_REASON, n - k)
        return batch.select(list(range(k)))

    def _bucket(self, value: str) -> Bucket:
        b = self._new.get(value)
        if b is None:
            b = self._old.get(value) or Bucket(self.rate, self.burst)
            self._new[value] = b
            if len(self._new) == self.max_labels:
                self._old, self._new = self._new, {}
        return b

    def _by_label(self, batch: Batch, now: float) -> Batch:
        values = list(map(self._value_of.__getitem__, batch.labels))
        counts = Counter(values)
        counts.pop(None, None)
        allowed = {v: self._bucket(v).take_up_to(c, now) for v, c in counts.items()}
        if all(allowed[v] == c for v, c in counts.items()):
            return batch
        keep = []
        for i, v in enumerate(values):
            if v is None:
                keep.append(i)
            elif allowed[v]:
                allowed[v] -= 1
                keep.append(i)
        self.metrics.drop(DROP_REASON, len(batch) - len(keep))
        return batch.select(keep)
