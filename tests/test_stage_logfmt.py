"""logfmt stage: go-logfmt's syntax, Promtail's mapping."""
from __future__ import annotations

import pytest

from logpipe.errors import ConfigError
from logpipe.testing import build_pipeline, run_pipeline


@pytest.mark.parametrize(
    "stages, line, expected",
    [
        # Promtail docs: `mapping: {timestamp: time, app: , duration: , unknown: }`
        ("- logfmt: {mapping: {timestamp: time, app: , duration: , unknown: }}",
         "time=2012-11-01T22:08:41+00:00 app=loki level=WARN duration=125 message=\"this is a log line\" extra=\"user=foo\"",
         {"timestamp": "2012-11-01T22:08:41+00:00", "app": "loki", "duration": "125"}),
        # quoted values with escapes; a key without a value is ""
        ("- logfmt: {mapping: {msg: , flag: }}", 'msg="say \\"hi\\"\\n" flag', {"msg": 'say "hi"\n', "flag": ""}),
        ("- logfmt: {mapping: {level: lvl}}", "lvl=info", {"level": "info"}),
        # values read before a syntax error are kept
        ("- logfmt: {mapping: {a: , b: }}", 'a=1 b="unterminated', {"a": "1"}),
    ],
)
def test_logfmt(stages, line, expected):
    assert run_pipeline(stages, [line]).extracted == [expected]


def test_source_and_malformed_count():
    stages = ("- regex: {expression: '^\\S+ (?P<rest>.*)$'}\n"
              "- logfmt: {mapping: {k: }, source: rest}")
    r = run_pipeline(stages, ["prefix k=v", 'prefix k="broken'])
    assert r.extracted[0]["k"] == "v" and "k" not in r.extracted[1]
    assert r.counter("logpipe_stage_errors_total", stage="logfmt", reason="malformed") == 1


def test_empty_mapping_is_an_error():
    with pytest.raises(ConfigError) as e:
        build_pipeline("- logfmt: {mapping: {}}")
    assert e.value.issues[0].path == "pipeline_stages[0].logfmt.mapping"
