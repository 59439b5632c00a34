"""drop: Promtail's drop_test.go cases and documented examples."""
from __future__ import annotations

import time

import pytest

from logpipe.batch import Batch, LabelSet
from logpipe.errors import ConfigError
from logpipe.pipeline.drop import parse_datasize
from logpipe.pipeline.stage import StageEnv
from logpipe.testing import build_pipeline, run_pipeline

HOUR = 3600 * 10**9


def run_with(stages: str, line: str, extracted: dict, ts: int | None = None) -> tuple[list[str], StageEnv]:
    """One entry with an extracted map (values of any type), through the stages."""
    env = StageEnv()
    batch = Batch.of_lines([line], time.time_ns() if ts is None else ts)
    batch.fields.update({k: [v] for k, v in extracted.items()})
    out = build_pipeline(stages, env).process(batch)
    return out.lines, env


NOW = time.time_ns()


# Promtail's Test_dropStage_Process table: (config, extracted, line, timestamp, dropped).
@pytest.mark.parametrize(
    "config, extracted, line, ts, dropped",
    [
        ("{longer_than: 10b}", {}, "12345678901", None, True),
        ("{longer_than: 10b}", {}, "1234567890", None, False),  # equal is not longer
        ("{longer_than: 10b}", {}, "123456789", None, False),
        ("{older_than: 1h}", {}, "", NOW - 2 * HOUR, True),
        ("{older_than: 1h}", {}, "", NOW - HOUR // 12, False),
        ("{source: key}", {"key": ""}, "", None, True),  # present, even empty, is enough
        ("{source: key1}", {"key": "val1"}, "", None, False),
        ("{source: key, value: val1}", {"key": "val1"}, "", None, True),
        ("{source: key, value: val1}", {"key": "VALRUE1"}, "", None, False),
        ("{source: key, expression: '.*val.*'}", {"key": "val1"}, "", None, True),
        ("{source: key, expression: '.*val.*'}", {"key": "pal1"}, "", None, False),
        ("{source: key, expression: '.*val.*'}", {"pokey": "pal1"}, "", None, False),
        ("{expression: '.*val.*'}", {}, "this is a line which does not match the regex", None, False),
        ("{expression: '.*val.*'}", {}, "this is a line with the word value in it", None, True),
        ("{source: key, longer_than: 10b}", {"key": "pal1"}, "12345678901", None, True),
        ("{source: key, longer_than: 10b}", {"key": "pal1"}, "123456789", None, False),
        ("{source: key, longer_than: 10b}", {"WOOOOOOOOOOOOOO": "pal1"}, "123456789012", None, False),
        ("{source: key, expression: '.*val.*', older_than: 1h, longer_than: 10b}",
         {"key": "must contain value to match"}, "12345678901", NOW - 2 * HOUR, True),
        # the expression is unanchored, and value is an exact comparison (^QuoteMeta(value)$)
        ("{expression: 'debug'}", {}, "a debug line", None, True),
        ("{source: key, value: 'a.c'}", {"key": "abc"}, "", None, False),
        ("{source: key, value: 'x'}", {"key": "x\n"}, "", None, False),
        # numbers and booleans compare as Promtail prints them
        ("{source: code, value: '500'}", {"code": 500.0}, "", None, True),
        ("{source: ok, value: 'true'}", {"ok": True}, "", None, True),
        # a value with no text (a map) never matches
        ("{source: obj, expression: '.*'}", {"obj": {"a": 1}}, "", None, False),
        # longer_than counts UTF-8 bytes, not characters
        ("{longer_than: 4}", {}, "héé", None, True),
        ("{longer_than: 5}", {}, "héé", None, False),
    ],
)
def test_promtail_drop_cases(config, extracted, line, ts, dropped):
    lines, env = run_with(f"- drop: {config}", line, extracted, ts)
    assert lines == ([] if dropped else [line])
    count = env.metrics.registry.get_sample_value("logpipe_dropped_entries_total", {"reason": "drop_stage", "host": ""})
    assert (count or 0) == (1 if dropped else 0)


@pytest.mark.parametrize(
    "config, extracted, dropped",
    [
        # docs: source list drops an entry that has every listed field
        ("{source: [level, msg]}", {"level": "error", "msg": "x"}, True),
        ("{source: [level, msg]}", {"level": "error"}, False),
        # docs: regex over the concatenated sources with a separator
        ("{source: [level, msg], separator: '#', expression: '(error|ERROR)#.*/loki/api/push.*'}",
         {"level": "ERROR", "msg": '11.11.11.11 - "POST /loki/api/push/ HTTP/1.1" 200 932'}, True),
        ("{source: [level, msg], separator: '#', expression: '(error|ERROR)#.*/loki/api/push.*'}",
         {"level": "info", "msg": '11.11.11.11 - "POST /loki/api/push/ HTTP/1.1" 200 932'}, False),
        # the default separator is ";"
        ("{source: [a, b], value: 'x;y'}", {"a": "x", "b": "y"}, True),
        # quirk: with value or expression, absent sources are left out of the join
        ("{source: [a, b], value: 'x'}", {"a": "x"}, True),
        # quirk: no source present joins to "", which an expression may match
        ("{source: missing, expression: '^$'}", {}, True),
    ],
)
def test_source_lists(config, extracted, dropped):
    lines, _ = run_with(f"- drop: {config}", "line", extracted)
    assert lines == ([] if dropped else ["line"])


def test_docs_drop_old_lines_with_reason():
    now = time.time_ns()
    r = run_pipeline("- drop: {older_than: 24h, drop_counter_reason: line_too_old}", ["old", "new"],
                     ts=[now - 25 * HOUR, now - 23 * HOUR])
    assert r.lines == ["new"]
    assert r.counter("logpipe_dropped_entries_total", reason="line_too_old") == 1


def test_counts_once_per_batch_and_keeps_order():
    r = run_pipeline("- drop: {expression: noisy}", ["a", "noisy 1", "b", "noisy 2", "noisy 3", "c"])
    assert r.lines == ["a", "b", "c"]
    assert r.counter("logpipe_dropped_entries_total", reason="drop_stage") == 3


def test_extracted_values_include_the_entry_labels():
    r = run_pipeline("- drop: {source: app, value: loki}", ["x"], labels={"app": "loki"})
    assert r.lines == []


@pytest.mark.parametrize(
    "text, size",
    [("8kb", 8192), ("8KB", 8192), ("10b", 10), ("10000", 10000), ("1MB", 1 << 20), ("2g", 2 << 30), ("0", 0)],
)
def test_longer_than_sizes_are_powers_of_1024_as_in_promtail(text, size):
    assert parse_datasize(text) == size


@pytest.mark.parametrize(
    "config, path, message",
    [
        ("{}", "pipeline_stages[0].drop",
         "drop stage config must contain at least one of `source`, `expression`, `older_than` or `longer_than`"),
        ("{source: a, value: x, expression: y}", "pipeline_stages[0].drop",
         "drop stage config error, `value` and `expression` cannot both be defined at the same time."),
        ("{value: x, longer_than: 1}", "pipeline_stages[0].drop.value",
         "drop stage config must contain `source` if `value` is specified"),
        ("{expression: '(?P<ts[0-9]+).*'}", "pipeline_stages[0].drop.expression", "drop stage regex compilation error: "),
        ("{longer_than: 23QB}", "pipeline_stages[0].drop.longer_than",
         'drop stage failed to parse longer_than to bytes: strconv.UnmarshalText: parsing "23QB": invalid syntax'),
        ("{older_than: soon}", "pipeline_stages[0].drop.older_than", "invalid duration 'soon'"),
    ],
)
def test_config_errors(config, path, message):
    with pytest.raises(ConfigError) as e:
        build_pipeline(f"- drop: {config}")
    assert [i.path for i in e.value.issues] == [path]
    assert e.value.issues[0].message.startswith(message)


def test_streams_of_one_batch_are_judged_entry_by_entry():
    batch = Batch(["a", "b", "c"], [0, 0, 0], [LabelSet.of({"lvl": "debug"}), LabelSet.of({"lvl": "info"}), LabelSet.of({})])
    out = build_pipeline("- drop: {source: lvl, value: debug}", StageEnv()).process(batch)
    assert out.lines == ["b", "c"]


def test_older_than_reads_the_pipelines_clock():
    # `--clock` pins "now" for a dry run: the same input then drops the same entries
    env = StageEnv(clock=lambda: 1_000_000.0)
    batch = Batch.of_lines(["old", "new"], [(1_000_000 - 7200) * 10**9, (1_000_000 - 60) * 10**9])
    out = build_pipeline("- drop: {older_than: 1h}", env).process(batch)
    assert out.lines == ["new"]
