"""match: LogQL selectors and line filters, keep/drop, nested stages (Promtail's match_test.go)."""
from __future__ import annotations

import json

import pytest

from logpipe.batch import Batch, LabelSet
from logpipe.errors import ConfigError
from logpipe.pipeline.logql import SelectorError, parse_selector
from logpipe.pipeline.stage import StageEnv
from logpipe.testing import build_pipeline, run_pipeline
from tests.conftest import run_cli


def match_stages(selector: str, action: str) -> list:
    cfg: dict = {"selector": selector, "action": action}
    if action == "keep":
        cfg["stages"] = [{"static_labels": {"test_label": "ran"}}]
    return [{"match": cfg}]


# Promtail's TestMatcher table: the line is "foo"; (selector, labels, action, dropped, ran).
@pytest.mark.parametrize(
    "selector, labels, action, dropped, ran",
    [
        ('{foo="bar"} |= "foo"', {"foo": "bar"}, "keep", False, True),
        ('{foo="bar"} |~ "foo"', {"foo": "bar"}, "keep", False, True),
        ('{foo="bar"} |= "bar"', {"foo": "bar"}, "keep", False, False),
        ('{foo="bar"} |~ "bar"', {"foo": "bar"}, "keep", False, False),
        ('{foo="bar"} != "bar"', {"foo": "bar"}, "keep", False, True),
        ('{foo="bar"} !~ "bar"', {"foo": "bar"}, "keep", False, True),
        ('{foo="bar"} != "foo"', {"foo": "bar"}, "keep", False, False),
        ('{foo="bar"} |= "foo"', {"foo": "bar"}, "drop", True, False),
        ('{foo="bar"} |~ "foo"', {"foo": "bar"}, "drop", True, False),
        ('{foo="bar"} |= "bar"', {"foo": "bar"}, "drop", False, False),
        ('{foo="bar"} |~ "bar"', {"foo": "bar"}, "drop", False, False),
        ('{foo="bar"} != "bar"', {"foo": "bar"}, "drop", True, False),
        ('{foo="bar"} !~ "bar"', {"foo": "bar"}, "drop", True, False),
        ('{foo="bar"} != "foo"', {"foo": "bar"}, "drop", False, False),
        ('{foo="bar"}', {"foo": "bar"}, "keep", False, True),
        # a missing label reads as "": {foo=""} matches an entry without foo
        ('{foo=""}', {"foo": "bar"}, "keep", False, False),
        ('{foo=""}', {}, "keep", False, True),
        ('{foo!="bar"}', {"foo": "bar"}, "keep", False, False),
        ('{foo!="bar"}', {"foo": "bar"}, "drop", False, False),
        ('{foo="bar",bar!="test"}', {"foo": "bar"}, "keep", False, True),
        ('{foo="bar",bar!="test"}', {"foo": "bar"}, "drop", True, False),
        ('{foo="bar",bar!="test"}', {"foo": "bar", "bar": "test"}, "keep", False, False),
        ('{foo="bar",bar=~"te.*"}', {"foo": "bar", "bar": "test"}, "drop", True, False),
        ('{foo="bar",bar=~"te.*"}', {"foo": "bar", "bar": "test"}, "keep", False, True),
        ('{foo="bar",bar!~"te.*"}', {"foo": "bar", "bar": "test"}, "keep", False, False),
        ('{foo="bar",bar!~"te.*"}', {"foo": "bar", "bar": "test"}, "drop", False, False),
        # label regexes are anchored at both ends (Prometheus matchers); line regexes are not
        ('{bar=~"es"}', {"bar": "test"}, "keep", False, False),
        ('{foo="bar"} |~ "o"', {"foo": "bar"}, "keep", False, True),
        # `.` in a label regex matches a newline, as Prometheus' (?s:...) wrapping makes it
        ('{m=~"a.b"}', {"m": "a\nb"}, "keep", False, True),
        # RE2 flags inside the pattern work as in Go
        ('{bar=~"(?i)TEST"}', {"bar": "test"}, "keep", False, True),
    ],
)
def test_promtail_matcher_table(selector, labels, action, dropped, ran):
    r = run_pipeline(match_stages(selector, action), ["foo"], labels=labels)
    if dropped:
        assert r.lines == []
        assert r.counter("logpipe_dropped_entries_total", reason="match_stage") == 1
        return
    assert r.lines == ["foo"]
    assert ("test_label" in r.labels[0]) is ran
    assert r.counter("logpipe_dropped_entries_total", reason="match_stage") == 0


