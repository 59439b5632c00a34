"""template and replace stages, and the Go template subset they share."""
from __future__ import annotations

import hashlib

import pytest

from logpipe.errors import ConfigError
from logpipe.gotemplate import TemplateError, compile_template
from logpipe.testing import build_pipeline, run_pipeline

JSON_APP = "- json: {expressions: {app: app, level: level}}"
LINE = '{"app":"loki","level":"WARN"}'


@pytest.mark.parametrize(
    "template_stage, key, expected",
    [
        # Promtail docs examples
        ("{source: new_key, template: 'hello world!'}", "new_key", "hello world!"),
        ("{source: app, template: '{{ .Value }}_some_suffix'}", "app", "loki_some_suffix"),
        ("{source: app, template: '{{ ToUpper .Value }}'}", "app", "LOKI"),
        ("{source: out, template: '{{ .level }} for app {{ ToUpper .app }}'}", "out", "WARN for app LOKI"),
        ("{source: app, template: '{{ Replace .Value \"o\" \"0\" -1 }}'}", "app", "l0ki"),
        # quirk: a piped value is the LAST argument, so this is TrimSuffix("KI", "LOKI")
        ("{source: app, template: '{{ .Value | ToUpper | TrimSuffix \"KI\" }}'}", "app", "KI"),
        ("{source: app, template: '{{ if eq .Value \"loki\" }}yes{{ else }}no{{ end }}'}", "app", "yes"),
        ("{source: app, template: '{{ regexReplaceAll \"(l)(o)\" .Value \"${2}$1\" }}'}", "app", "olki"),
        ("{source: app, template: '{{ regexReplaceAllLiteral \"o\" .Value \"$1\" }}'}", "app", "l$1ki"),
        ("{source: app, template: '{{ Sha2Hash .Value \"salt\" }}'}", "app", hashlib.sha256(b"lokisalt").hexdigest()),
        ("{source: app, template: '{{ Hash .Value \"salt\" }}'}", "app", hashlib.sha3_256(b"lokisalt").hexdigest()),
        ("{source: x, template: '{{ default \"none\" .missing }}'}", "x", "none"),
        ("{source: x, template: '{{ TrimSpace \"  a  \" }}|{{ Trim \"xxaxx\" \"x\" }}'}", "x", "a|a"),
        # quirk: a key that is not there prints Go's "<no value>"
        ("{source: x, template: 'v={{ .missing }}'}", "x", "v=<no value>"),
        # .Entry is the log line
        ("{source: x, template: '{{ .Entry }}'}", "x", LINE),
        ("{source: x, template: '{{- \"a\" -}}   {{- \"b\" }}'}", "x", "ab"),
    ],
)
def test_template(template_stage, key, expected):
    r = run_pipeline(f"{JSON_APP}\n- template: {template_stage}", [LINE])
    assert r.extracted[0].get(key) == expected


def test_empty_result_removes_the_key_and_failure_keeps_it():
    r = run_pipeline(f"{JSON_APP}\n- template: {{source: app, template: '{{{{ if false }}}}x{{{{ end }}}}'}}", [LINE])
    assert "app" not in r.extracted[0]
    # ToUpper of a missing key fails in Go: the value stays as it was, and it is counted
    r = run_pipeline(f"{JSON_APP}\n- template: {{source: app, template: '{{{{ ToUpper .nope }}}}'}}", [LINE])
    assert r.extracted[0]["app"] == "loki"
    assert r.counter("logpipe_stage_errors_total", stage="template", reason="execution_failed") == 1


def test_numbers_reach_templates_as_go_prints_them():
    r = run_pipeline("- json: {expressions: {n: n}}\n- template: {source: n, template: '{{ .Value }}s'}",
                     ['{"n": 1000000}', '{"n": 0.5}', '{"n": 1e21}'])
    assert [e["n"] for e in r.extracted] == ["1000000s", "0.5s", "1000000000000000000000s"]


@pytest.mark.parametrize("text", [
    "{{ range .x }}{{ end }}", "{{ with .x }}{{ end }}", "{{ define \"a\" }}{{ end }}", "{{ $x := 1 }}",
    "{{ unknownFunc .x }}", "{{ if .x }}", "{{ end }}", "{{ .a.b }}", "{{ .x", "{{ else }}",
])
def test_unsupported_templates_are_refused_at_load(text):
    with pytest.raises(TemplateError):
        compile_template(text)
    with pytest.raises(ConfigError) as e:
        build_pipeline(f"- template: {{source: x, template: '{text}'}}")
    assert e.value.issues[0].path == "pipeline_stages[0].template.template"


LOG = "11.11.11.11 - frank [25/Jan/2000:14:00:01 -0500] \"GET /1986.js HTTP/1.1\" 200 932 \"-\" \"Mozilla/5.0\""


@pytest.mark.parametrize(
    "replace_stage, line, expected_line",
    [
        # Promtail docs: mask a password (\\S+ takes the trailing ! too)
        ("{expression: 'password (\\S+)', replace: '****'}",
         "i'm a log message who has sensitive information with password xyz!",
         "i'm a log message who has sensitive information with password ****"),
        ("{expression: '11.11.11.11 - (\\S+) .*', replace: 'dummy'}", LOG, LOG.replace("frank", "dummy")),
        # every match is replaced; an empty replacement deletes the captured text
        ("{expression: '(\\d+)', replace: ''}", "a1b22c333", "abc"),
        ("{expression: '(\\d+)', replace: '<{{ .Value }}>'}", "a1b22", "a<1>b<22>"),
        ("{expression: 'x=(\\w+)', replace: '{{ ToUpper .Value }}'}", "x=ab y=cd x=ef", "x=AB y=cd x=EF"),
        # quirk: no capture group, nothing replaced
        ("{expression: '\\d+', replace: 'N'}", "a1b2", "a1b2"),
        # quirk: a group that starts where the previous replaced group ended is left alone
        ("{expression: '(a)(b)', replace: 'R'}", "ab", "Rb"),
    ],
)
def test_replace(replace_stage, line, expected_line):
    assert run_pipeline(f"- replace: {replace_stage}", [line]).lines == [expected_line]


def test_replace_extracts_named_groups_as_rendered_and_source():
    r = run_pipeline("- replace: {expression: 'user=(?P<user>\\w+)', replace: '{{ ToUpper .Value }}'}", ["user=bob ok"])
    assert r.lines == ["user=BOB ok"] and r.extracted == [{"user": "BOB"}]
    stages = ("- json: {expressions: {msg: msg}}\n"
              "- replace: {expression: 'token=(\\S+)', source: msg, replace: '***'}")
    r = run_pipeline(stages, ['{"msg":"token=abc x"}'])
    assert r.extracted[0]["msg"] == "token=*** x"
    assert r.lines == ['{"msg":"token=abc x"}']


def test_replace_template_can_read_extracted_values():
    stages = ("- regex: {expression: '^(?P<who>\\w+)'}\n"
              "- replace: {expression: 'secret=(\\w+)', replace: 'hidden-by-{{ .who }}'}")
    assert run_pipeline(stages, ["alice secret=xyz"]).lines == ["alice secret=hidden-by-alice"]
