"""Prometheus relabeling (`relabel_configs`), run once per distinct input label set."""
from __future__ import annotations

import hashlib
import re
from typing import Any, Sequence

from logpipe.batch import LabelSet
from logpipe.config.decode import LABEL_NAME
from logpipe.re2 import compile_re2

_TEMPLATE_REF = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z0-9_]+)|(\$))")


def compile_anchored(pattern: str) -> Any:
    """Prometheus anchors relabel regexes at both ends."""
    compile_re2(pattern)  # so an error message quotes the user's pattern, not ours
    return compile_re2(f"^(?:{pattern})$")


def expand(template: str, match: re.Match[str]) -> str:
    """Go's Regexp.Expand: `$1`, `${1}`, `$name`, `${name}`, `$$`; an unknown group is ''."""

    def sub(m: re.Match[str]) -> str:
        if m.group(3):
            return "$"
        name = m.group(1) if m.group(1) is not None else m.group(2)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:
            return ""
        return value or ""

    return _TEMPLATE_REF.sub(sub, template)


class Relabeler(dict):
    """Applies a list of relabel rules, memoised per input LabelSet.

    Use `list(map(relabeler.__getitem__, labels))`: a label set seen before is a C-level
    dict hit; only a new one runs the rules. The result drops labels starting with `__`;
    None means the entry is dropped.
    """

    def __init__(self, rules: Sequence[Any], cache_size: int = 100_000):
        super().__init__()
        self.rules = list(rules)
        self._cache_size = cache_size

    def __missing__(self, labels: LabelSet) -> LabelSet | None:
        out = self._apply(labels.as_dict())
        result = None if out is None else LabelSet.of({k: v for k, v in out.items() if not k.startswith("__")})
        if len(self) >= self._cache_size:
            self.clear()
        self[labels] = result
        return result

    def __call__(self, labels: LabelSet) -> LabelSet | None:
        return self[labels]

    def _apply(self, lb: dict[str, str]) -> dict[str, str] | None:
        for r in self.rules:
            val = r.separator.join(lb.get(name, "") for name in r.source_labels)
            action = r.action
            rx = r.compiled
            if action == "drop":
                if rx.match(val):
                    return None
            elif action == "keep":
                if not rx.match(val):
                    return None
            elif action == "dropequal":
                if lb.get(r.target_label, "") == val:
                    return None
            elif action == "keepequal":
                if lb.get(r.target_label, "") != val:
                    return None
            elif action == "replace":
                m = rx.match(val)
                if m is None:
                    continue
                target = expand(r.target_label, m)
                if not LABEL_NAME.fullmatch(target):
                    continue
                res = expand(r.replacement, m)
                if res:
                    lb[target] = res
                else:
                    lb.pop(target, None)
            elif action in ("lowercase", "uppercase"):
                lb[r.target_label] = val.lower() if action == "lowercase" else val.upper()
            elif action == "hashmod":
                digest = hashlib.md5(val.encode()).digest()
                lb[r.target_label] = str(int.from_bytes(digest[8:], "big") % r.modulus)
            elif action == "labelmap":
                for name, value in list(lb.items()):
                    m = rx.match(name)
                    if m is not None:
                        lb[expand(r.replacement, m)] = value
            elif action == "labeldrop":
                for name in [n for n in lb if rx.match(n)]:
                    del lb[name]
            elif action == "labelkeep":
                for name in [n for n in lb if not rx.match(n)]:
                    del lb[name]
        return lb
