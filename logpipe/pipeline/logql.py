"""The LogQL subset Promtail's `match` stage accepts: a stream selector with chained line filters.

`{app="api", level=~"warn|error"} |= "timeout" !~ "retry"`: label matchers `=`, `!=`, `=~`,
`!~` (regexes anchored at both ends, as in Prometheus) and line filters `|=`, `!=`, `|~`, `!~`
(substring or unanchored regex). The tokenizer follows Go's text/scanner and errors read like
Promtail's parser (`parse error at line 1, col 6: literal not terminated`), positions being the
1-based line and column of the offending token.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import repeat
from operator import not_
from typing import Any, Iterator

from logpipe.re2 import compile_re2

# Tokens that are their own text; two-character ones are matched before one-character ones,
# as the Go lexer peeks one character past each token.
_OPERATORS = frozenset(("=~", "!=", "!~", "|=", "|~", "=", "{", "}", ",", "."))
_MATCH_OPS = ("=", "!=", "=~", "!~")
_FILTER_OPS = ("|~", "|=", "!~", "!=")
# goyacc lists expected tokens in declaration order (IDENTIFIER STRING ... = != =~ !~ { } , . |~ |=).
_EXPECT_OP = "= or != or =~ or !~"
_EXPECT_FILTER = "!= or !~ or |~ or |="

_IDENT = re.compile(r"[^\W\d]\w*")
_NUMBER = re.compile(r"0[xXbBoO][0-9a-fA-F_]*|\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?")
_ESCAPE = re.compile(r"""\\(?:[abfnrtv\\'"]|[0-7]{3}|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})""")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", "'": "'", '"': '"'}


class SelectorError(ValueError):
    """A selector that does not parse; str() gives Promtail's wording with the position."""

    def __init__(self, line: int, col: int, message: str):
        super().__init__(f"parse error at line {line}, col {col}: {message}")
        self.line = line
        self.col = col


@dataclass
class Token:
    kind: str  # "IDENTIFIER", "STRING", "$end", or the operator text (as goyacc names them)
    text: str
    line: int
    col: int


class _Lexer:
    def __init__(self, src: str):
        self.src = src
        self.pos = 0
        self.line = 1
        self.line_start = 0

    def _advance_to(self, end: int) -> None:
        chunk = self.src[self.pos:end]
        nl = chunk.count("\n")
        if nl:
            self.line += nl
            self.line_start = self.pos + chunk.rfind("\n") + 1
        self.pos = end

    def next(self) -> Token:
        src = self.src
        while True:  # skip white space and comments, as text/scanner does
            while self.pos < len(src) and src[self.pos] in " \t\r\n":
                self._advance_to(self.pos + 1)
            if src.startswith("//", self.pos):
                end = src.find("\n", self.pos)
                self._advance_to(len(src) if end < 0 else end)
                continue
            if src.startswith("/*", self.pos):
                end = src.find("*/", self.pos + 2)
                if end < 0:
                    line, col = self.line, self.pos - self.line_start + 1
                    raise SelectorError(line, col, "comment not terminated")
                self._advance_to(end + 2)
                continue
            break
        line, col = self.line, self.pos - self.line_start + 1
        if self.pos >= len(src):
            return Token("$end", "", line, col)
        c = src[self.pos]
        if c == '"':
            return Token("STRING", self._quoted(line, col), line, col)
        if c == "`":
            end = src.find("`", self.pos + 1)
            if end < 0:
                raise SelectorError(line, col, "literal not terminated")
            text = src[self.pos + 1:end].replace("\r", "")
            self._advance_to(end + 1)
            return Token("STRING", text, line, col)
        if c == "'":  # a Go char literal: not a string, so the parser sees an IDENTIFIER
            end = src.find("'", self.pos + 1)
            nl = src.find("\n", self.pos + 1)
            if end < 0 or 0 <= nl < end:
                raise SelectorError(line, col, "literal not terminated")
            text = src[self.pos:end + 1]
            self._advance_to(end + 1)
            return Token("IDENTIFIER", text, line, col)
        for rx in (_IDENT, _NUMBER):
            m = rx.match(src, self.pos)
            if m:
                self._advance_to(m.end())
                return Token("IDENTIFIER", m.group(), line, col)
        two = src[self.pos:self.pos + 2]
        if len(two) == 2 and two in _OPERATORS:
            self._advance_to(self.pos + 2)
            return Token(two, two, line, col)
        self._advance_to(self.pos + 1)
        return Token(c if c in _OPERATORS else "IDENTIFIER", c, line, col)

    def _quoted(self, line: int, col: int) -> str:
        src = self.src
        i = self.pos + 1
        out: list[str] = []
        while True:
            if i >= len(src) or src[i] == "\n":
                raise SelectorError(line, col, "literal not terminated")
            c = src[i]
            if c == '"':
                break
            if c == "\\":
                m = _ESCAPE.match(src, i)
                if m is None:
                    raise SelectorError(line, col, "invalid char escape")
                out.append(_unescape(m.group()))
                i = m.end()
                continue
            out.append(c)
            i += 1
        self._advance_to(i + 1)
        return "".join(out)


def _unescape(esc: str) -> str:
    kind = esc[1]
    if kind in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[kind]
    if kind in "xuU":
        code = int(esc[2:], 16)
    else:
        code = int(esc[1:], 8)
    if kind in "x01234567":
        # \\x and octal escapes are bytes in Go; a lone byte above 0x7f is not valid text
        return chr(code) if code < 0x80 else "\ufffd"
    if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
        return "\ufffd"
    return chr(code)


@dataclass
class LabelMatcher:
    name: str
    op: str
    value: str
    regex: Any = None

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        found = self.regex.fullmatch(value) is not None
        return found if self.op == "=~" else not found


@dataclass
class LineFilter:
    op: str
    text: str
    regex: Any = None

    def passes(self, lines: list[str]) -> Iterator[Any]:
        """Whether each line passes (truthy), computed by C-level maps."""
        if self.op in ("|=", "!="):
            if self.text and self.text not in "\n".join(lines):  # one search rules out the batch
                return repeat(self.op == "!=", len(lines))
            found = map(str.__contains__, lines, repeat(self.text))
        else:
            found = map(self.regex.search, lines)
        return found if self.op in ("|=", "|~") else map(not_, found)


@dataclass
class Selector:
    matchers: list[LabelMatcher]
    filters: list[LineFilter]

    def matches_labels(self, labels: Any) -> bool:
        """`labels` is a LabelSet; a missing label reads as "" (Prometheus matcher semantics)."""
        get = labels.get
        return all(m.matches(get(m.name, "")) for m in self.matchers)


def parse_selector(text: str) -> Selector:
    """Parse a match stage selector; raise SelectorError (with position) when it does not parse."""
    lex = _Lexer(text)
    tok = lex.next()

    def unexpected(t: Token, expecting: str) -> SelectorError:
        return SelectorError(t.line, t.col, f"syntax error: unexpected {t.kind}, expecting {expecting}")

    if tok.kind != "{":
        raise unexpected(tok, "{")
    matchers: list[LabelMatcher] = []
    while True:
        name = lex.next()
        if name.kind != "IDENTIFIER":
            raise unexpected(name, "IDENTIFIER")
        op = lex.next()
        if op.kind not in _MATCH_OPS:
            raise unexpected(op, _EXPECT_OP)
        value = lex.next()
        if value.kind != "STRING":
            raise unexpected(value, "STRING")
        matcher = LabelMatcher(name.text, op.kind, value.text)
        if op.kind in ("=~", "!~"):
            matcher.regex = _compile(f"(?s:{value.text})", value.text, value)
        matchers.append(matcher)
        sep = lex.next()
        if sep.kind == "}":
            break
        if sep.kind != ",":
            raise unexpected(sep, "} or ,")
    filters: list[LineFilter] = []
    while True:
        tok = lex.next()
        if tok.kind == "$end":
            return Selector(matchers, filters)
        if tok.kind not in _FILTER_OPS:
            raise unexpected(tok, _EXPECT_FILTER)
        arg = lex.next()
        if arg.kind != "STRING":
            raise unexpected(arg, "STRING")
        filt = LineFilter(tok.kind, arg.text)
        if tok.kind in ("|~", "!~"):
            filt.regex = _compile(arg.text, arg.text, arg)
        filters.append(filt)


def _compile(pattern: str, shown: str, where: Token) -> Any:
    try:
        return compile_re2(pattern)
    except ValueError as e:
        detail = str(e).replace(repr(pattern), repr(shown))
        raise SelectorError(where.line, where.col, detail) from None
