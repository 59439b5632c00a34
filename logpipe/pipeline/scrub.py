"""The `scrub` stage: masks secrets with a built-in rule table, no regex needed from the user.

Promtail has no such stage (Alloy has loki.secretfilter). One Hyperscan scan over a batch finds
the entries each rule may match (see Prefilter); the exact regex runs only on those, so a batch
without secrets costs little more than that scan.
"""
from __future__ import annotations

import functools
import math
import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import hyperscan
import numpy as np
import yaml

from logpipe.batch import Batch, LabelSet
from logpipe.config.decode import Ctx, join
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import ValueCache
from logpipe.re2 import compile_re2, translate


@dataclass
class Rule:
    id: str
    regex: Any  # compiled; anchors (^ $ \\A \\Z) mean the start and end of one entry
    group: int | str = 0
    keywords: tuple[str, ...] = ()
    entropy: float = 0.0
    check: Callable[[str], bool] | None = None
    allow: tuple[Any, ...] = ()
    stopwords: tuple[str, ...] = ()
    lowercase: bool = False  # the regex is written for, and runs over, the lower-cased text
    not_after: Any = None  # compiled class of characters the match must not follow
    after: Any = None  # compiled class of characters the match must follow


def luhn(text: str) -> bool:
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


CHECKS: dict[str, Callable[[str], bool]] = {"luhn": luhn}


def shannon_entropy(text: str) -> float:
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def builtin_rules() -> list[Rule]:
    data = yaml.safe_load(resources.files("logpipe.pipeline").joinpath("scrub_rules.yaml").read_text())
    return [
        Rule(r["id"], re.compile(r["regex"]), r.get("group", 0), tuple(r.get("keywords", ())),
             float(r.get("entropy", 0.0)), CHECKS[r["check"]] if "check" in r else None,
             lowercase=r.get("lowercase", False),
             not_after=re.compile(f"[{r['not_after']}]") if "not_after" in r else None,
             after=re.compile(f"[{re.escape(r['after'])}]") if "after" in r else None)
        for r in data["rules"]
    ]


BUILTIN_IDS = [r.id for r in builtin_rules()]


@dataclass
class ExtraRule:
    id: str
    regex: str
    group: str = "0"
    keywords: list[str] = field(default_factory=list)
    entropy: float = 0.0


@dataclass
class ScrubConfig:
    rules: list[str] | None = None
    extra: list[ExtraRule] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    replacement: str = "<REDACTED:{id}>"
    source: str = ""
    labels: bool = False
    gitleaks_config: str = ""

    def validate(self, ctx: Ctx, path: str) -> None:
        rules: list[Rule] = []
        builtin = {r.id: r for r in builtin_rules()}
        use_builtin = True
        if self.gitleaks_config:
            gl_path = Path(ctx.base_dir) / self.gitleaks_config
            try:
                gl_rules, use_builtin, gl_allow = load_gitleaks(gl_path)
            except ValueError as e:
                ctx.error(join(path, "gitleaks_config"), str(e))
                gl_rules, gl_allow = [], []
            rules.extend(gl_rules)
        else:
            gl_allow = []
        if use_builtin:
            for i, rid in enumerate(self.rules if self.rules is not None else BUILTIN_IDS):
                if rid not in builtin:
                    ctx.error(join(join(path, "rules"), i), f"unknown rule {rid!r}; built-in rules: {', '.join(BUILTIN_IDS)}")
                else:
                    rules.append(builtin[rid])
        for i, x in enumerate(self.extra):
            p = join(join(path, "extra"), i)
            try:
                rx = compile_re2(x.regex)
            except ValueError as e:
                ctx.error(join(p, "regex"), str(e))
                continue
            group: int | str = int(x.group) if x.group.isdigit() else x.group
            if (isinstance(group, int) and group > rx.groups) or (isinstance(group, str) and group not in rx.groupindex):
                ctx.error(join(p, "group"), f"regex has no group {x.group!r}")
                continue
            rules.append(Rule(x.id, rx, group, tuple(k.lower() for k in x.keywords), x.entropy))
        allow = list(gl_allow)
        for i, a in enumerate(self.allow):
            try:
                allow.append(compile_re2(a))
            except ValueError as e:
                ctx.error(join(join(path, "allow"), i), str(e))
        try:
            self.replacement.format(id="x")
        except (KeyError, IndexError, ValueError):
            ctx.error(join(path, "replacement"), "replacement may only use {id}")
        self.compiled = rules
        self.allow_compiled = allow

    def build(self, env: StageEnv) -> "ScrubStage":
        return ScrubStage(self, env)


