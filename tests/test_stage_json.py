"""json stage: Promtail's documented examples and quirks."""
from __future__ import annotations

import pytest

from logpipe.errors import ConfigError
from logpipe.testing import build_pipeline, run_pipeline

DOC_LINE = '{"log":"log message\\n","stream":"stderr","time":"2019-04-30T02:12:41.8443515Z"}'


@pytest.mark.parametrize(
    "stages, line, expected",
    [
        # Promtail docs: stream, timestamp (from "time"), output (from "log")
        ("- json: {expressions: {output: log, stream: stream, timestamp: time}}", DOC_LINE,
         {"output": "log message\n", "stream": "stderr", "timestamp": "2019-04-30T02:12:41.8443515Z"}),
        # Promtail docs: nested extraction with a JMESPath expression, then from `source`
        ("- json: {expressions: {output: log, extra: }}\n- json: {expressions: {user: }, source: extra}",
         '{"log":"log message\\n","extra":"{\\"user\\":\\"marco\\"}"}',
         {"output": "log message\n", "extra": '{"user":"marco"}', "user": "marco"}),
        # an empty expression means the key of the same name; quoted keys and nested paths
        ('- json: {expressions: {ua: \'"user-agent"\', p: tokens.prompt, first: "items[0]"}}',
         '{"user-agent":"curl","tokens":{"prompt":5},"items":["a","b"]}', {"ua": "curl", "p": 5, "first": "a"}),
        # maps and lists come back as Go's encoding/json text: sorted keys, HTML-escaped
        ("- json: {expressions: {t: tokens}}", '{"tokens":{"z":1,"a":"<b>"}}', {"t": '{"a":"\\u003cb\\u003e","z":1}'}),
        # numbers stay numbers, booleans booleans; a missing key extracts nothing
        ("- json: {expressions: {n: n, b: b, missing: nope}}", '{"n":1.5,"b":true}', {"n": 1.5, "b": True}),
    ],
)
def test_json_extraction(stages, line, expected):
    assert run_pipeline(stages, [line]).extracted == [expected]


def test_malformed_lines_pass_on_and_are_counted():
    r = run_pipeline("- json: {expressions: {a: a}}", ['{"a":"x"}', "not json", "[1,2]", '"a string"'])
    assert r.lines == ['{"a":"x"}', "not json", "[1,2]", '"a string"']
    assert r.extracted == [{"a": "x"}, {}, {}, {}]
    assert r.counter("logpipe_stage_errors_total", stage="json", reason="malformed") == 3


def test_drop_malformed():
    r = run_pipeline("- json: {expressions: {a: a}, drop_malformed: true}", ['{"a":"x"}', "bad", '{"a":"y"}'])
    assert r.lines == ['{"a":"x"}', '{"a":"y"}']
    assert r.counter("logpipe_dropped_entries_total", reason="malformed_json") == 1


@pytest.mark.parametrize("drop", [False, True])
def test_a_large_batch_with_bad_lines_here_and_there(drop):
    """Hundreds of entries in one batch, bad ones scattered: each entry gets its own values
    (a bad one keeps what an earlier stage extracted), and bad ones are counted or dropped."""
    lines = [f'{{"a": "v{i}", "n": {{"k": {i}}}}}' if i % 37 else f"text{i}" for i in range(300)]
    stages = ("- regex: {expression: '^(?P<a>text\\d+)'}\n"
              f"- json: {{expressions: {{a: a, k: n.k}}, drop_malformed: {str(drop).lower()}}}")
    r = run_pipeline(stages, lines)
    bad = [i for i in range(300) if i % 37 == 0]
    expect = [{"a": f"v{i}", "k": i} if i % 37 else {"a": f"text{i}"} for i in range(300) if not (drop and i in bad)]
    assert r.extracted == expect
    assert r.lines == [line for i, line in enumerate(lines) if not (drop and i in bad)]
    assert r.counter("logpipe_stage_errors_total", stage="json", reason="malformed") == len(bad)
    if drop:
        assert r.counter("logpipe_dropped_entries_total", reason="malformed_json") == len(bad)


def test_source_absent_skips_the_entry():
    r = run_pipeline("- json: {expressions: {a: a}, source: nope, drop_malformed: true}", ["whatever"])
    assert r.lines == ["whatever"] and r.extracted == [{}]


def test_a_failed_line_keeps_values_extracted_before():
    stages = "- regex: {expression: '(?P<a>^\\w+)'}\n- json: {expressions: {a: a}}"
    r = run_pipeline(stages, ["plain text", '{"a":"json"}'])
    assert r.extracted == [{"a": "plain"}, {"a": "json"}]


@pytest.mark.parametrize("stages, path, fragment", [
    ("- json: {}", "pipeline_stages[0].json.expressions", "JMES expression is required"),
    ("- json: {expressions: {a: 'a[?'}}", "pipeline_stages[0].json.expressions.a", "could not compile JMES"),
    ("- json: {expressions: {a: a}, source: ''}", "pipeline_stages[0].json.source", "empty source"),
])
def test_config_errors(stages, path, fragment):
    with pytest.raises(ConfigError) as e:
        build_pipeline(stages)
    assert any(i.path == path and fragment in i.message for i in e.value.issues), e.value.issues
