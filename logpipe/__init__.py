"""logpipe: a Promtail-compatible log agent with a columnar, batch-at-a-time pipeline."""
from __future__ import annotations

import os

# numpy's BLAS would spread a batch's small matrix products over every core and leave its
# threads spinning: CPU taken from the host's real work for no gain at these sizes. Read by
# OpenBLAS when numpy loads it, so set before anything imports numpy; a user's own value wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"

from logpipe.batch import Batch, LabelSet  # noqa: E402
from logpipe.errors import ConfigError, LogpipeError, SinkError, SourceError  # noqa: E402

__all__ = ["Batch", "LabelSet", "ConfigError", "LogpipeError", "SinkError", "SourceError", "__version__"]
