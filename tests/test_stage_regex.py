"""regex stage: Promtail's semantics, and the one-findall-per-batch path equal to a search per line."""
from __future__ import annotations

import random
import re

import pytest

from logpipe.errors import ConfigError
from logpipe.testing import build_pipeline, run_pipeline

DOCS_EXPR = r"^(?s)(?P<time>\S+?) (?P<stream>stdout|stderr) (?P<flags>\S+?) (?P<content>.*)$"


@pytest.mark.parametrize(
    "expression, line, expected",
    [
        # Promtail docs (CRI): with (?s) — a pattern that cannot be joined, searched line by line
        (DOCS_EXPR, "2019-01-01T01:00:00.000000001Z stderr P i'm a log message!",
         {"time": "2019-01-01T01:00:00.000000001Z", "stream": "stderr", "flags": "P", "content": "i'm a log message!"}),
        (r"^(?P<year>\d+)", "2019-01-01", {"year": "2019"}),
        # unanchored, leftmost match
        (r"level=(?P<level>\w+)", "a level=info b level=warn", {"level": "info"}),
        # a named group that does not take part is set to ""
        (r"(?P<a>x)|(?P<b>y)", "y", {"a": "", "b": "y"}),
        # no match: nothing extracted
        (r"(?P<a>zzz)", "abc", {}),
        # Go/Python's (?<name>…) syntax
        (r"(?<word>\w+)", "hello world", {"word": "hello"}),
    ],
)
def test_regex(expression, line, expected):
    r = run_pipeline(f"- regex: {{expression: '{expression}'}}", [line])
    assert r.extracted == [expected]


def test_source_and_no_match_count():
    stages = "- regex: {expression: '(?P<k>\\w+)=(?P<v>\\w+)'}\n- regex: {expression: '^(?P<kk>.)', source: k}"
    r = run_pipeline(stages, ["a=b", "nothing here!"])
    assert r.extracted[0] == {"k": "a", "v": "b", "kk": "a"}
    assert r.counter("logpipe_stage_errors_total", stage="regex", reason="no_match") == 1


def reference(expression: str, lines: list[str]) -> list[dict]:
    rx = re.compile(expression)
    out = []
    for line in lines:
        m = rx.search(line)
        out.append({} if m is None else {k: (v or "") for k, v in m.groupdict().items()})
    return out


PATTERNS = [
    r"(?P<a>\d+)",
    r"^(?P<ip>\S+) \S+ (?P<user>\S+) \[(?P<t>[^\]]+)\]",
    r"(?P<x>[^;]*);(?P<y>\s*\w*)",  # [^;] and \s could run into the next line when joined
    r"(?P<e>a*)",                   # can match the empty string
    r"(?P<w>\w+)\s+(?P<z>\w+)$",
    r"^$(?P<empty>)",
]


@pytest.mark.parametrize("expression", PATTERNS)
def test_batched_search_equals_a_search_per_line(expression):
    rnd = random.Random(1)
    alphabet = "ab1 2;[]x-\t"
    lines = ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 12))) for _ in range(3000)]
    lines += ["1.2.3.4 - bob [01/Jan/2026:00:00:00 +0000] GET", "a;", ";", "", "x y"]
    r = run_pipeline(f"- regex: {{expression: '{expression}'}}", lines)
    assert r.extracted == reference(expression, lines)


def test_entries_with_newlines_are_searched_one_by_one():
    r = run_pipeline("- regex: {expression: '(?P<a>b.*)'}", ["a\nb c", "bx"])
    assert r.extracted == [{"a": "b c"}, {"a": "bx"}]


@pytest.mark.parametrize("stages, fragment", [
    ("- regex: {expression: '(?P<a>'}", "invalid regex"),
    ("- regex: {expression: '(a)'}", "no named capture group"),
    ("- regex: {expression: '(?P<a>x)(?=y)'}", "not supported by RE2"),
    ("- regex: {expression: '(?P<a>x)\\1'}", "backreference"),
])
def test_config_errors(stages, fragment):
    with pytest.raises(ConfigError) as e:
        build_pipeline(stages)
    assert any(fragment in i.message and i.path.endswith("regex.expression") for i in e.value.issues), e.value.issues
