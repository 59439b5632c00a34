"""Pipeline stages: the table of YAML stage names, decoding, and building a pipeline.

Each stage module holds its config dataclass(es); a config's `build(env)` compiles what it
needs once and returns a Stage whose `process(batch)` works on whole columns.
"""
from __future__ import annotations

import importlib
from pathlib import Path
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
    "metrics": "logpipe.pipeline.metrics:MetricsConfig",
    "match": "logpipe.pipeline.match:MatchConfig",
    "drop": "logpipe.pipeline.drop:DropConfig",
    "limit": "logpipe.pipeline.limit:LimitConfig",
    "sampling": "logpipe.pipeline.sampling:SamplingConfig",
    "multiline": "logpipe.pipeline.multiline:MultilineConfig",
    "tenant": "logpipe.pipeline.tenant:TenantConfig",
    "pack": "logpipe.pipeline.pack:PackConfig",
    "structured_metadata": "logpipe.pipeline.structured_metadata:StructuredMetadataConfig",
    "non_indexed_labels": "logpipe.pipeline.structured_metadata:StructuredMetadataConfig",
    "decolorize": "logpipe.pipeline.decolorize:DecolorizeConfig",
    "cri": "logpipe.pipeline.containers:CriConfig",
    "docker": "logpipe.pipeline.containers:DockerConfig",
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


BUNDLED_PIPELINES = Path(__file__).resolve().parent.parent.parent / "pipelines"


def include_pipeline(ref: Any, ctx: Ctx, path: str, depth: int = 0) -> list[StageSpec]:
    """`- include: pipelines/litellm.yaml` (a path relative to the including file) or
    `- include: litellm` (a pipeline shipped in logpipe's pipelines/ folder): the file's
    `pipeline_stages` run here, as if written in place. Errors name the included file."""
    from logpipe.config.yamlsrc import YamlSyntaxError, parse_yaml

    if not isinstance(ref, str) or not ref:
        ctx.error(path, "include takes a pipeline file path or a bundled pipeline name")
        return []
    candidates = [Path(ctx.base_dir) / ref]
    if "/" not in ref:
        candidates.append(BUNDLED_PIPELINES / (ref if ref.endswith(".yaml") else ref + ".yaml"))
    target = next((c for c in candidates if c.is_file()), None)
    if target is None:
        names = sorted(f.stem for f in BUNDLED_PIPELINES.glob("*.yaml")) if BUNDLED_PIPELINES.is_dir() else []
        ctx.error(path, f"no pipeline file {ref!r}" + (f"; bundled pipelines: {', '.join(names)}" if names else ""))
        return []
    if depth > 8:
        ctx.error(path, f"include nests too deep at {target} (an include cycle?)")
        return []
    sub = Ctx(str(target))
    sub.base_dir = str(target.parent)
    try:
        data = parse_yaml(target.read_text())
    except (OSError, YamlSyntaxError) as e:
        ctx.error(path, f"cannot load {target}: {getattr(e, 'message', e)}")
        return []
    if not isinstance(data, dict) or "pipeline_stages" not in data:
        ctx.error(path, f"{target} has no `pipeline_stages` list")
        return []
    if isinstance(data, YMap):
        sub.lines["pipeline_stages"] = data.key_lines["pipeline_stages"]
    specs = decode_stages(data["pipeline_stages"], sub, "pipeline_stages", depth + 1)
    ctx.issues.extend(sub.issues)
    return specs


def decode_stages(value: Any, ctx: Ctx, path: str, depth: int = 0) -> list[StageSpec]:
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
        if name == "include":
            specs.extend(include_pipeline(cfg, ctx, sp, depth))
            continue
        if name not in STAGES:
            ctx.error(sp, f"unknown stage {name!r}; known stages: {', '.join(sorted(STAGES))}")
            continue
        before = len(ctx.issues)
        config = decode(config_class(name), cfg, ctx, sp)
        if len(ctx.issues) == before:
            specs.append(StageSpec(name, config, sp))
    return specs
