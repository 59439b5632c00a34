"""The `match` stage: run nested stages on (or drop) the entries a LogQL selector matches.

The selector is evaluated once per distinct label set, the line filters as C-level maps over
the candidates' lines; the nested stages run once on the sub-batch of matching entries, which
is then merged back in input order.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import compress, filterfalse
from typing import Any

from logpipe.batch import Batch
from logpipe.config.decode import Ctx, join
from logpipe.pipeline.logql import Selector, SelectorError, parse_selector
from logpipe.pipeline.stage import Pipeline, Stage, StageEnv
from logpipe.pipeline.values import ValueCache


@dataclass
class MatchConfig:
    selector: str = ""
    stages: Any = None
    action: str = ""
    pipeline_name: str | None = None
    drop_counter_reason: str = ""
    parsed: Selector | None = field(default=None, init=False)
    specs: list = field(default_factory=list, init=False)

    def validate(self, ctx: Ctx, path: str) -> None:
        from logpipe.pipeline import decode_stages  # the stage table imports this module

        if self.pipeline_name == "":
            ctx.error(join(path, "pipeline_name"), "match stage pipeline name can be omitted but cannot be an empty string")
        if self.action == "":
            self.action = "keep"
        if self.action not in ("keep", "drop"):
            ctx.error(join(path, "action"), "match stage action should be 'keep' or 'drop'")
        has_stages = bool(self.stages)
        if self.action == "keep" and not has_stages:
            ctx.error(path, "match stage requires at least one additional stage to be defined in '- stages'")
        if self.action == "drop" and has_stages:
            ctx.error(join(path, "stages"), "match stage configured to drop entries cannot contains stages")
        if not self.selector:
            ctx.error(join(path, "selector"), "selector statement required for match stage")
        else:
            try:
                self.parsed = parse_selector(self.selector)
            except SelectorError as e:
                ctx.error(join(path, "selector"), f"invalid selector syntax for match stage: {e}")
        if self.action == "keep" and has_stages:
            self.specs = decode_stages(self.stages, ctx, join(path, "stages"))

    def build(self, env: StageEnv) -> "MatchStage":
        assert self.parsed is not None
        reason = self.drop_counter_reason or "match_stage"
        nested = Pipeline.build(self.specs, env) if self.action == "keep" else None
        return MatchStage(self.parsed, nested, reason, env)


class MatchStage(Stage):
    name = "match"

    def __init__(self, selector: Selector, pipeline: Pipeline | None, reason: str, env: StageEnv):
        self.selector = selector
        self.pipeline = pipeline
        self.reason = reason
        self.metrics = env.metrics
        self.filters = [f.passes for f in selector.filters]
        self._labels_match = ValueCache(selector.matches_labels)
        self.holds_entries = pipeline is not None and pipeline.holds_entries
        # Entries of the sub-batch carry their position under this key so survivors of the
        # nested stages find their place again; a serial tells this batch's from held ones.
        self._tag = f"\x00match{id(self)}"
        self._serial = 0

    def matching(self, batch: Batch) -> list[int] | None:
        """Indices of matching entries, or None when every entry matches."""
        mask = list(map(self._labels_match.__getitem__, batch.labels))
        if all(mask) and not self.filters:
            return None
        idx = list(compress(range(len(mask)), mask))
        lines = batch.lines
        for passes in self.filters:
            if not idx:
                break
            cand = lines if len(idx) == len(lines) else [lines[i] for i in idx]
            idx = list(compress(idx, passes(cand)))
        return None if len(idx) == len(lines) else idx

    def process(self, batch: Batch) -> Batch:
        idx = self.matching(batch)
        n = len(batch)
        if self.pipeline is None:  # action: drop
            if idx is None:
                self.metrics.drop(self.reason, n)
                return batch.select([])
            if not idx:
                return batch
            self.metrics.drop(self.reason, len(idx))
            return batch.select(list(filterfalse(set(idx).__contains__, range(n))))
        if idx is None:
            return self._strip(self.pipeline.process(batch))
        if not idx:
            return batch
        base = self._serial
        self._serial += n
        sub = batch.select(idx)
        tags = sub.fields[self._tag] = [base + i for i in idx]
        out = self.pipeline.process(sub)
        out_tags = out.fields.pop(self._tag, None)
        if out_tags is tags and len(out) == len(idx):
            return _scatter(batch, idx, out)  # the same entries came back: write them in place
        tags = out_tags or [None] * len(out)
        rest_idx = list(filterfalse(set(idx).__contains__, range(n)))
        rest = batch.select(rest_idx)
        # An entry released from an earlier batch (a held multiline block) goes first.
        keys = rest_idx + [t - base if t is not None and t >= base else -1 for t in tags]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        return Batch.concat([rest, out], order)

    def flush(self, now: float | None) -> Batch | None:
        if self.pipeline is None:
            return None
        return self._strip(self.pipeline.flush(now))

    def _strip(self, batch: Batch | None) -> Any:
        if batch is not None:
            batch.fields.pop(self._tag, None)
        return batch


def _scatter(batch: Batch, idx: list[int], sub: Batch) -> Batch:
    """`batch` with the entries at `idx` replaced by `sub`'s, in order; C-level loops."""
    n = len(batch)

    def put(col: list[Any] | None, values: list[Any]) -> list[Any]:
        new = list(col) if col is not None else [None] * n
        deque(map(new.__setitem__, idx, values), maxlen=0)
        return new

    batch.lines = put(batch.lines, sub.lines)
    batch.ts = put(batch.ts, sub.ts)
    batch.labels = put(batch.labels, sub.labels)
    for k, col in sub.fields.items():
        batch.fields[k] = put(batch.field(k), col)
    if sub.metadata:
        md = batch.metadata or {}
        batch.metadata = {**md, **{k: put(md.get(k), col) for k, col in sub.metadata.items()}}
    return batch
