"""cri and docker: Promtail's extensions_test.go cases and documented examples."""
from __future__ import annotations

import pytest

from logpipe.batch import Batch, LabelSet
from logpipe.errors import ConfigError
from logpipe.pipeline.stage import StageEnv
from logpipe.testing import build_pipeline, run_pipeline

NOW = 1_700_000_000_000_000_000

DOCKER_RAW = (
    '{"log":"level=info ts=2019-04-30T02:12:41.844179Z caller=filetargetmanager.go:180 msg=\\"Adding target\\" '
    'key=\\"{com_docker_deploy_namespace=\\\\\\"docker\\\\\\", container_name=\\\\\\"compose\\\\\\"}\\"\\n",'
    '"stream":"stderr","time":"2019-04-30T02:12:41.8443515Z"}'
)
DOCKER_PROCESSED = (
    'level=info ts=2019-04-30T02:12:41.844179Z caller=filetargetmanager.go:180 msg="Adding target" '
    'key="{com_docker_deploy_namespace=\\"docker\\", container_name=\\"compose\\"}"\n'
)


@pytest.mark.parametrize(
    "line, expected_line, expected_ts, expected_labels",
    [
        (DOCKER_RAW, DOCKER_PROCESSED, 1556590361844351500, {"stream": "stderr"}),
        ('{"log":"log message\\n","stream":"stderr","time":"hi!"}', "log message\n", NOW, {"stream": "stderr"}),
        ("i'm not json!", "i'm not json!", NOW, {}),
    ],
)
def test_promtail_docker_cases(line, expected_line, expected_ts, expected_labels):
    r = run_pipeline("- docker: {}", [line], ts=NOW)
    assert r.entries == [{"ts": expected_ts, "labels": expected_labels, "line": expected_line, "structured_metadata": {}}]


def test_docs_docker_extracted_values():
    r = run_pipeline("- docker: {}", ['{"log":"log message\\n","stream":"stderr","time":"2019-04-30T02:12:41.8443515Z"}'])
    ex = r.extracted[0]
    assert (ex["output"], ex["stream"], ex["timestamp"]) == ("log message\n", "stderr", "2019-04-30T02:12:41.8443515Z")


@pytest.mark.parametrize(
    "line, expected_line, expected_ts, expected_labels",
    [
        ("2019-01-01T01:00:00.000000001Z stderr F message", "message", 1546304400000000001, {"stream": "stderr"}),
        ("2019-01-01T01:00:00.000000001Z stderr F message\nmessage2", "message\nmessage2", 1546304400000000001,
         {"stream": "stderr"}),
        ("3242 stderr F message", "message", NOW, {"stream": "stderr"}),
        ("i'm invalid!!!", "i'm invalid!!!", NOW, {}),
    ],
)
def test_promtail_cri_cases(line, expected_line, expected_ts, expected_labels):
    r = run_pipeline("- cri: {}", [line], ts=NOW)
    assert r.entries == [{"ts": expected_ts, "labels": expected_labels, "line": expected_line, "structured_metadata": {}}]


def test_docs_cri_extracted_values():
    r = run_pipeline("- cri: {}", ["2019-04-30T02:12:41.8443515Z stdout F message"])
    ex = r.extracted[0]
    assert (ex["content"], ex["stream"], ex["flags"], ex["time"]) == ("message", "stdout", "F", "2019-04-30T02:12:41.8443515Z")


T1 = "2019-05-07T18:57:50.904275087+00:00 stdout"
T2 = "2019-05-07T18:57:55.904275087+00:00 stdout"