@pytest.mark.parametrize(
    "selector, message",
    [
        # Promtail's parser tests: same wording, same 1-based positions
        ('{foo="bar}', "parse error at line 1, col 6: literal not terminated"),
        ('{foo="bar"', "parse error at line 1, col 11: syntax error: unexpected $end, expecting } or ,"),
        ('{foo="bar"} |~', "parse error at line 1, col 15: syntax error: unexpected $end, expecting STRING"),
        ('{foo="bar"} "foo"', 'parse error at line 1, col 13: syntax error: unexpected STRING, expecting != or !~ or |~ or |='),
        ('{foo="bar"} foo', "parse error at line 1, col 13: syntax error: unexpected IDENTIFIER, expecting != or !~ or |~ or |="),
        ("foo", "parse error at line 1, col 1: syntax error: unexpected IDENTIFIER, expecting {"),
        ("{}", "parse error at line 1, col 2: syntax error: unexpected }, expecting IDENTIFIER"),
        ("{", "parse error at line 1, col 2: syntax error: unexpected $end, expecting IDENTIFIER"),
        ('{foo~"x"}', "parse error at line 1, col 5: syntax error: unexpected IDENTIFIER, expecting = or != or =~ or !~"),
        ("{foo=bar}", "parse error at line 1, col 6: syntax error: unexpected IDENTIFIER, expecting STRING"),
        ('{a="1"}\n  |= "x" |= ', "parse error at line 2, col 13: syntax error: unexpected $end, expecting STRING"),
        ('{a="\\q"}', "parse error at line 1, col 4: invalid char escape"),
        # regexes must compile as RE2: the position is the pattern's string
        ('{foo="bar"} !~ "[]"', "parse error at line 1, col 16:"),
        ('{a=~"(x"}', "parse error at line 1, col 5:"),
        ('{a="b"} |~ "(?=x)"', "parse error at line 1, col 12:"),
    ],
)
def test_selector_errors_name_the_position(selector, message):
    with pytest.raises(SelectorError) as e:
        parse_selector(selector)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize(
    "selector, matchers, filters",
    [
        ('{ foo = "bar" }', [("foo", "=", "bar")], []),
        ('{ foo = "bar", bar != "baz" }', [("foo", "=", "bar"), ("bar", "!=", "baz")], []),
        ('{foo="bar"} |= "baz" |~ "blip" != "flip" !~ "flap"', [("foo", "=", "bar")],
         [("|=", "baz"), ("|~", "blip"), ("!=", "flip"), ("!~", "flap")]),
        ('{ foo = "ba\\"r" }', [("foo", "=", 'ba"r')], []),
        # Go raw strings and escapes work as in Promtail's Go lexer
        ("{foo=`a\\d+`} |~ `\\w+`", [("foo", "=", "a\\d+")], [("|~", "\\w+")]),
        ('{foo="\\u00e9\\t"}', [("foo", "=", "é\t")], []),
    ],
)
def test_selector_parses(selector, matchers, filters):
    sel = parse_selector(selector)
    assert [(m.name, m.op, m.value) for m in sel.matchers] == matchers
    assert [(f.op, f.text) for f in sel.filters] == filters


@pytest.mark.parametrize(
    "stages, path, message",
    [
        ("- match: {selector: '{app=\"a\"', stages: [{static_labels: {x: y}}]}",
         "pipeline_stages[0].match.selector",
         "invalid selector syntax for match stage: parse error at line 1, col 9: syntax error: unexpected $end, expecting } or ,"),
        ("- match: {stages: [{static_labels: {x: y}}]}", "pipeline_stages[0].match.selector",
         "selector statement required for match stage"),
        ("- match: {selector: '{a=\"b\"}'}", "pipeline_stages[0].match",
         "match stage requires at least one additional stage to be defined in '- stages'"),
        ("- match: {selector: '{a=\"b\"}', action: drop, stages: [{static_labels: {x: y}}]}",
         "pipeline_stages[0].match.stages", "match stage configured to drop entries cannot contains stages"),
        ("- match: {selector: '{a=\"b\"}', action: nope, stages: [{static_labels: {x: y}}]}",
         "pipeline_stages[0].match.action", "match stage action should be 'keep' or 'drop'"),
        ("- match: {selector: '{a=\"b\"}', pipeline_name: '', stages: [{static_labels: {x: y}}]}",
         "pipeline_stages[0].match.pipeline_name", "match stage pipeline name can be omitted but cannot be an empty string"),
    ],
)
def test_config_errors(stages, path, message):
    with pytest.raises(ConfigError) as e:
        build_pipeline(stages)
    assert [(i.path, i.message) for i in e.value.issues] == [(path, message)]


