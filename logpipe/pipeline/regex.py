"""The `regex` stage: named capture groups of an RE2 expression become extracted values.

Instead of one search per line, one `findall` runs over the batch's lines joined with "\\n",
with the expression wrapped so that it yields exactly one result per line (non-matching lines
included): `^(?:.*?(EXPR))?.*$` in MULTILINE mode. The lazy prefix finds the leftmost match,
as Go's FindStringSubmatch does. Where that alignment cannot hold (an entry holding a newline,
an expression that could run into the next line, anchors of the whole text) it searches line
by line, and results are verified by their count.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from logpipe.batch import Batch
from logpipe.config.decode import Ctx, join
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import source_texts
from logpipe.re2 import compile_re2

# Constructs whose meaning changes when lines are joined: text anchors and inline flags.
_NOT_JOINABLE = re.compile(r"\\[AzZ]|\(\?[a-zA-Z]*[sm]")


@dataclass
class RegexConfig:
    expression: str = ""
    source: str | None = None

    def validate(self, ctx: Ctx, path: str) -> None:
        if not self.expression:
            ctx.error(join(path, "expression"), "expression is required")
            return
        try:
            self.compiled = compile_re2(self.expression)
        except ValueError as e:
            ctx.error(join(path, "expression"), str(e))
            return
        if not self.compiled.groupindex:
            ctx.error(join(path, "expression"), "the regex has no named capture group (?P<name>...) to extract")
        if self.source == "":
            ctx.error(join(path, "source"), "empty source")

    def build(self, env: StageEnv) -> "RegexStage":
        return RegexStage(self.compiled, self.source, env)


class RegexStage(Stage):
    name = "regex"

    def __init__(self, rx: Any, source: str | None, env: StageEnv):
        self.rx = rx
        self.source = source
        self.metrics = env.metrics
        # (group number in the wrapped pattern, name); group 1 is the whole user match.
        self.names = sorted((i + 1, name) for name, i in rx.groupindex.items())
        self.joined = None
        if not _NOT_JOINABLE.search(rx.pattern):
            try:
                self.joined = type(rx)  # keep the engine (re or regex) the user pattern compiled with
                mod = re if isinstance(rx, re.Pattern) else __import__("regex")
                self.joined = mod.compile(r"^(?:.*?(" + rx.pattern + r"))?.*$", rx.flags | mod.MULTILINE)
            except Exception:  # noqa: BLE001 - an unusual pattern: line by line it is
                self.joined = None

    def _rows(self, texts: list[str]) -> list[tuple[str, ...] | None]:
        """One row of group values per text, None where the expression does not match."""
        if self.joined is not None and texts:
            # The pattern matches every line of the joined text once: as many rows as texts,
            # unless a text holds a newline of its own
            rows = self.joined.findall("\n".join(texts))
            if len(rows) == len(texts):
                if self.joined.groups == 1:
                    rows = [(r,) for r in rows]
                out: list[tuple[str, ...] | None] = rows  # type: ignore[assignment]
                # An empty whole-match is either no match or a match of nothing: ask again.
                for i, r in enumerate(rows):
                    if r[0] == "":
                        m = self.rx.search(texts[i])
                        out[i] = None if m is None else ("", *m.groups(default=""))
                return out
        search = self.rx.search
        return [None if m is None else (m.group(0), *m.groups(default="")) for m in map(search, texts)]

    def process(self, batch: Batch) -> Batch:
        values = source_texts(batch, self.source)
        if values is None:
            return batch
        if self.source is not None:
            idx = [i for i, v in enumerate(values) if v is not None]
            texts = [values[i] for i in idx]
        else:
            idx, texts = None, values
        rows = self._rows(texts)
        missed = rows.count(None)
        if missed:
            self.metrics.stage_error("regex", "no_match", missed)
        if idx is None and not missed:
            columns = list(zip(*rows)) if rows else []
            for gi, name in self.names:
                batch.fields[name] = list(columns[gi - 1]) if columns else []
            return batch
        positions = idx if idx is not None else range(len(rows))
        for gi, name in self.names:
            col = batch.column(name)
            for pos, row in zip(positions, rows):
                if row is not None:
                    col[pos] = row[gi - 1]
        return batch