# Promtail's TestCRI_tags table: (config, entries as (line, labels), expected lines).
CRI_TAG_CASES = {
    "tag F": ("{}", [(f"{T1} F some full line", {"foo": "bar"}), (f"{T2} F log", {"foo": "bar"})],
              ["some full line", "log"]),
    "tag P multi-stream": ("{}", [
        (f"{T1} P partial line 1 ", {"foo": "bar"}),
        (f"{T1} P partial line 2 ", {"foo": "bar2"}),
        (f"{T2} F log finished", {"foo": "bar"}),
        (f"{T2} F another full log", {"foo": "bar2"}),
    ], ["partial line 1 log finished", "partial line 2 another full log"]),
    # the bound is on streams with partial lines in flight: past it, all held lines go out
    "tag P multi-stream with maxPartialLines exceeded": ("{max_partial_lines: 3}", [
        (f"{T1} P partial line 1 ", {"label1": "val1", "label2": "val2"}),
        (f"{T1} P partial line 2 ", {"label1": "val1"}),
        (f"{T1} P partial line 3 ", {"label1": "val1", "label2": "val2"}),
        (f"{T1} P partial line 4 ", {"label1": "val3"}),
        (f"{T1} P partial line 5 ", {"label1": "val4"}),
        (f"{T2} F log finished", {"label1": "val1", "label2": "val2"}),
        (f"{T2} F another full log", {"label1": "val3"}),
        (f"{T2} F yet an another full log", {"label1": "val4"}),
    ], ["partial line 1 partial line 3 ", "partial line 2 ", "partial line 4 ", "log finished", "another full log",
        "partial line 5 yet an another full log"]),
    # quirk: one stream's partial lines are never bounded by max_partial_lines
    "tag P single stream": ("{max_partial_lines: 3}", [
        (f"{T1} P partial line 1 ", {"foo": "bar"}),
        (f"{T1} P partial line 2 ", {"foo": "bar"}),
        (f"{T1} P partial line 3 ", {"foo": "bar"}),
        (f"{T1} P partial line 4 ", {"foo": "bar"}),
        (f"{T2} F log finished", {"foo": "bar"}),
        (f"{T2} F another full log", {"foo": "bar"}),
    ], ["partial line 1 partial line 2 partial line 3 partial line 4 log finished", "another full log"]),
    "tag P multi-stream with truncation": ("{max_partial_line_size: 11, max_partial_line_size_truncate: true}", [
        (f"{T1} P partial line 1 ", {"foo": "bar"}),
        (f"{T1} P partial", {"foo": "bar2"}),
        (f"{T2} F log finished", {"foo": "bar"}),
        (f"{T2} F full", {"foo": "bar2"}),
    ], ["partial lin", "partialfull"]),
}


@pytest.mark.parametrize("name", list(CRI_TAG_CASES))
@pytest.mark.parametrize("batched", [False, True])
def test_promtail_cri_tags(name, batched):
    config, entries, expected = CRI_TAG_CASES[name]
    pipeline = build_pipeline(f"- cri: {config}", StageEnv())
    batches = [[e] for e in entries] if not batched else [entries]
    got = []
    for chunk in batches:
        batch = Batch([line for line, _ in chunk], [0] * len(chunk), [LabelSet.of(ls) for _, ls in chunk])
        got.extend(pipeline.process(batch).lines)
    assert got == expected
    assert pipeline.flush(None) is None


def test_a_joined_line_has_the_full_lines_timestamp_and_labels():
    r = run_pipeline("- cri: {}", [f"{T1} P part one, ", f"{T2} F part two"], labels={"job": "k"})
    assert r.entries == [{"ts": 1557255475904275087, "labels": {"job": "k", "stream": "stdout"},
                          "line": "part one, part two", "structured_metadata": {}}]


def test_partial_lines_still_held_when_the_input_ends_are_released_not_lost():
    pipeline = build_pipeline("- cri: {}", StageEnv())
    assert pipeline.process(Batch.of_lines([f"{T1} P unfinished"], 0)).lines == []
    assert pipeline.flush(123.0) is None  # no timeout for partial lines, as in Promtail
    assert pipeline.flush(None).lines == ["unfinished"]


def test_truncation_counts_bytes_and_drops_a_split_character():
    r = run_pipeline("- cri: {max_partial_line_size: 4, max_partial_line_size_truncate: true}", [f"{T1} P aéé"])
    assert r.lines == ["aé"]


def test_max_partial_line_size_accepts_promtail_sizes():
    r = run_pipeline("- cri: {max_partial_line_size: 1kb, max_partial_line_size_truncate: true}", [f"{T1} P " + "x" * 2000])
    assert r.lines == ["x" * 1024]
    with pytest.raises(ConfigError):
        build_pipeline("- cri: {max_partial_line_size: lots}")
