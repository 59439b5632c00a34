"""Loading a Promtail-schema config file: env expansion, YAML with lines, typed validation."""
from __future__ import annotations

import os
from pathlib import Path

from logpipe.config.decode import Ctx, decode
from logpipe.config.env import expand_env
from logpipe.config.schema import Config, ScrapeConfig
from logpipe.config.yamlsrc import YamlSyntaxError, parse_yaml
from logpipe.errors import ConfigError, ConfigIssue

__all__ = ["Config", "ScrapeConfig", "load_config", "load_config_text"]


def load_config(path: str | os.PathLike[str], expand: bool = False) -> Config:
    """Read, expand and validate a config file; raise ConfigError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([ConfigIssue(str(p), 0, "", f"cannot read config: {e.strerror}")]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigIssue(str(p), 0, "", f"config is not UTF-8 text: {e.reason}")]) from None
    return load_config_text(text, str(p), expand=expand, base_dir=str(p.parent))


def load_config_text(text: str, file: str = "<config>", expand: bool = False, base_dir: str = ".") -> Config:
    if expand:
        text = expand_env(text)
    ctx = Ctx(file)
    ctx.base_dir = base_dir
    try:
        data = parse_yaml(text)
    except YamlSyntaxError as e:
        raise ConfigError([ConfigIssue(file, e.line, "", e.message)]) from None
    config = decode(Config, data, ctx, "")
    ctx.raise_if_any()
    return config
