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
        # a repeated key: the last one counts, as in Go; two expressions may read one key
        ("- json: {expressions: {a: a, b: a}}", '{"a":1,"x":{"y":[2]},"a":"last"}', {"a": "last", "b": "last"}),
        # escapes in the line's keys and in a quoted expression; the empty key
        ('- json: {expressions: {t: \'"t\\u00e9"\', e: \'""\'}}', '{"t\\u00e9":"ok","":"empty"}', {"t": "ok", "e": "empty"}),
    ],
)
def test_json_extraction(stages, line, expected):
    assert run_pipeline(stages, [line]).extracted == [expected]


NOT_OBJECTS = ["not json", "[1,2]", '"a string"', "null", '{"a":"x"} trailing', '{"a":"\ud800"}', '{"a":"\\ud800"}',
               '{"a":1,"b":' + "[" * 5000 + "]" * 5000 + "}", '{"a":"x",}', '{"a":NaN}']


@pytest.mark.parametrize("expressions", ["{a: a}", "{a: a, k: n.k}"])
def test_lines_that_are_no_json_object_pass_on_and_are_counted(expressions):
    """Each way a line can fail to be one JSON object, next to good lines in one chunk, with
    only plain keys and with a JMESPath expression (the lines are decoded differently)."""
    lines = ['{"a":"x","n":{"k":1}}', *NOT_OBJECTS, '{"a":"y","n":{"k":2}}']
    r = run_pipeline(f"- json: {{expressions: {expressions}}}", lines)
    assert r.lines == lines
    good = [{"a": "x", "k": 1}, {"a": "y", "k": 2}] if "k" in expressions else [{"a": "x"}, {"a": "y"}]
    assert r.extracted == [good[0], *[{}] * len(NOT_OBJECTS), good[1]]
    assert r.counter("logpipe_stage_errors_total", stage="json", reason="malformed") == len(NOT_OBJECTS)


def test_integers_beyond_64_bits_read_as_promtail_reads_them():
    """Go holds every JSON number as a float64: a label, and a map marshalled back to text,
    show such an integer rounded."""
    big = "123456789012345678901234567890"
    r = run_pipeline("- json: {expressions: {n: n, m: m}}\n- labels: {n: }", [f'{{"n":{big},"m":{{"k":{big}}}}}'])
    assert r.labels == [{"n": "123456789012345680000000000000"}]
    assert r.extracted[0]["m"] == '{"k":1.2345678901234568e+29}'


def test_drop_malformed():
    r = run_pipeline("- json: {expressions: {a: a}, drop_malformed: true}", ['{"a":"x"}', "bad", '{"a":"y"}'])
    assert r.lines == ['{"a":"x"}', '{"a":"y"}']
    assert r.counter("logpipe_dropped_entries_total", reason="malformed_json") == 1


@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("nested", [False, True])
def test_a_large_batch_with_bad_lines_here_and_there(drop, nested):
    """Hundreds of entries in one batch, bad ones scattered: each entry gets its own values
    (a bad one keeps what an earlier stage extracted), and bad ones are counted or dropped."""
    lines = [f'{{"a": "v{i}", "n": {{"k": {i}}}, "k": {i}}}' if i % 37 else f"text{i}" for i in range(300)]
    stages = ("- regex: {expression: '^(?P<a>text\\d+)'}\n"
              f"- json: {{expressions: {{a: a, k: {'n.k' if nested else 'k'}}}, drop_malformed: {str(drop).lower()}}}")
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
