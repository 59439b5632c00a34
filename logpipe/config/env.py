"""`${VAR}` and `${VAR:-default}` expansion, as Promtail's -config.expand-env does it."""
from __future__ import annotations

import os
import re
from typing import Mapping

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$")


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace ${VAR} with its value (empty if unset) and ${VAR:-default} with the default
    when VAR is unset or empty; `$$` stands for a literal `$`."""
    env = os.environ if environ is None else environ

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        value = env.get(m.group(1), "")
        if value == "" and m.group(2) is not None:
            return m.group(2)
        return value

    return _REF.sub(sub, text)
