"""The `replace` stage: rewrite the captured parts of every match (the masking workhorse)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from logpipe.batch import Batch
from logpipe.config.decode import Ctx, join
from logpipe.gotemplate import Template, TemplateError, compile_template
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.template import template_data
from logpipe.pipeline.values import source_texts
from logpipe.re2 import compile_re2


@dataclass
class ReplaceConfig:
    expression: str = ""
    source: str | None = None
    replace: str = ""

    def validate(self, ctx: Ctx, path: str) -> None:
        if not self.expression:
            ctx.error(join(path, "expression"), "expression is required")
        else:
            try:
                self.compiled = compile_re2(self.expression)
            except ValueError as e:
                ctx.error(join(path, "expression"), str(e))
        if self.source == "":
            ctx.error(join(path, "source"), "empty source in replace stage")
        try:
            self.template = compile_template(self.replace)
        except TemplateError as e:
            ctx.error(join(path, "replace"), f"invalid template: {e}")

    def build(self, env: StageEnv) -> "ReplaceStage":
        return ReplaceStage(self, env)


class ReplaceStage(Stage):
    name = "replace"

    def __init__(self, config: ReplaceConfig, env: StageEnv):
        self.rx = config.compiled
        self.source = config.source
        self.template: Template = config.template
        self.metrics = env.metrics
        self.names = [(i, name) for name, i in self.rx.groupindex.items()]
        # A template that reads nothing but .Value renders once per distinct captured text.
        self.constant = not self.template.fields and not self.template.reads_all and "Entry" not in self.template.text
        self._rendered: dict[str, str] = {}

    def process(self, batch: Batch) -> Batch:
        texts = source_texts(batch, self.source)
        if texts is None:
            return batch
        # One search over the whole batch tells whether any entry can match at all.
        if not self.rx.groups or self.rx.search("\n".join(t for t in texts if t is not None)) is None:
            return batch
        out_texts: list[Any] = list(texts)
        failed = 0
        keys = None if self.constant else list(dict.fromkeys([*batch.fields, *(k for ls in set(batch.base_labels) for k in ls)]))
        for i, text in enumerate(texts):
            if text is None:
                continue
            matches = list(self.rx.finditer(text))
            if not matches:
                continue
            data = None
            if not self.constant:
                data = template_data(tuple(keys), tuple(batch.field(k)[i] for k in keys))  # type: ignore[index]
                data["Entry"] = batch.lines[i]
            try:
                result, captured = self._replace(text, matches, data)
            except Exception:  # noqa: BLE001 - a template that fails leaves the entry as it was
                failed += 1
                continue
            out_texts[i] = result
            first = matches[0]
            for gi, name in self.names:
                g = first.group(gi)
                if g is not None and g in captured:
                    batch.column(name)[i] = captured[g]
        if self.source is not None:
            col = batch.column(self.source)
            for i, (old, new) in enumerate(zip(texts, out_texts)):
                if new is not old and new != old:
                    col[i] = new
        else:
            batch.lines = out_texts
        if failed:
            self.metrics.stage_error("replace", "template_failed", failed)
        return batch

    def _render(self, value: str, data: dict[str, str] | None) -> str:
        if data is None:
            r = self._rendered.get(value)
            if r is None:
                r = self.template.render({"Value": value})
                if len(self._rendered) < 65536:
                    self._rendered[value] = r
            return r
        data["Value"] = value
        return self.template.render(data)

    def _replace(self, text: str, matches: list[Any], data: dict[str, str] | None) -> tuple[str, dict[str, str]]:
        """Promtail's getReplacedEntry: each participating group of each match is replaced by
        the rendered template; a group that starts exactly where the previous replaced one
        ended (when that was not position 0) is not replaced, a quirk kept for compatibility."""
        result: list[str] = []
        prev_end = 0
        captured: dict[str, str] = {}
        for m in matches:
            for g in range(1, self.rx.groups + 1):
                start, end = m.span(g)
                if start == -1:
                    continue
                value = text[start:end]
                rendered = self._render(value, data)
                if prev_end == 0 or prev_end < start:
                    result.append(text[prev_end:start])
                    result.append(rendered)
                    prev_end = end
                captured[value] = rendered
        result.append(text[prev_end:])
        return "".join(result), captured
