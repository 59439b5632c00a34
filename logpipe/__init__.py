"""logpipe: a Promtail-compatible log agent with a columnar, batch-at-a-time pipeline."""
from __future__ import annotations

__version__ = "0.1.0"

from logpipe.batch import Batch, LabelSet  # noqa: E402
from logpipe.errors import ConfigError, LogpipeError, SinkError, SourceError  # noqa: E402

__all__ = ["Batch", "LabelSet", "ConfigError", "LogpipeError", "SinkError", "SourceError", "__version__"]
