"""pack: Promtail's pack_test.go cases (exact JSON text) and documented example."""
from __future__ import annotations

import json
import time

import pytest

from logpipe.batch import Batch, LabelSet
from logpipe.pipeline.stage import StageEnv
from logpipe.testing import build_pipeline, run_pipeline


def run_with(stages: str, labels: dict[str, str], extracted: dict, line: str = "test line 1", ts: int = 1_000_000_000):
    batch = Batch.of_lines([line], ts, LabelSet.of(labels))
    batch.fields.update({k: [v] for k, v in extracted.items()})
    return build_pipeline(stages, StageEnv()).process(batch)


LABELS = {"foo": "bar", "bar": "baz"}


# Promtail's Test_packStage_Run table (ingest_timestamp: false): labels, extracted, line, labels left.
@pytest.mark.parametrize(
    "names, extracted, line, labels_left",
    [
        ([], {}, '{"_entry":"test line 1"}', LABELS),
        (["foo"], {}, '{"foo":"bar","_entry":"test line 1"}', {"bar": "baz"}),
        (["foo", "bar"], {}, '{"bar":"baz","foo":"bar","_entry":"test line 1"}', {}),
        (["foo", "extr1"], {"extr1": "etr1val", "extr2": "etr2val"},
         '{"extr1":"etr1val","foo":"bar","_entry":"test line 1"}', {"bar": "baz"}),
        # a value with no text is not packed
        (["foo", "extr2"], {"extr1": "etr1val", "extr2": [1, 2, 3]}, '{"foo":"bar","_entry":"test line 1"}', {"bar": "baz"}),
        (["foo", 'ex"tr2'], {"extr1": "etr1val", 'ex"tr2': '"fd"'},
         '{"ex\\"tr2":"\\"fd\\"","foo":"bar","_entry":"test line 1"}', {"bar": "baz"}),
        # numbers and booleans are written as Promtail's getString writes them
        (["n", "ok"], {"n": 1.5, "ok": False}, '{"n":"1.5","ok":"false","_entry":"test line 1"}', LABELS),
    ],
)
def test_promtail_pack_cases(names, extracted, line, labels_left):
    out = run_with(f"- pack: {{labels: {json.dumps(names)}, ingest_timestamp: false}}", LABELS, extracted)
    assert out.lines == [line]
    assert out.labels[0].as_dict() == labels_left
    assert out.ts == [1_000_000_000]


@pytest.mark.parametrize(
    "line, packed",
    [
        ('{"a": 1}', '{"_entry":"{\\"a\\": 1}"}'),
        # json-iterator's default escapes HTML characters and U+2028/2029, and writes \b, \f as \u00XX
        ("<b>&</b>", '{"_entry":"\\u003cb\\u003e\\u0026\\u003c/b\\u003e"}'),
        ("tab\tnl\nbs\\ \x08\x0c\x01 \u2028 é", '{"_entry":"tab\\tnl\\nbs\\\\ \\u0008\\u000c\\u0001 \\u2028 é"}'),
    ],
)
def test_json_text_is_promtails(line, packed):
    assert run_with("- pack: {ingest_timestamp: false}", {}, {}, line=line).lines == [packed]


def test_ingest_timestamp_is_the_default_and_keeps_order():
    before = time.time_ns()
    r = run_pipeline("- pack: {labels: [container]}", ["a", "b", "c"], labels={"container": "myapp", "pod": "p"}, ts=5)
    assert r.lines == ['{"container":"myapp","_entry":"a"}', '{"container":"myapp","_entry":"b"}',
                       '{"container":"myapp","_entry":"c"}']
    assert r.labels == [{"pod": "p"}] * 3
    ts = [e["ts"] for e in r.entries]
    assert ts[0] >= before and ts == sorted(set(ts))


def test_promtail_pack_pipeline_with_match():
    stages = """\
- match:
    selector: '{container="foo"}'
    stages: [{pack: {labels: [pod, container], ingest_timestamp: false}}]
- match:
    selector: '{container="bar"}'
    stages: [{pack: {labels: [pod, container], ingest_timestamp: true}}]
"""
    common = {"namespace": "dev", "cluster": "us-eu-1"}
    r1 = run_pipeline(stages, ["line 1"], labels={**common, "pod": "foo-xsfs3", "container": "foo"}, ts=7)
    r2 = run_pipeline(stages, ["line 2"], labels={**common, "pod": "foo-vvsdded", "container": "bar"}, ts=7)
    assert r1.labels == [common] and r2.labels == [common]
    assert r1.entries[0]["ts"] == 7 and r2.entries[0]["ts"] > 7
    assert json.loads(r1.lines[0]) == {"pod": "foo-xsfs3", "container": "foo", "_entry": "line 1"}
    assert json.loads(r2.lines[0]) == {"pod": "foo-vvsdded", "container": "bar", "_entry": "line 2"}


def test_values_that_compare_equal_in_python_pack_as_promtail_prints_them():
    batch = Batch.of_lines(["x", "y", "z"], 0)
    batch.fields["v"] = [1, True, 1.0]
    out = build_pipeline("- pack: {labels: [v], ingest_timestamp: false}", StageEnv()).process(batch)
    assert out.lines == ['{"v":"1","_entry":"x"}', '{"v":"true","_entry":"y"}', '{"v":"1","_entry":"z"}']


def test_ingest_timestamp_reads_the_pipelines_clock():
    env = StageEnv(clock=lambda: 1_000.5)
    out = build_pipeline("- pack: {}", env).process(Batch.of_lines(["a", "b"], 0))
    assert out.ts == [1_000_500_000_000, 1_000_500_000_001]
