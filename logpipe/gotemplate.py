"""The part of Go's text/template that Promtail pipelines use, compiled once at load.

Supported: text, `{{ .Key }}` (and `.Value`, `.Entry`), `{{- -}}` trimming, comments,
string/raw-string/number/bool literals, pipelines with `|`, parenthesised calls,
`if / else if / else / end`, and the functions in FUNCTIONS (Promtail's own, Go's builtins
and a few of sprig's). Anything else (range, with, define, variables, unknown functions) is
refused when the template is parsed, never silently ignored.

Template data is a dict of strings, as Promtail gives it; a missing key prints "<no value>".
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable

NO_VALUE = "<no value>"
_MISSING = object()


class TemplateError(ValueError):
    """A template that cannot be parsed (at load time) or executed (for one entry)."""


# ---- functions -----------------------------------------------------------------------------

def _s(v: Any) -> str:
    if v is _MISSING or v is None:
        raise TemplateError("invalid value; expected string")
    if not isinstance(v, str):
        raise TemplateError(f"wrong type for value; expected string; got {type(v).__name__}")
    return v


def _go_replace(s: Any, old: Any, new: Any, n: Any) -> str:
    s, old, new = _s(s), _s(old), _s(new)
    if not isinstance(n, int) or isinstance(n, bool):
        raise TemplateError("Replace: n must be an integer")
    if n < 0:
        n = -1
    if old == "" and n != 0:  # Go inserts `new` around every rune
        parts = list(s)
        out = new
        count = 1
        for c in parts:
            if n != -1 and count >= n:
                out += c
                continue
            out += c + new
            count += 1
        return out if n != -1 else new + new.join(parts) + (new if parts else "")
    return s.replace(old, new, n)


def _cutset_left(s: str, cutset: str) -> str:
    return s.lstrip(cutset) if cutset else s


def _regex_replace(literal: bool) -> Callable[..., str]:
    def fn(pattern: Any, s: Any, repl: Any) -> str:
        from logpipe.re2 import compile_re2
        from logpipe.relabel import expand

        try:
            rx = _REGEX_CACHE.get(pattern) or _REGEX_CACHE.setdefault(pattern, compile_re2(_s(pattern)))
        except ValueError as e:
            raise TemplateError(str(e)) from None
        s, repl = _s(s), _s(repl)
        if literal:
            return rx.sub(lambda m: repl, s)
        return rx.sub(lambda m: expand(repl, m), s)

    return fn


_REGEX_CACHE: dict[str, Any] = {}


def _truth(v: Any) -> bool:
    if v is _MISSING or v is None:
        return False
    if isinstance(v, (str, list, dict, tuple)):
        return len(v) > 0
    return bool(v)


def _cmp_args(a: Any, b: Any) -> tuple[Any, Any]:
    if a is _MISSING or b is _MISSING:
        raise TemplateError("incompatible types for comparison (missing value)")
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        if type(a) is not type(b):
            raise TemplateError("incompatible types for comparison")
    elif isinstance(a, num) != isinstance(b, num) or isinstance(a, str) != isinstance(b, str):
        raise TemplateError("incompatible types for comparison")
    return a, b


def _eq(a: Any, *bs: Any) -> bool:
    if not bs:
        raise TemplateError("missing argument for comparison")
    for b in bs:
        x, y = _cmp_args(a, b)
        if x == y:
            return True
    return False


def _order(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def fn(a: Any, b: Any) -> bool:
        x, y = _cmp_args(a, b)
        if isinstance(x, bool):
            raise TemplateError("invalid type for comparison")
        return op(x, y)

    return fn


def _default(d: Any, *given: Any) -> Any:
    """sprig's default: the given value unless it is empty, else the default."""
    if not given:
        return d
    v = given[0]
    return v if _truth(v) else d


def _go_print(*args: Any) -> str:
    out = ""
    for i, a in enumerate(args):
        # Go's fmt.Sprint adds a space between operands when neither is a string
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += show(a)
    return out


_PRINTF_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([svdqfgtx%])")


def _printf(fmt: Any, *args: Any) -> str:
    fmt = _s(fmt)
    it = iter(args)

    def sub(m: re.Match[str]) -> str:
        flags, width, prec, verb = m.groups()
        if verb == "%":
            return "%"
        try:
            a = next(it)
        except StopIteration:
            return f"%!{verb}(MISSING)"
        if verb in "sv":
            text = show(a)
            if prec is not None:
                text = text[: int(prec)]
        elif verb == "q":
            text = '"' + show(a).replace("\\", "\\\\").replace('"', '\\"') + '"'
        elif verb == "d":
            text = str(int(a)) if isinstance(a, (int, float)) and not isinstance(a, bool) else f"%!d({show(a)})"
        elif verb in "fg":
            text = format(float(a), f".{prec or 6}f") if verb == "f" else show(float(a))
        elif verb == "t":
            text = show(a)
        else:  # x
            text = a.encode().hex() if isinstance(a, str) else format(int(a), "x")
        if width:
            text = text.ljust(int(width)) if "-" in flags else text.rjust(int(width), "0" if "0" in flags else " ")
        return text

    return _PRINTF_VERB.sub(sub, fmt)