class Prefilter:
    """Every rule's regex compiled by Hyperscan in prefilter mode, which matches a superset of
    what the regex matches: one scan over a batch's text tells which entries each rule may
    match, so the exact (Python) regex runs only there. Most batches hold no secret at all.

    Two databases: one for ASCII text, where it has Python's semantics, and a Unicode one (UTF-8,
    Unicode classes) for the rest; neither for text with the separators \\x1c-\\x1f, which
    only Python counts as whitespace. A rule Hyperscan cannot compile even as a prefilter is not covered:
    it runs over the whole batch."""

    def __init__(self, rules: list[Rule]):
        key = tuple((r.regex.pattern, r.regex.flags, r.lowercase) for r in rules)
        self.ascii, self.unicode, self.covered = _prefilter_databases(key)

    def scan(self, text: str, texts: list[str]) -> dict[int, list[int]] | None:
        """For each covered rule that may match, the entries where; None if the text cannot be
        scanned (lone surrogates are not UTF-8)."""
        if any(c in text for c in "\x1c\x1d\x1e\x1f"):
            return None  # whitespace to Python's \\s, not to Hyperscan's: no prefilter for this batch
        try:
            data = text.encode()
        except UnicodeEncodeError:
            return None
        db = self.ascii if text.isascii() else self.unicode
        if db is None:
            return {}
        ids: list[int] = []
        ends: list[int] = []

        def on_match(rule: int, start: int, end: int, flags: int, context: object) -> None:
            ids.append(rule)
            ends.append(end)

        db.scan(data, match_event_handler=on_match)
        if not ids:
            return {}
        bounds = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
        if len(bounds) != len(texts) - 1:  # an entry holds a newline: entries end elsewhere
            bounds = np.cumsum([len(t.encode()) + 1 for t in texts]) - 1
        # the entry holding a match's last byte: the first whose end is at or after it
        where = np.searchsorted(bounds, np.asarray(ends) - 1).tolist()
        found: dict[int, set[int]] = {}
        for rule, entry in zip(ids, where):
            found.setdefault(rule, set()).add(min(entry, len(texts) - 1))
        return {rule: sorted(entries) for rule, entries in found.items()}


# a character class (kept), an escape, or a bounded repeat
_PREFILTER_TOKENS = re.compile(r"\[\^?\]?(?:\\.|[^\]])*\]|\\.|\{(\d+),\d+\}")


def _for_prefilter(pattern: str) -> bytes:
    """The pattern widened to what the prefilter needs. Entries are scanned joined by newlines,
    so the start and end of the text (\\A, \\Z, \\z) become an entry's, which ^ and $ are in
    multi-line mode; and a bounded repeat {m,n} becomes {m,}: a superset, and far quicker to
    compile over Unicode classes."""
    def widen(m: re.Match[str]) -> str:
        t = m.group(0)
        if m.group(1) is not None:
            return "{" + m.group(1) + ",}"
        return {"\\A": "^", "\\Z": "$", "\\z": "$"}.get(t, t)

    return _PREFILTER_TOKENS.sub(widen, pattern).encode()


@functools.lru_cache(maxsize=64)
def _prefilter_databases(rules: tuple[tuple[str, int, bool], ...]) -> tuple[Any, Any, frozenset[int]]:
    """(ASCII database, Unicode database, indices of the rules both cover), compiled once per
    rule set: compiling takes a while, and every scrub stage with the built-in rules shares it."""
    def compile_all(mode: int) -> tuple[Any, set[int]]:
        flags = [mode | hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_MULTILINE | hyperscan.HS_FLAG_ALLOWEMPTY
                 | (hyperscan.HS_FLAG_CASELESS if lower or rflags & re.I else 0)
                 | (hyperscan.HS_FLAG_DOTALL if rflags & re.S else 0)
                 for _, rflags, lower in rules]
        patterns = [_for_prefilter(p) for p, _, _ in rules]
        ok = set(range(len(rules)))
        while ok:
            ids = sorted(ok)
            db = hyperscan.Database()
            try:
                db.compile(expressions=[patterns[i] for i in ids], ids=ids, elements=len(ids),
                           flags=[flags[i] for i in ids])
                return db, ok
            except hyperscan.error:  # find the ones it cannot take, and leave them out
                for i in ids:
                    try:
                        hyperscan.Database().compile(expressions=[patterns[i]], ids=[i], elements=1, flags=[flags[i]])
                    except hyperscan.error:
                        ok.discard(i)
                if len(ok) == len(ids):  # each alone compiles, together they do not: cover none
                    break
        return None, set()

    ascii_db, ascii_ok = compile_all(0)
    unicode_db, unicode_ok = compile_all(hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_UCP)
    return ascii_db, unicode_db, frozenset(ascii_ok & unicode_ok)