def test_nested_errors_carry_the_full_yaml_path_and_line():
    stages = """\
- match:
    selector: '{app="a"}'
    stages:
      - static_labels: {ok: yes}
      - match:
          selector: '{b="c"}'
          stages:
            - labels: {"bad-name": x}
            - nope: {}
"""
    with pytest.raises(ConfigError) as e:
        build_pipeline(stages)
    got = [(i.line, i.path, i.message.split(";")[0]) for i in e.value.issues]
    assert got == [
        (8, "pipeline_stages[0].match.stages[1].match.stages[0].labels.bad-name",
         "invalid label name 'bad-name': must match [a-zA-Z_][a-zA-Z0-9_]*"),
        (9, "pipeline_stages[0].match.stages[1].match.stages[1].nope", "unknown stage 'nope'"),
    ]


def test_empty_action_means_keep_and_reason_defaults():
    r = run_pipeline("- match: {selector: '{a=\"b\"}', action: '', stages: [{static_labels: {x: y}}]}",
                     ["l"], labels={"a": "b"})
    assert r.labels == [{"a": "b", "x": "y"}]
    r = run_pipeline("- match: {selector: '{a=\"b\"}', action: drop, drop_counter_reason: ''}", ["l"], labels={"a": "b"})
    assert r.counter("logpipe_dropped_entries_total", reason="match_stage") == 1


def run_streams(stages: str, entries: list[tuple[dict[str, str], str]]) -> Batch:
    """One batch of entries from several streams, through the stages."""
    batch = Batch([line for _, line in entries], list(range(len(entries))), [LabelSet.of(ls) for ls, _ in entries])
    return build_pipeline(stages, StageEnv()).process(batch)


def test_mixed_batch_keeps_input_order_and_only_matching_entries_change():
    stages = """\
- match:
    selector: '{app="api"} != "health"'
    stages:
      - static_labels: {team: api}
      - drop: {expression: "^DEBUG"}
      - output: {source: app}
"""
    out = run_streams(stages, [
        ({"app": "api"}, "GET /x"),
        ({"app": "web"}, "GET /y"),
        ({"app": "api"}, "GET /health"),
        ({"app": "api"}, "DEBUG noise"),
        ({"app": "web"}, "DEBUG web"),
        ({"app": "api"}, "POST /z"),
    ])
    assert out.lines == ["api", "GET /y", "GET /health", "DEBUG web", "api"]
    assert out.ts == [0, 1, 2, 4, 5]
    assert [ls.get("team") for ls in out.labels] == ["api", None, None, None, "api"]


def test_fields_set_by_nested_stages_stay_with_their_entries():
    stages = """\
- match:
    selector: '{app="api"}'
    stages:
      - static_labels: {x: "1"}
- labels: {from_base: app}
"""
    out = run_streams(stages, [({"app": "web"}, "a"), ({"app": "api"}, "b"), ({"app": "web"}, "c")])
    # labels set from base labels after the merge: each entry still reads its own
    assert [ls.as_dict() for ls in out.labels] == [
        {"app": "web", "from_base": "web"}, {"app": "api", "from_base": "api", "x": "1"}, {"app": "web", "from_base": "web"},
    ]


def test_drop_action_counts_every_dropped_entry_once_per_batch_with_its_reason():
    stages = "- match: {selector: '{app=\"promtail\"} |~ \".*noisy error.*\"', action: drop, drop_counter_reason: promtail_noisy_error}"
    out = run_streams(stages, [({"app": "promtail"}, "foo noisy error"), ({"app": "loki"}, "noisy error"),
                               ({"app": "promtail"}, "fine"), ({"app": "promtail"}, "bar noisy error!")])
    assert out.lines == ["noisy error", "fine"]
    env = StageEnv()
    build_pipeline(stages, env).process(Batch.of_lines(["a noisy error"] * 3, 0, LabelSet.of({"app": "promtail"})))
    assert env.metrics.registry.get_sample_value("logpipe_dropped_entries_total", {"reason": "promtail_noisy_error", "host": ""}) == 3