def _len(v: Any) -> int:
    if isinstance(v, (str, list, dict)):
        return len(v.encode()) if isinstance(v, str) else len(v)
    raise TemplateError("len of invalid value")


def _hash(algo: Callable[[bytes], Any]) -> Callable[[Any, Any], str]:
    return lambda salt, s: algo((_s(salt) + _s(s)).encode()).hexdigest()


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # Promtail's own
    "ToLower": lambda s: _s(s).lower(),
    "ToUpper": lambda s: _s(s).upper(),
    "Replace": _go_replace,
    "Trim": lambda s, cut: _s(s).strip(_s(cut)),
    "TrimLeft": lambda s, cut: _s(s).lstrip(_s(cut)),
    "TrimRight": lambda s, cut: _s(s).rstrip(_s(cut)),
    "TrimPrefix": lambda s, p: _s(s)[len(_s(p)):] if _s(s).startswith(_s(p)) else _s(s),
    "TrimSuffix": lambda s, p: _s(s)[: len(_s(s)) - len(_s(p))] if _s(p) and _s(s).endswith(_s(p)) else _s(s),
    "TrimSpace": lambda s: _s(s).strip(" \t\n\r\v\f\u0085\u00a0"),
    "Hash": _hash(hashlib.sha3_256),
    "Sha2Hash": _hash(hashlib.sha256),
    "regexReplaceAll": _regex_replace(literal=False),
    "regexReplaceAllLiteral": _regex_replace(literal=True),
    # Go's builtins
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1]),
    "not": lambda a: not _truth(a),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _order(lambda a, b: a < b),
    "le": _order(lambda a, b: a <= b),
    "gt": _order(lambda a, b: a > b),
    "ge": _order(lambda a, b: a >= b),
    "len": _len,
    "print": _go_print,
    "printf": _printf,
    # sprig's (Promtail registers all of sprig; these are the ones pipelines use)
    "default": _default,
    "lower": lambda s: _s(s).lower(),
    "upper": lambda s: _s(s).upper(),
    "trim": lambda s: _s(s).strip(),
    "contains": lambda sub, s: _s(sub) in _s(s),
    "hasPrefix": lambda p, s: _s(s).startswith(_s(p)),
    "hasSuffix": lambda p, s: _s(s).endswith(_s(p)),
    "trimPrefix": lambda p, s: _s(s)[len(_s(p)):] if _s(s).startswith(_s(p)) else _s(s),
    "trimSuffix": lambda p, s: _s(s)[: len(_s(s)) - len(_s(p))] if _s(p) and _s(s).endswith(_s(p)) else _s(s),
    "replace": lambda old, new, s: _s(s).replace(_s(old), _s(new)),
    "quote": lambda *a: " ".join('"' + show(x).replace("\\", "\\\\").replace('"', '\\"') + '"' for x in a),
}
# `and`/`or` with no argument are parse errors in Go; guarded in the parser by arity checks
_MIN_ARGS = {"and": 1, "or": 1, "eq": 2, "ne": 2, "lt": 2, "le": 2, "gt": 2, "ge": 2, "not": 1, "len": 1,
             "printf": 1, "default": 1}


def show(v: Any) -> str:
    """How Go's template prints a value."""
    if v is _MISSING or v is None:
        return NO_VALUE
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_g(v)
    return str(v)


def _go_g(v: float) -> str:
    """Go's %v for float64: shortest repr, exponent form below 1e-4 or from 1e21."""
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    r = repr(v)
    mant, _, exp = r.partition("e")
    if not exp:
        if abs(v) >= 1e21 or (v != 0 and abs(v) < 1e-4):
            r = format(v, ".17g")
            mant, _, exp = repr(float(r)).partition("e")
        else:
            return r[:-2] if r.endswith(".0") else r
    if not exp:
        return mant
    e = int(exp)
    if mant.endswith(".0"):
        mant = mant[:-2]
    return f"{mant}e{'+' if e >= 0 else '-'}{abs(e):02d}"


# ---- parsing -------------------------------------------------------------------------------