class Scrubber:
    """The masking itself, over a list of texts; counts masks per rule."""

    def __init__(self, rules: list[Rule], allow: list[Any], replacement: str, prefilter: bool = True):
        self.rules = rules
        self.allow = allow
        self.replacement = replacement
        self.marker = replacement.split("{id}")[0] or replacement
        self.prefilter = Prefilter(rules) if prefilter else None  # None: every rule over every entry
        # A rule the prefilter does not cover is tried once over the joined batch first; an
        # anchored one cannot be, since the batch's ends are not each entry's.
        self.gated = [prefilter and not _anchored(r.regex.pattern) for r in rules]

    def _rejects(self, rule: Rule, secret: str) -> bool:
        if not secret:
            return True
        if rule.entropy and shannon_entropy(secret) < rule.entropy:
            return True
        if rule.check is not None and not rule.check(secret):
            return True
        if any(a.search(secret) for a in self.allow) or any(a.search(secret) for a in rule.allow):
            return True
        return bool(rule.stopwords) and any(w in secret.lower() for w in rule.stopwords)

    def _mask(self, rule: Rule, text: str) -> tuple[str, int]:
        """Mask every secret of `rule` in one entry: (new text, masks)."""
        search = text
        if rule.lowercase:
            search = text.lower()
            if len(search) != len(text):  # a character whose lower case is longer: spans differ
                return self._mask(Rule(rule.id, re.compile(rule.regex.pattern, re.I), rule.group, rule.keywords,
                                       rule.entropy, rule.check, rule.allow, rule.stopwords, False,
                                       rule.not_after, rule.after), text)
        if rule.keywords:
            lower = search if rule.lowercase else text.lower()
            if not any(k in lower for k in rule.keywords):
                return text, 0
        pieces: list[str] = []
        pos = masks = 0
        repl = self.replacement.format(id=rule.id)
        for m in rule.regex.finditer(search):
            start, end = m.span(rule.group)
            if start < 0:
                continue
            s0 = m.start()
            if self.marker in text[s0 : m.end()]:  # overlaps what an earlier rule masked
                continue
            if rule.not_after is not None and s0 > 0 and rule.not_after.match(text, s0 - 1):
                continue
            if rule.after is not None and (s0 == 0 or not rule.after.match(text, s0 - 1)):
                continue
            if self._rejects(rule, text[start:end]):
                continue
            pieces += (text[pos:start], repl)
            pos = end
            masks += 1
        if not masks:
            return text, 0
        pieces.append(text[pos:])
        return "".join(pieces), masks

    def scrub(self, texts: list[str], counts: Counter) -> list[str]:
        text = "\n".join(texts)
        candidates = self.prefilter.scan(text, texts) if self.prefilter else None
        texts = list(texts)
        lower: str | None = None
        for i, rule in enumerate(self.rules):
            if candidates is not None and i in self.prefilter.covered:  # type: ignore[union-attr]
                entries: Any = candidates.get(i, ())
            else:  # not prefiltered: entry by entry, if it can match anywhere in the batch
                if self.gated[i]:
                    if rule.lowercase and lower is None:
                        lower = text.lower()
                    if rule.regex.search(lower if rule.lowercase else text) is None:
                        continue
                entries = range(len(texts))
            for j in entries:
                texts[j], n = self._mask(rule, texts[j])
                if n:
                    counts[rule.id] += n
        return texts


def _anchored(pattern: str) -> bool:
    """Whether a pattern uses anchors, which mean one entry's ends, not the joined batch's."""
    return bool(re.search(r"(?<!\\)[\^$]|\\[AZz]", pattern.replace("[^", "[")))