def test_nested_match_and_nested_drop():
    stages = """\
- match:
    selector: '{job="app"} |= "error"'
    stages:
      - static_labels: {level: error}
      - match:
          selector: '{level="error"} |~ "time(d )?out"'
          action: drop
          drop_counter_reason: timeouts
"""
    r = run_pipeline(stages, ["error: disk full", "error: timed out", "ok", "error timeout"], labels={"job": "app"})
    assert r.lines == ["error: disk full", "ok"]
    assert r.labels == [{"job": "app", "level": "error"}, {"job": "app"}]
    assert r.counter("logpipe_dropped_entries_total", reason="timeouts") == 2


def test_selector_sees_labels_set_earlier_in_the_pipeline():
    stages = """\
- static_labels: {app: loki}
- match: {selector: '{app="loki"}', stages: [{static_labels: {seen: "yes"}}]}
"""
    assert run_pipeline(stages, ["x"]).labels == [{"app": "loki", "seen": "yes"}]


def test_nested_multiline_blocks_come_out_of_match_and_at_the_end_of_input():
    stages = """\
- match:
    selector: '{app="java"}'
    stages:
      - multiline: {firstline: '^\\d'}
"""
    pipeline = build_pipeline(stages, StageEnv())
    b1 = Batch(["1 start", "other", "  at x"], [1, 2, 3], [LabelSet.of({"app": "java"}), LabelSet.of({"app": "go"}), LabelSet.of({"app": "java"})])
    out1 = pipeline.process(b1)
    assert out1.lines == ["other"]  # the java block is still open
    b2 = Batch(["  at y", "2 next"], [4, 5], [LabelSet.of({"app": "java"})] * 2)
    out2 = pipeline.process(b2)
    assert out2.lines == ["1 start\n  at x\n  at y"]
    assert out2.ts == [1]
    assert "\x00" not in "".join(out2.fields)  # the merge's bookkeeping column is gone
    tail = pipeline.flush(None)
    assert tail is not None and tail.lines == ["2 next"]


CLI_CONFIG = """\
server:
  http_listen_port: 0
scrape_configs:
  - job_name: app
    stdin:
      labels: {job: app}
    pipeline_stages:
      - match:
          selector: '{job="app"} |= "error"'
          stages:
            - static_labels: {level: error}
            - match:
                selector: '{level="error"} |~ "timeout"'
                action: drop
                drop_counter_reason: timeouts
      - match:
          selector: '{job="app"} !~ "error"'
          stages:
            - static_labels: {level: info}
"""


def test_dry_run_runs_nested_match_stages(write):
    p = write("match.yaml", CLI_CONFIG)
    r = run_cli("dry-run", "--config", str(p), input="error: disk full\nerror: timeout\nall good\n")
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(e["line"], e["labels"]) for e in out] == [
        ("error: disk full", {"job": "app", "level": "error"}),
        ("all good", {"job": "app", "level": "info"}),
    ]


def test_inspect_shows_nested_match_changes_and_drops(write):
    p = write("match.yaml", CLI_CONFIG)
    r = run_cli("inspect", "--config", str(p), input="error: disk full\nerror: timeout\nall good\n")
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    blocks = text.split("entry ")[1:]
    assert "[1] match: labels: +level=\"error\"" in blocks[0]
    assert '"labels":{"job":"app","level":"error"}' in blocks[0]
    assert "dropped by stage 1 (match)" in blocks[1]
    assert "[2] match: labels: +level=\"info\"" in blocks[2]


def test_check_reports_a_bad_nested_selector_with_file_line_and_path(write):
    p = write("bad.yaml", CLI_CONFIG.replace("|~ \"timeout\"'", "|~ '"))
    r = run_cli("check", "--config", str(p))
    assert r.returncode == 1
    err = r.stderr.decode()
    assert (f"{p}:13: scrape_configs[0].pipeline_stages[0].match.stages[1].match.selector: "
            "invalid selector syntax for match stage: parse error at line 1, col 20: "
            "syntax error: unexpected $end, expecting STRING") in err
