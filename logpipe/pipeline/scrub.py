"""The `scrub` stage: masks secrets with a built-in rule table, no regex needed from the user.

Promtail has no such stage (Alloy has loki.secretfilter). A rule runs only on batches whose
text holds one of its keywords, tested once over the whole batch, and then as one regex pass
over the batch's lines joined, so a batch without secrets costs a few substring searches.
"""
from __future__ import annotations

import math
import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

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
    anchored: bool = False  # the regex can only start where one of its keywords starts


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
             after=re.compile(f"[{re.escape(r['after'])}]") if "after" in r else None,
             anchored=r.get("anchored", False))
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


class Scrubber:
    """The masking itself, over a list of texts; counts masks per rule."""

    def __init__(self, rules: list[Rule], allow: list[Any], replacement: str):
        import ahocorasick

        self.rules = rules
        self.allow = allow
        self.replacement = replacement
        self.marker = replacement.split("{id}")[0] or replacement
        self.keywords = ahocorasick.Automaton()
        for k in {k for r in rules for k in r.keywords}:
            self.keywords.add_word(k, k)
        if len(self.keywords):
            self.keywords.make_automaton()

    def _find_keywords(self, lower: str) -> dict[str, list[int]]:
        """Where each keyword starts in the batch: one pass for all rules' keywords."""
        found: dict[str, list[int]] = {}
        if len(self.keywords):
            for end, k in self.keywords.iter(lower):
                found.setdefault(k, []).append(end - len(k) + 1)
        return found

    def _rejects(self, rule: Rule, secret: str) -> bool:
        if not secret or self.marker in secret:
            return True
        if rule.entropy and shannon_entropy(secret) < rule.entropy:
            return True
        if rule.check is not None and not rule.check(secret):
            return True
        if any(a.search(secret) for a in self.allow) or any(a.search(secret) for a in rule.allow):
            return True
        return bool(rule.stopwords) and any(w in secret.lower() for w in rule.stopwords)

    def _matches(self, rule: Rule, search: str, starts: list[int] | None):
        if starts is None:
            yield from rule.regex.finditer(search)
            return
        end = -1
        match = rule.regex.match
        for p in starts:
            if p >= end and (m := match(search, p)) is not None:
                end = m.end()
                yield m

    def _mask(self, rule: Rule, text: str, joined: bool, starts: list[int] | None = None) -> tuple[str, int, bool]:
        """Mask every secret of `rule` in `text`: (new text, masks, crossed an entry boundary)."""
        search = text
        if rule.lowercase:
            search = text.lower()
            if len(search) != len(text):  # a character whose lower case is longer: spans differ
                return self._mask(Rule(rule.id, re.compile(rule.regex.pattern, re.I), rule.group, rule.keywords,
                                       rule.entropy, rule.check, rule.allow, rule.stopwords, False,
                                       rule.not_after, rule.after, False), text, joined)
        pieces: list[str] = []
        pos = masks = 0
        repl = self.replacement.format(id=rule.id)
        for m in self._matches(rule, search, starts):
            start, end = m.span(rule.group)
            if start < 0:
                continue
            if joined and "\n" in m.group(0):
                return text, 0, True
            s0 = m.start()
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
            return text, 0, False
        pieces.append(text[pos:])
        return "".join(pieces), masks, False

    def scrub(self, texts: list[str], counts: Counter) -> list[str]:
        text = "\n".join(texts)
        joined = text.count("\n") == len(texts) - 1  # no entry holds a newline itself
        found = self._find_keywords(text.lower())
        for rule in self.rules:
            if rule.keywords and not any(k in found for k in rule.keywords):
                continue
            masks = 0
            per_entry = _anchored(rule.regex.pattern)
            if joined and not per_entry:
                starts = sorted({p for k in rule.keywords for p in found.get(k, ())}) if rule.anchored else None
                new, masks, crossed = self._mask(rule, text, True, starts)
                if crossed:  # a match ran into the next entry: from here on, entry by entry
                    joined, texts = False, text.split("\n")
            if not joined or per_entry:
                if joined:
                    texts = text.split("\n")
                out = []
                for t in texts:
                    t, n, _ = self._mask(rule, t, False)
                    out.append(t)
                    masks += n
                texts = out
                new = "\n".join(texts)
            if masks:
                counts[rule.id] += masks
                text = new
                found = self._find_keywords(text.lower())
        return text.split("\n") if joined else texts


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