class ScrubStage(Stage):
    name = "scrub"

    def __init__(self, config: ScrubConfig, env: StageEnv):
        self.scrubber = Scrubber(config.compiled, config.allow_compiled, config.replacement)
        self.source = config.source
        self.labels = config.labels
        self.metrics = env.metrics
        self._label_cache = ValueCache(self._scrub_labels)
        self._label_counts: Counter = Counter()

    def _scrub_labels(self, ls: LabelSet) -> LabelSet:
        names = [k for k, _ in ls.items]
        values = self.scrubber.scrub([v for _, v in ls.items], self._label_counts)
        return LabelSet.of(zip(names, values))

    def process(self, batch: Batch) -> Batch:
        counts: Counter = Counter()
        if self.source:
            col = batch.field(self.source)
            if col is not None:
                idx = [i for i, v in enumerate(col) if type(v) is str]
                if idx:
                    out = self.scrubber.scrub([col[i] for i in idx], counts)
                    col = batch.column(self.source)
                    for i, v in zip(idx, out):
                        col[i] = v
        else:
            batch.lines = self.scrubber.scrub(batch.lines, counts)
        if self.labels:
            self._label_counts = counts
            batch.labels = list(map(self._label_cache.__getitem__, batch.labels))
        for rule, n in counts.items():
            self.metrics.scrubbed.labels(rule).inc(n)
        return batch


_MID_FLAGS = re.compile(r"\(\?([imsU]*(?:-[imsU]+)?)\)")


def scope_inline_flags(pattern: str) -> str:
    """RE2 lets `(?i)` stand anywhere and apply to the rest of its group; Python wants global
    flags first. Rewrite `A(?i)B` inside a group as `A(?i:B)`."""
    out: list[str] = []
    opened = [0]  # how many scoped groups were opened at each nesting level
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            if pattern[i + 1 : i + 2] == "]":
                out.append("]")
                i += 1
            i += 1
            continue
        m = _MID_FLAGS.match(pattern, i)
        if m:
            flags = m.group(1).replace("U", "").rstrip("-")
            if not out and flags and "-" not in flags:
                out.append(f"(?{flags})")  # at the very start: a global flag is fine
            elif flags:
                out.append(f"(?{flags}:")
                opened[-1] += 1
            i = m.end()
            continue
        if c == "(":
            opened.append(0)
            out.append(c)
        elif c == ")":
            out.append(")" * opened.pop())
            out.append(c)
        else:
            out.append(c)
        i += 1
    out.append(")" * opened.pop())
    return "".join(out)


def load_gitleaks(path: Path) -> tuple[list[Rule], bool, list[Any]]:
    """Rules of a gitleaks TOML config: (rules, whether [extend] useDefault, global allowlist)."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read gitleaks config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"gitleaks config {path} is not valid TOML: {e}") from None
    use_default = bool(data.get("extend", {}).get("useDefault", False))

    def compile_go(rid: str, pattern: str) -> Any:
        py = scope_inline_flags(translate(pattern))
        try:
            return re.compile(py)
        except re.error:
            import regex

            try:
                return regex.compile(py, regex.VERSION0)
            except regex.error as e:
                raise ValueError(f"{path}: rule {rid!r}: cannot compile regex: {e}") from None

    def allowlist(section: dict[str, Any], rid: str) -> tuple[list[Any], list[str]]:
        lists = section.get("allowlists") or ([section["allowlist"]] if "allowlist" in section else [])
        regexes, stop = [], []
        for al in lists:
            regexes += [compile_go(rid, r) for r in al.get("regexes", [])]
            stop += [w.lower() for w in al.get("stopwords", [])]
        return regexes, stop

    global_allow, _ = allowlist(data, "allowlist")
    rules = []
    for r in data.get("rules", []):
        rid = r.get("id")
        if not rid or "regex" not in r:
            if rid and "path" in r:
                continue  # a rule on file paths only: nothing to match in log lines
            raise ValueError(f"{path}: a rule needs an id and a regex (got {r.get('id', r)!r})")
        rx = compile_go(rid, r["regex"])
        group = int(r.get("secretGroup", 0)) or (1 if rx.groups else 0)
        regs, stop = allowlist(r, rid)
        rules.append(Rule(rid, rx, group, tuple(k.lower() for k in r.get("keywords", [])),
                          float(r.get("entropy", 0.0)), None, tuple(regs), tuple(stop)))
    return rules, use_default, global_allow
