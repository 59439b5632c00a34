"""The scrub stage: every planted secret gone, ordinary service logs untouched."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from logpipe.errors import ConfigError
from logpipe.pipeline.scrub import load_gitleaks, luhn, scope_inline_flags
from logpipe.testing import build_pipeline, run_pipeline

DATA = Path(__file__).resolve().parent / "data" / "scrub"
SECRETS = [json.loads(line) for line in (DATA / "secrets.jsonl").read_text().splitlines()]
CLEAN = (DATA / "clean.log").read_text().splitlines()


def test_corpus_recall_is_complete():
    assert len(SECRETS) >= 300
    r = run_pipeline("- scrub: {}", [s["line"] for s in SECRETS])
    missed = [(s["line"], out) for s, out in zip(SECRETS, r.lines) for secret in s["secrets"] if secret in out]
    assert not missed, f"{len(missed)} secrets left, first: {missed[:3]}"
    assert all("<REDACTED:" in out for out in r.lines)
    total = sum(v for k, v in _scrubbed(r).items())
    assert total >= len(SECRETS)


def test_corpus_has_no_false_positives():
    assert len(CLEAN) >= 300
    r = run_pipeline("- scrub: {}", CLEAN)
    changed = [(a, b) for a, b in zip(CLEAN, r.lines) if a != b]
    assert not changed, f"{len(changed)} clean lines changed, first: {changed[:3]}"


def test_mixed_batch_masks_only_the_secret_lines():
    lines = CLEAN[:50] + [s["line"] for s in SECRETS[:50]]
    r = run_pipeline("- scrub: {}", lines)
    assert r.lines[:50] == CLEAN[:50]
    assert all(out != s["line"] for out, s in zip(r.lines[50:], SECRETS[:50]))


@pytest.mark.parametrize("variant", ["ascii", "unicode", "separator", "multiline", "surrogate"])
def test_prefilter_finds_what_every_rule_over_every_entry_finds(variant):
    from collections import Counter

    from logpipe.pipeline.scrub import Scrubber, builtin_rules

    lines = [s["line"] for s in SECRETS] + CLEAN
    if variant == "unicode":
        lines = [f"ünïcødé ✓ {line} 日本" for line in lines]
    elif variant == "separator":  # Python counts \x1c-\x1f as whitespace
        lines = [line.replace(" ", "\x1d") for line in lines]
    elif variant == "multiline":
        lines = [f"{a}\n{b}" for a, b in zip(lines, lines[1:])]
    elif variant == "surrogate":
        lines = [line + "\udcff" for line in lines]
    fast, slow = Counter(), Counter()
    got = Scrubber(builtin_rules(), [], "<REDACTED:{id}>").scrub(lines, fast)
    want = Scrubber(builtin_rules(), [], "<REDACTED:{id}>", prefilter=False).scrub(lines, slow)
    assert got == want and fast == slow and sum(fast.values()) >= len(SECRETS) / 2


@pytest.mark.parametrize("first", ["plain first entry", "separator\x1d in the first entry"])
def test_an_anchored_rule_masks_every_entry_it_starts(first):
    """A rule anchored at the entry's start finds it in any entry of the batch, whether or not
    the batch can be prefiltered (\x1d keeps it from that)."""
    stages = "- scrub: {rules: [], extra: [{id: tok, regex: '^tok-(\\w+)$', group: '1'}]}"
    r = run_pipeline(stages, [first, "tok-abc123", "not tok-xyz"])
    assert r.lines == [first, "tok-<REDACTED:tok>", "not tok-xyz"]


def _scrubbed(r) -> dict[str, float]:
    return {s.labels["rule"]: s.value for fam in r.metrics.registry.collect() if fam.name == "logpipe_scrubbed"
            for s in fam.samples if s.name.endswith("_total")}


@pytest.mark.parametrize(
    "line, expected",
    [
        ("password=hunter2 user=bob", "password=<REDACTED:key-value-secret> user=bob"),
        ('{"password": "p@ss w0rd", "user": "bob"}', '{"password": "<REDACTED:json-secret-field>", "user": "bob"}'),
        ("GET /login?user=a&token=abc123 200", "GET /login?user=a&token=<REDACTED:query-string-secret> 200"),
        ("postgres://app:s3cr3t@db:5432/x", "postgres://app:<REDACTED:url-credentials>@db:5432/x"),
        ("Authorization: Bearer abcdefghijklmnop1234", "Authorization: Bearer <REDACTED:authorization-header>"),
        ("card 4111 1111 1111 1111 ok", "card <REDACTED:credit-card> ok"),
        ("card 4111 1111 1111 1112 is not a card", "card 4111 1111 1111 1112 is not a card"),  # fails Luhn
        ("max_tokens=512 total_tokens: 99", "max_tokens=512 total_tokens: 99"),
        ("https://example.com/a:b@c", "https://example.com/a:b@c"),  # no credentials before the host
    ],
)
def test_rules_mask_the_secret_and_keep_its_context(line, expected):
    assert run_pipeline("- scrub: {}", [line]).lines == [expected]


def test_options_rules_extra_allow_replacement():
    stages = """
