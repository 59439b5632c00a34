"""Compiling the RE2 patterns Promtail and Prometheus configs are written in.

Python's `re` runs the common RE2 subset faster, so it is tried first; the `regex` module
covers what `re` lacks (`(?<name>…)`, POSIX classes, `\\pL`). Constructs RE2 refuses
(backreferences, lookaround) are refused here too, so a config that loads in logpipe loads
in Promtail and means the same.
"""
from __future__ import annotations

import re
from typing import Any

import regex

_RE2_ONLY: list[tuple[Any, Any]] = [
    (re.compile(r"\\z"), r"\\Z"),  # RE2's end of text is \z; Python spells it \Z
    # RE2's \x{200B} (any number of hex digits) is Python's \U0000200b
    (re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}"), lambda m: "\\U%08x" % int(m.group(1), 16)),
]
_UNSUPPORTED = re.compile(r"\(\?(?:[=!]|<[=!])|\\[1-9]")


def translate(pattern: str) -> str:
    """Rewrite RE2-only spellings into Python syntax (`\\z`, `\\x{hex}`)."""
    out = pattern
    for rx, repl in _RE2_ONLY:
        out = rx.sub(repl, out)
    return out


def compile_re2(pattern: str, flags: int = 0) -> Any:
    """Compile an RE2 pattern; raise ValueError with a message a user can act on."""
    bad = _scan_unsupported(pattern)
    if bad:
        raise ValueError(f"invalid regex {pattern!r}: {bad} is not supported by RE2 (Promtail's regex engine)")
    py = translate(pattern)
    try:
        return re.compile(py, flags)
    except re.error:
        pass
    try:
        return regex.compile(py, flags | regex.VERSION0)
    except regex.error as e:
        raise ValueError(f"invalid regex {pattern!r}: {e}") from None


def _scan_unsupported(pattern: str) -> str | None:
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if not in_class and i + 1 < len(pattern) and pattern[i + 1] in "123456789":
                return f"backreference \\{pattern[i + 1]}"
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "^":
                i += 1
            if pattern[i + 1 : i + 2] == "]":
                i += 1
        elif pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            return "lookaround " + pattern[i : i + (4 if pattern[i + 2] == "<" else 3)]
        i += 1
    return None
