"""labels, static_labels, labeldrop, labelallow, output: Promtail's semantics."""
from __future__ import annotations

import pytest

from logpipe.batch import Batch, LabelSet
from logpipe.pipeline.stage import StageEnv
from logpipe.testing import build_pipeline, run_pipeline


def run_with_fields(stages: str, fields: dict[str, list], labels: dict[str, str] | None = None):
    n = len(next(iter(fields.values())))
    batch = Batch.of_lines([f"line{i}" for i in range(n)], 0, LabelSet.of(labels or {}))
    batch.fields.update({k: list(v) for k, v in fields.items()})
    return build_pipeline(stages, StageEnv()).process(batch)


@pytest.mark.parametrize(
    "stages, fields, expected",
    [
        # Promtail docs: `labels: {stream: }` takes the extracted key of the same name.
        ("- labels: {stream: }", {"stream": ["stderr"]}, [{"stream": "stderr"}]),
        ("- labels: {lvl: level}", {"level": ["warn"]}, [{"lvl": "warn"}]),
        # numbers print as Go's FormatFloat('f', -1): no exponent, no trailing .0
        ("- labels: {code: }", {"code": [200, 200.0, 1e21, 0.5, True, False]},
         [{"code": "200"}, {"code": "200"}, {"code": "1000000000000000000000"}, {"code": "0.5"},
          {"code": "true"}, {"code": "false"}]),
        # quirk: an empty extracted value still sets the label (to "")
        ("- labels: {level: }", {"level": ["", None]}, [{"level": ""}, {}]),
        # a value with no text (null) leaves the labels alone
        ("- labels: {level: }", {"level": [None]}, [{}]),
        # quirk: static_labels skips an empty value instead of setting ""
        ("- static_labels: {env: prod, empty: ''}", {"x": [1]}, [{"env": "prod"}]),
    ],
)
def test_label_stages(stages, fields, expected):
    out = run_with_fields(stages, fields)
    assert [ls.as_dict() for ls in out.labels] == expected


def test_one_and_true_do_not_share_a_cache_entry():
    # Python's True == 1; Promtail prints "true" and "1": the cache must not mix them.
    out = run_with_fields("- labels: {v: }", {"v": [1, True, 1, 0, False, -0.0, 1.0]})
    assert [ls.get("v") for ls in out.labels] == ["1", "true", "1", "0", "false", "-0", "1"]


def test_entries_of_one_stream_share_one_label_set():
    out = run_with_fields("- labels: {level: }", {"level": ["info", "error", "info", "info"]}, {"job": "a"})
    assert out.labels[0] is out.labels[2] is out.labels[3]
    assert out.labels[1].as_dict() == {"job": "a", "level": "error"}


def test_initial_labels_are_readable_as_extracted_values():
    # Promtail copies the entry's labels into the extracted map before the first stage.
    r = run_pipeline("- output: {source: filename}", ["x"], labels={"filename": "/var/log/a.log"})
    assert r.lines == ["/var/log/a.log"]


@pytest.mark.parametrize(
    "stages, expected",
    [
        ("- labeldrop: [a, missing]", {"b": "2", "c": "3"}),
        ("- labelallow: [a, c]", {"a": "1", "c": "3"}),
    ],
)
def test_labeldrop_labelallow(stages, expected):
    r = run_pipeline(stages, ["x"], labels={"a": "1", "b": "2", "c": "3"})
    assert r.labels == [expected]


def test_output_replaces_line_only_where_value_has_text():
    out = run_with_fields("- output: {source: msg}", {"msg": ["hello", None, 42]})
    assert out.lines == ["hello", "line1", "42"]