- scrub:
    rules: [key-value-secret]
    extra:
      - id: internal-ticket
        regex: 'TICKET-(\\d{6})'
        group: "1"
        keywords: [ticket-]
    allow: ['^changeme$']
    replacement: '[{id}]'
"""
    r = run_pipeline(stages, ["password=changeme", "password=real1 TICKET-123456", "hf_abcdefghijklmnopqrstuvwxyz0123456789"])
    assert r.lines == ["password=changeme", "password=[key-value-secret] TICKET-[internal-ticket]",
                       "hf_abcdefghijklmnopqrstuvwxyz0123456789"]


def test_source_and_labels():
    stages = """
- regex: {expression: 'key=(?P<k>\\S+)'}
- scrub: {source: k}
- template: {source: out, template: '{{ .k }}'}
- output: {source: out}
"""
    r = run_pipeline(stages, ["key=password=hunter2"])
    assert r.lines == ["password=<REDACTED:key-value-secret>"]
    r = run_pipeline("- scrub: {labels: true}", ["plain"], labels={"url": "redis://u:pw12345@h:6379"})
    assert r.labels == [{"url": "redis://u:<REDACTED:url-credentials>@h:6379"}]
    assert r.lines == ["plain"]


def test_counts_per_rule():
    r = run_pipeline("- scrub: {}", ["password=a1b2c3", "token=zz9988", "nothing here"])
    assert _scrubbed(r) == {"key-value-secret": 2.0}


@pytest.mark.parametrize("stages, path, fragment", [
    ("- scrub: {rules: [nope]}", "pipeline_stages[0].scrub.rules[0]", "unknown rule 'nope'"),
    ("- scrub: {extra: [{id: x, regex: '(a'}]}", "pipeline_stages[0].scrub.extra[0].regex", "invalid regex"),
    ("- scrub: {extra: [{id: x, regex: 'a', group: '2'}]}", "pipeline_stages[0].scrub.extra[0].group", "no group"),
    ("- scrub: {replacement: '{oops}'}", "pipeline_stages[0].scrub.replacement", "only use {id}"),
])
def test_bad_config(stages, path, fragment):
    with pytest.raises(ConfigError) as e:
        build_pipeline(stages)
    assert any(i.path == path and fragment in i.message for i in e.value.issues), e.value.issues


GITLEAKS = '''
title = "team rules"
[extend]
useDefault = true
[[rules]]
id = "acme-api-key"
description = "ACME keys"
regex = \'\'\'(?i)acme[_-]?key\\s*=\\s*(?-i)(acme_[a-z0-9]{16})\\z\'\'\'
secretGroup = 1
keywords = ["acme"]
entropy = 2.0
[[rules]]
id = "mid-flag"
regex = \'\'\'ref:(?i)XYZ[0-9]{4}\'\'\'
keywords = ["ref:"]
[rules.allowlist]
regexes = [\'\'\'XYZ0000\'\'\']
[allowlist]
regexes = [\'\'\'acme_0000000000000000\'\'\']
'''


def test_gitleaks_config(tmp_path):
    (tmp_path / "gitleaks.toml").write_text(GITLEAKS)
    rules, use_default, allow = load_gitleaks(tmp_path / "gitleaks.toml")
    assert [r.id for r in rules] == ["acme-api-key", "mid-flag"] and use_default and len(allow) == 1
    from logpipe.config import load_config_text

    cfg = ("scrape_configs:\n  - job_name: j\n    pipeline_stages:\n      - scrub: {gitleaks_config: gitleaks.toml}\n")
    config = load_config_text(cfg, str(tmp_path / "c.yaml"), base_dir=str(tmp_path))
    stage = config.scrape_configs[0].stages[0].config.build(__import__("logpipe").pipeline.stage.StageEnv())
    from logpipe.batch import Batch

    b = Batch.of_lines(["ACME_KEY = acme_abcdef0123456789", "ACME_KEY = acme_0000000000000000", "ref:xyz1234",
                        "ref:XYZ0000", "password=hunter22"], 0)
    assert stage.process(b).lines == [
        "ACME_KEY = <REDACTED:acme-api-key>", "ACME_KEY = acme_0000000000000000", "<REDACTED:mid-flag>",
        "ref:XYZ0000", "password=<REDACTED:key-value-secret>"]


def test_gitleaks_rule_that_cannot_compile_names_its_id(tmp_path):
    (tmp_path / "g.toml").write_text('[[rules]]\nid = "broken"\nregex = \'\'\'(unclosed\'\'\'\n')
    with pytest.raises(ValueError, match="rule 'broken': cannot compile regex"):
        load_gitleaks(tmp_path / "g.toml")


@pytest.mark.parametrize("pattern, expected", [
    ("(?i)abc", "(?i)abc"),
    ("a(?i)bc", "a(?i:bc)"),
    ("(x(?i)y)z", "(x(?i:y))z"),
    ("[(?i)]x", "[(?i)]x"),
    ("(?i)a(?-i)B", "(?i)a(?-i:B)"),
])
def test_scope_inline_flags(pattern, expected):
    assert scope_inline_flags(pattern) == expected


@pytest.mark.parametrize("number, ok", [("4111111111111111", True), ("4111111111111112", False), ("378282246310005", True)])
def test_luhn(number, ok):
    assert luhn(number) is ok
