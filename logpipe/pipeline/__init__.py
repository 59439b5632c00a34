"""Pipeline stages: the table of YAML stage names, decoding, and building a pipeline.

Each stage module holds its config dataclass(es); a config's `build(env)` compiles what it
needs once and returns a Stage whose `process(batch)` works on whole columns.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from logpipe.config.decode import Ctx, decode, join
from logpipe.config.yamlsrc import YMap

# YAML key -> "module:ConfigClass". One visible table; a new stage is one new row.
STAGES: dict[str, str] = {
    "json": "logpipe.pipeline.json:JsonConfig",
    "logfmt": "logpipe.pipeline.logfmt:LogfmtConfig",
    "regex": "logpipe.pipeline.regex:RegexConfig",
    "replace": "logpipe.pipeline.replace:ReplaceConfig",
    "template": "logpipe.pipeline.template:TemplateConfig",
    "timestamp": "logpipe.pipeline.timestamp:TimestampConfig",
    "output": "logpipe.pipeline.output:OutputConfig",
    "labels": "logpipe.pipeline.labels:LabelsConfig",
    "static_labels": "logpipe.pipeline.labels:StaticLabelsConfig",
    "labeldrop": "logpipe.pipeline.labels:LabelDropConfig",
    "labelallow": "logpipe.pipeline.labels:LabelAllowConfig",
    "scrub": "logpipe.pipeline.scrub:ScrubConfig",
}


def config_class(name: str) -> type:
    module, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(module), cls)


@dataclass
class StageSpec:
    """One decoded stage of a pipeline: its YAML name, typed config and YAML path."""

    name: str
    config: Any
    path: str


def decode_stages(value: Any, ctx: Ctx, path: str) -> list[StageSpec]:
    """Decode a `pipeline_stages` list, reporting each bad stage at its own path."""
    specs: list[StageSpec] = []
    if not isinstance(value, list):
        ctx.error(path, "expected a list of stages")
        return specs
    for i, item in enumerate(value):
        p = join(path, i)
        if not isinstance(item, dict) or len(item) != 1:
            ctx.error(p, "each stage is a mapping with exactly one key, the stage name (e.g. `- json: {...}`)")
            continue
        ((name, cfg),) = item.items()
        sp = join(p, name)
        if isinstance(item, YMap):
            ctx.lines[sp] = item.key_lines[name]
        if name not in STAGES:
            ctx.error(sp, f"unknown stage {name!r}; known stages: {', '.join(sorted(STAGES))}")
            continue
        before = len(ctx.issues)
        config = decode(config_class(name), cfg, ctx, sp)
        if len(ctx.issues) == before:
            specs.append(StageSpec(name, config, sp))
    return specs