@dataclass
class Field:
    name: str


@dataclass
class Literal:
    value: Any


@dataclass
class Call:
    fn: str
    args: list[Any]


@dataclass
class Pipe:
    cmds: list[Any]  # each a Field, Literal, Call or Pipe (parenthesised); later ones get the prior value


@dataclass
class If:
    branches: list[tuple[Pipe, list[Any]]]
    otherwise: list[Any]


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)|(?P<num>[+-]?(?:0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+))"""
    r"""|(?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[|()])|(?P<var>\$\w*))""",
    re.S,
)
_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}


class Template:
    """A parsed template; `render(data)` runs it on one dict of strings."""

    def __init__(self, text: str):
        self.text = text
        self.fields: set[str] = set()
        self.reads_all = False  # `.` alone, or `index .`: depends on every value
        self.body = self._parse(text)

    # -- tokenising
    def _parse(self, text: str) -> list[Any]:
        items: list[tuple[str, Any]] = []  # ("text", s) or ("action", src)
        pos = 0
        for m in _ACTION.finditer(text):
            chunk = text[pos : m.start()]
            if m.group(1):
                chunk = chunk.rstrip(" \t\r\n")
            if items and items[-1][0] == "trim_next":
                items.pop()
                chunk = chunk.lstrip(" \t\r\n")
            items.append(("text", chunk))
            items.append(("action", m.group(2).strip(), m.start()))
            if m.group(3):
                items.append(("trim_next", None))
            pos = m.end()
        tail = text[pos:]
        if items and items[-1][0] == "trim_next":
            items.pop()
            tail = tail.lstrip(" \t\r\n")
        if "{{" in tail:
            raise TemplateError(f"unclosed action at position {text.index('{{', pos)}")
        items.append(("text", tail))
        self._items = [i for i in items if not (i[0] == "text" and i[1] == "")]
        self._i = 0
        body, stop = self._block(top=True)
        return body

    def _block(self, top: bool = False) -> tuple[list[Any], str | None]:
        out: list[Any] = []
        while self._i < len(self._items):
            item = self._items[self._i]
            self._i += 1
            if item[0] == "text":
                out.append(item[1])
                continue
            src, at = item[1], item[2]
            if src.startswith("/*"):
                if not src.endswith("*/"):
                    raise TemplateError(f"unclosed comment at position {at}")
                continue
            word = src.split(None, 1)[0] if src else ""
            if word == "if":
                out.append(self._if(src[2:], at))
            elif word in ("else", "end"):
                if top:
                    raise TemplateError(f"unexpected {{{{{word}}}}} at position {at}")
                self._i -= 1
                return out, word
            elif word in _KEYWORDS:
                raise TemplateError(f"{{{{{word}}}}} is not supported by logpipe's templates (position {at})")
            else:
                out.append(self._pipeline(src, at))
        if not top:
            raise TemplateError("unexpected end of template: missing {{end}}")
        return out, None

    def _if(self, cond: str, at: int) -> If:
        branches = [(self._pipeline(cond, at), None)]
        otherwise: list[Any] = []
        body, stop = self._block()
        branches[0] = (branches[0][0], body)
        while stop == "else":
            src, at2 = self._items[self._i][1], self._items[self._i][2]
            self._i += 1
            rest = src[4:].strip()
            if rest.startswith("if ") or rest == "if":
                cond_pipe = self._pipeline(rest[2:], at2)
                body, stop = self._block()
                branches.append((cond_pipe, body))
            elif rest:
                raise TemplateError(f"unexpected {rest!r} after else at position {at2}")
            else:
                otherwise, stop = self._block()
                if stop == "else":
                    raise TemplateError(f"{{{{else}}}} after {{{{else}}}} at position {at2}")
        self._i += 1  # the {{end}}
        return If(branches, otherwise)

    def _pipeline(self, src: str, at: int) -> Pipe:
        tokens = self._tokens(src, at)
        pos = [0]
        pipe = self._pipe(tokens, pos, at)
        if pos[0] != len(tokens):
            raise TemplateError(f"unexpected {tokens[pos[0]][1]!r} in action at position {at}")
        return pipe

    def _tokens(self, src: str, at: int) -> list[tuple[str, str]]:
        out, pos = [], 0
        src = src.rstrip()
        while pos < len(src):
            m = _TOKEN.match(src, pos)
            if m is None or m.end() == pos:
                raise TemplateError(f"unexpected {src[pos:].strip()[:20]!r} in action at position {at}")
            kind = m.lastgroup
            if kind == "var" or ":=" in src[m.end() : m.end() + 3]:
                raise TemplateError(f"variables are not supported by logpipe's templates (position {at})")
            out.append((kind, m.group(kind)))
            pos = m.end()
        return out

    def _pipe(self, tokens: list[tuple[str, str]], pos: list[int], at: int) -> Pipe:
        cmds = [self._command(tokens, pos, at)]
        while pos[0] < len(tokens) and tokens[pos[0]] == ("punct", "|"):
            pos[0] += 1
            cmd = self._command(tokens, pos, at)
            if not isinstance(cmd, Call):
                if isinstance(cmd, Literal) or isinstance(cmd, Field):
                    raise TemplateError(f"non executable command in pipeline stage at position {at}")
            cmds.append(cmd)
        if not cmds or cmds[0] is None:
            raise TemplateError(f"missing value for command at position {at}")
        return Pipe(cmds)

    def _command(self, tokens: list[tuple[str, str]], pos: list[int], at: int) -> Any:
        if pos[0] >= len(tokens):
            raise TemplateError(f"missing value for command at position {at}")
        kind, text = tokens[pos[0]]
        if kind == "ident" and text not in ("true", "false", "nil"):
            if text not in FUNCTIONS:
                raise TemplateError(f'function "{text}" not defined (position {at})')
            pos[0] += 1
            args = []
            while pos[0] < len(tokens) and tokens[pos[0]] not in (("punct", "|"), ("punct", ")")):
                args.append(self._operand(tokens, pos, at))
            return Call(text, args)
        return self._operand(tokens, pos, at)

    def _operand(self, tokens: list[tuple[str, str]], pos: list[int], at: int) -> Any:
        kind, text = tokens[pos[0]]
        pos[0] += 1
        if kind == "punct" and text == "(":
            inner = self._pipe(tokens, pos, at)
            if pos[0] >= len(tokens) or tokens[pos[0]] != ("punct", ")"):
                raise TemplateError(f"unclosed left paren at position {at}")
            pos[0] += 1
            return inner
        if kind == "field":
            if text == ".":
                self.reads_all = True
                return Field("")
            parts = text[1:].split(".")
            if len(parts) > 1:
                raise TemplateError(f"{text}: nested fields are not supported (extracted values are strings)")
            if parts[0] not in ("Value", "Entry"):
                self.fields.add(parts[0])
            return Field(parts[0])
        if kind == "str":
            return Literal(_go_unquote(text, at))
        if kind == "raw":
            return Literal(text[1:-1])
        if kind == "num":
            t = text.replace("_", "")
            return Literal(int(t, 0) if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)", t) else float(t))
        if kind == "ident":
            if text in ("true", "false"):
                return Literal(text == "true")
            if text == "nil":
                raise TemplateError(f"nil is not a command (position {at})")
            if text not in FUNCTIONS:
                raise TemplateError(f'function "{text}" not defined (position {at})')
            return Call(text, [])
        raise TemplateError(f"unexpected {text!r} in operand at position {at}")

    # -- running
    def render(self, data: dict[str, str]) -> str:
        """Execute on `data`; raises TemplateError where Go's execution fails."""
        out: list[str] = []
        self._run(self.body, data, out)
        return "".join(out)

    def _run(self, nodes: list[Any], data: dict[str, str], out: list[str]) -> None:
        for node in nodes:
            if type(node) is str:
                out.append(node)
            elif type(node) is If:
                for cond, body in node.branches:
                    if _truth(self._eval(cond, data)):
                        self._run(body, data, out)
                        break
                else:
                    self._run(node.otherwise, data, out)
            else:
                out.append(show(self._eval(node, data)))

    def _eval(self, node: Any, data: dict[str, str], piped: Any = _MISSING, has_piped: bool = False) -> Any:
        t = type(node)
        if t is Field:
            if node.name == "":
                return data
            return data.get(node.name, _MISSING)
        if t is Literal:
            return node.value
        if t is Pipe:
            value, has = _MISSING, False
            for cmd in node.cmds:
                value = self._eval(cmd, data, value, has)
                has = True
            return value
        args = [self._eval(a, data) for a in node.args]
        if has_piped:
            args.append(piped)
        need = _MIN_ARGS.get(node.fn, 0)
        if len(args) < need:
            raise TemplateError(f"wrong number of args for {node.fn}")
        try:
            return FUNCTIONS[node.fn](*args)
        except TypeError as e:
            raise TemplateError(f"wrong number of args for {node.fn}: {e}") from None


def _go_unquote(text: str, at: int) -> str:
    body = text[1:-1]
    try:
        return body.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1").decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return body.encode().decode("unicode_escape")


def compile_template(text: str) -> Template:
    return Template(text)
