"""The metrics stage: Promtail's semantics, the cardinality guard, idle expiry, and exactness
against an entry-at-a-time reference with client_golang's arithmetic."""
from __future__ import annotations

import logging
import math
import random
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from logpipe.batch import Batch, LabelSet
from logpipe.errors import ConfigError, LogpipeError
from logpipe.pipeline.metrics import DEFAULT_BUCKETS, DerivedMetrics, go_float_label, go_number
from logpipe.pipeline.stage import StageEnv
from logpipe.pipeline.values import go_string
from logpipe.telemetry import SelfMetrics
from logpipe.testing import build_pipeline

INF, NAN = math.inf, math.nan


def new_env() -> StageEnv:
    return StageEnv(metrics=SelfMetrics())


def make_batch(fields: dict[str, list], labels: list[dict] | dict | None = None, lines: list[str] | None = None) -> Batch:
    n = len(lines) if lines is not None else len(next(iter(fields.values())))
    lines = lines if lines is not None else [f"line{i}" for i in range(n)]
    if isinstance(labels, list):
        label_col = [LabelSet.of(x) for x in labels]
    else:
        label_col = [LabelSet.of(labels or {})] * n
    batch = Batch(list(lines), [0] * n, label_col)
    batch.fields.update({k: list(v) for k, v in fields.items()})
    return batch


def run(stages: str, fields: dict[str, list], labels: Any = None, lines: list[str] | None = None,
        env: StageEnv | None = None) -> StageEnv:
    env = env or new_env()
    build_pipeline(stages, env).process(make_batch(fields, labels, lines))
    return env


def sample(env: StageEnv, name: str, **labels: str) -> float | None:
    return env.metrics.registry.get_sample_value(name, labels)


def same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


# --- Promtail's conversions --------------------------------------------------------------------

@pytest.mark.parametrize(
    "value, expected",
    [
        (0.804, 0.804), (3, 3.0), ("0.804", 0.804), ("5", 5.0), ("1e3", 1000.0), ("-2.5", -2.5), (".5", 0.5),
        # docs: booleans are 1 and 0
        (True, 1.0), (False, 0.0),
        # docs: a duration string is its seconds
        ("0.5ms", 0.0005), ("932ms", 0.932), ("10h", 36000.0), ("1h30m", 5400.0), ("-1.5s", -1.5),
        ("1.5us", 1.5e-6), ("1.5\u00b5s", 1.5e-6), ("1.s", 1.0), (".5s", 0.5), ("0", 0.0),
        # quirk: strconv.ParseFloat takes Go literal syntax: underscores between digits, hex floats
        ("1_000", 1000.0), ("0x1p-2", 0.25), ("0x_1.8p1", 3.0),
        # quirk: ParseFloat's special values; only the infinities take a sign
        ("inf", INF), ("+Inf", INF), ("-infinity", -INF), ("NaN", NAN), ("-nan", None), ("+NaN", None),
        # quirk: ParseFloat refuses what overflows, where Python's float() says inf
        ("1e999", None), ("-1e999", None), ("1e-999", 0.0),
        # where Python's float() is more lenient than Go
        (" 1", None), ("1 ", None), ("1\n", None), ("\u0663", None), ("1__0", None), ("_1", None),
        # Go durations have no day unit, and need a unit after every number
        ("1d", None), ("1h30", None), ("0x10", None), ("", None), (".", None), ("abc", None),
        ("9999999999999999999h", None),
        (None, None), ({"a": 1}, None), ([1], None),
    ],
)
def test_value_conversion_is_promtails_getfloat(value, expected):
    assert same(go_number(value), expected)


@pytest.mark.parametrize(
    "bound, text",
    [(1.0, "1"), (0.005, "0.005"), (2.5, "2.5"), (100000.0, "100000"), (1e6, "1e+06"), (1234567.0, "1.234567e+06"),
     (1e-5, "1e-05"), (0.0001, "0.0001"), (-1.0, "-1"), (0.0, "0")],
)
def test_bucket_bounds_print_as_client_golang_does(bound, text):
    assert go_float_label(bound) == text


# --- config validation -------------------------------------------------------------------------

def metrics_yaml(body: str) -> str:
    return "- metrics:\n" + "".join("    " + line + "\n" for line in body.strip("\n").splitlines())


@pytest.mark.parametrize(
    "body, path, message",
    [
        ("", "pipeline_stages[0].metrics", "empty metric stage configuration"),
        ("m: {type: Pipe_line}", "pipeline_stages[0].metrics.m.type", "invalid metric type 'pipe_line'"),
        ("m: {type: Counter}", "pipeline_stages[0].metrics.m.config.action",
         "counter action must be defined as either `inc` or `add`"),
        ("m: {type: Counter, config: {action: set}}", "pipeline_stages[0].metrics.m.config.action",
         "action set is not valid, action must be either `inc` or `add`"),
        ("m: {type: Counter, config: {action: inc, match_all: true, value: x}}",
         "pipeline_stages[0].metrics.m.config.match_all", "`match_all: true` cannot be combined with `value`"),
        ("m: {type: Counter, config: {action: add, count_entry_bytes: true}}",
         "pipeline_stages[0].metrics.m.config.count_entry_bytes", "can only be set with `match_all: true`"),
        ("m: {type: Counter, config: {action: inc, match_all: true, count_entry_bytes: true}}",
         "pipeline_stages[0].metrics.m.config.count_entry_bytes", "can only be used with `action: add`"),
        ("m: {type: Counter, config: {action: add, match_all: true}}", "pipeline_stages[0].metrics.m.config.action",
         "needs `count_entry_bytes: true`"),
        ("m: {type: Gauge}", "pipeline_stages[0].metrics.m.config.action",
         "gauge action must be defined as `set`, `inc`, `dec`, `add`, or `sub`"),
        ("m: {type: Gauge, config: {action: mul}}", "pipeline_stages[0].metrics.m.config.action",
         "action mul is not valid"),
        ("m: {type: Histogram, config: {buckets: [1, 1]}}", "pipeline_stages[0].metrics.m.config.buckets",
         "histogram buckets must be in increasing order"),
        ("m: {type: Histogram, config: {buckets: [2, 1]}}", "pipeline_stages[0].metrics.m.config.buckets",
         "increasing order"),
        ("m: {type: Counter, max_idle_duration: 500ms, config: {action: inc}}",
         "pipeline_stages[0].metrics.m.max_idle_duration", "max_idle_duration less than 1s not allowed"),
        ("m: {type: Counter, max_idle_duration: 10f, config: {action: inc}}",
         "pipeline_stages[0].metrics.m.max_idle_duration", "invalid duration"),
        ("bad-name: {type: Counter, config: {action: inc}}", "pipeline_stages[0].metrics.bad-name",
         "not a valid Prometheus metric name"),
        ("m: {type: Counter, prefix: 9x_, config: {action: inc}}", "pipeline_stages[0].metrics.m.prefix",
         "not a valid Prometheus metric name"),
        ("m: {type: Counter, config: {action: inc, sources: x}}", "pipeline_stages[0].metrics.m.config.sources",
         "unknown key 'sources'"),
    ],
)
def test_bad_config_is_reported_at_its_yaml_path(body, path, message):
    with pytest.raises(ConfigError) as e:
        build_pipeline(metrics_yaml(body) if body else "- metrics:\n")
    assert any(i.path == path and message in i.message for i in e.value.issues), e.value.issues
    assert all(i.line > 0 for i in e.value.issues)


def test_every_problem_is_reported_at_once():
    body = "a: {type: Counter}\nb: {type: Gauge, config: {action: x}}\nc: {type: Histogram, config: {buckets: [3, 2]}}"
    with pytest.raises(ConfigError) as e:
        build_pipeline(metrics_yaml(body))
    assert [i.path.split(".")[2] for i in e.value.issues] == ["a", "b", "c"]


def test_type_and_action_are_case_insensitive():
    env = run(metrics_yaml("m: {type: COUNTER, source: x, config: {action: INC}}"), {"x": ["a", "b"]})
    assert sample(env, "logpipe_custom_m_total") == 2


def test_options_promtail_ignores_for_a_type_are_ignored_with_a_warning(caplog):
    # Promtail's own TestNegativeGauge gives a gauge `match_all: true`, which Promtail never reads.
    stages = metrics_yaml("longitude: {type: Gauge, config: {match_all: true, action: set}}")
    with caplog.at_level(logging.WARNING):
        env = run(stages, {"longitude": ["-10.1234"]}, labels={"test": "app", "vehicle": "1"})
    assert sample(env, "logpipe_custom_longitude", test="app", vehicle="1") == -10.1234
    assert "`match_all` has no meaning for a gauge" in caplog.text


# --- Promtail's semantics, row by row ----------------------------------------------------------

PROMTAIL_PIPELINE = """
loki_count:
  type: Counter
  description: uhhhhhhh
  prefix: my_promtail_custom_
  source: app
  config: {value: loki, action: inc}
bloki_count:
  type: Gauge
  description: blerrrgh
  source: app
  config: {value: bloki, action: dec}
total_lines_count:
  type: Counter
  config: {match_all: true, action: inc}
total_bytes_count:
  type: Counter
  config: {match_all: true, count_entry_bytes: true, action: add}
payload_size_bytes:
  type: Histogram
  description: grrrragh
  source: payload
  config: {buckets: [10, 20]}
"""

PROMTAIL_EXPOSITION = """\
# HELP my_promtail_custom_loki_count_total uhhhhhhh
# TYPE my_promtail_custom_loki_count_total counter
my_promtail_custom_loki_count_total{test="app"} 1.0
# HELP logpipe_custom_bloki_count blerrrgh
# TYPE logpipe_custom_bloki_count gauge
logpipe_custom_bloki_count{test="app"} -1.0
# HELP logpipe_custom_total_lines_count_total 
# TYPE logpipe_custom_total_lines_count_total counter
logpipe_custom_total_lines_count_total{test="app"} 2.0
# HELP logpipe_custom_total_bytes_count_total 
# TYPE logpipe_custom_total_bytes_count_total counter
logpipe_custom_total_bytes_count_total{test="app"} 255.0
# HELP logpipe_custom_payload_size_bytes grrrragh
# TYPE logpipe_custom_payload_size_bytes histogram
logpipe_custom_payload_size_bytes_bucket{le="10",test="app"} 1.0
logpipe_custom_payload_size_bytes_bucket{le="20",test="app"} 2.0
logpipe_custom_payload_size_bytes_bucket{le="+Inf",test="app"} 2.0
logpipe_custom_payload_size_bytes_count{test="app"} 2.0
logpipe_custom_payload_size_bytes_sum{test="app"} 30.0
"""


def test_promtails_metrics_pipeline_test_gives_the_same_exposition():
    # Promtail's TestMetricsPipeline: two JSON lines of 255 bytes together, app loki then bloki.
    lines = ["x" * 100, "y" * 155]
    env = run(metrics_yaml(PROMTAIL_PIPELINE), {"app": ["loki", "bloki"], "payload": [10.0, 20.0]},
              labels={"test": "app"}, lines=lines)
    text = generate_latest(env.metrics.registry).decode()
    derived = text[text.index("# HELP my_promtail_custom"):]
    # Counters are exposed with `_total` (Promtail exposes the configured name as it is).
    assert derived == PROMTAIL_EXPOSITION
    assert list(text_string_to_metric_families(derived))  # Prometheus text parses


C = "logpipe_custom_m_total"
G = "logpipe_custom_m"


@pytest.mark.parametrize(
    "config, values, expected",
    [
        # inc counts every entry that has the key, whatever its value ("" too): no number needed
        ("{type: Counter, source: v, config: {action: inc}}", ["abc", "", 5, None, False], {C: 4}),
        # Promtail's value filter compares getString's text: numbers print as Go's 'f' -1
        ("{type: Counter, source: v, config: {value: '1', action: inc}}", [1.0, 1, "1", "1.0", True, None], {C: 3}),
        # quirk: a bool compares as "true"/"false" (Promtail's contains_warn test)
        ("{type: Counter, source: v, config: {value: 'true', action: inc}}", [True, "true", 1, False], {C: 2}),
        # an unquoted YAML number still compares as its text
        ("{type: Counter, source: v, config: {value: 500, action: inc}}", ["500", 500.0, "500.0"], {C: 2}),
        # no entry passes the filter: the series is never created (Promtail's contains_false)
        ("{type: Counter, source: v, config: {value: 'true', action: add}}", [False], {C: None}),
        ("{type: Counter, source: v, config: {action: add}}", ["1.5", "2", 4, True], {C: 8.5}),
        # docs: a duration string adds its seconds (Promtail's response_time test: "932ms")
        ("{type: Counter, source: v, config: {action: add}}", ["932ms", "1m"], {C: 60.932}),
        # not a number: skipped; client_golang would panic on a negative add: skipped too
        ("{type: Counter, source: v, config: {action: add}}", ["abc", "-3", 2, " 1"], {C: 2}),
        # client_golang keeps whole adds apart from fractional ones: not the plain running sum
        ("{type: Counter, source: v, config: {action: add}}",
         [9.0, 0.13534597739545295, 0.3207259553606644, 0.38023023952669166, 9], {C: 18.83630217228281}),
        # quirk: NaN is a number to ParseFloat, and it poisons the counter as in client_golang
        ("{type: Counter, source: v, config: {action: add}}", ["1", "NaN", "2"], {C: NAN}),
        ("{type: Gauge, source: v, config: {action: set}}", ["1", "5", "3"], {G: 3}),
        ("{type: Gauge, source: v, config: {action: set}}", ["1", "x", None], {G: 1}),
        ("{type: Gauge, source: v, config: {action: inc}}", ["a", "b", None], {G: 2}),
        ("{type: Gauge, source: v, config: {action: dec}}", ["a", "b"], {G: -2}),
        ("{type: Gauge, source: v, config: {action: add}}", ["1.5", -4, "0.5ms"], {G: -2.4995}),
        ("{type: Gauge, source: v, config: {action: sub}}", ["1", -2, "x"], {G: 1}),
        ("{type: Gauge, source: v, config: {value: '7', action: set}}", ["7", "8"], {G: 7}),
        # a key no entry has: nothing is recorded
        ("{type: Gauge, source: other, config: {action: inc}}", ["1"], {G: None}),
        # the source defaults to the metric's name
        ("{type: Gauge, config: {action: set}}", ["1"], {G: None}),
    ],
)
def test_counter_and_gauge_semantics(config, values, expected):
    env = run(metrics_yaml(f"m: {config}"), {"v": values})
    for name, value in expected.items():
        assert same(sample(env, name), value), (name, sample(env, name))


def test_source_defaults_to_the_metric_name():
    env = run(metrics_yaml("m: {type: Gauge, config: {action: set}}"), {"m": ["4"]})
    assert sample(env, G) == 4


H = "logpipe_custom_h"


@pytest.mark.parametrize(
    "config, values, buckets, total, count",
    [
        # `le` is inclusive: a value equal to a bound counts in that bucket
        ("{buckets: [1, 2]}", [1.0, 1.5, 2, 3], {"1": 1, "2": 3, "+Inf": 4}, 7.5, 4),
        ("{buckets: [1, 2]}", ["0.5", "1500ms", True, False], {"1": 3, "2": 4, "+Inf": 4}, 3.0, 4),
        # NaN and +Inf land only in +Inf; -Inf in the first bucket
        ("{buckets: [1, 2]}", ["NaN", "+Inf", "-Inf"], {"1": 1, "2": 1, "+Inf": 3}, NAN, 3),
        # unparsable values are skipped
        ("{buckets: [1, 2]}", ["x", None, "", "2"], {"1": 0, "2": 1, "+Inf": 1}, 2.0, 1),
        # text Python's float() reads differently from ParseFloat: 1e999 and -nan are refused
        ("{buckets: [1, 2]}", ["1", "1e999", "-nan", "NaN"], {"1": 1, "2": 1, "+Inf": 2}, NAN, 2),
        # many entries, few distinct texts
        ("{buckets: [1, 2]}", ["0.5", "1500ms", "x", "-nan"] * 40, {"1": 40, "2": 80, "+Inf": 80}, 80.0, 80),
        # a trailing +Inf bound is the implicit one
        ("{buckets: [1, .inf]}", [5], {"1": 0, "+Inf": 1}, 5.0, 1),
        ("{value: '20', buckets: [10, 20]}", [10.0, 20.0, "20"], {"10": 0, "20": 2, "+Inf": 2}, 40.0, 2),
        # without buckets, client_golang's DefBuckets
        ("{}", [0.003, 0.7, 11], {"0.005": 1, "0.01": 1, "0.5": 1, "1": 2, "10": 2, "+Inf": 3}, 11.703, 3),
    ],
)
def test_histogram_semantics(config, values, buckets, total, count):
    env = run(metrics_yaml(f"h: {{type: Histogram, source: v, config: {config}}}"), {"v": values})
    for le, n in buckets.items():
        assert sample(env, H + "_bucket", le=le) == n, le
    assert same(sample(env, H + "_sum"), total)
    assert sample(env, H + "_count") == count


def test_default_buckets_are_client_golangs():
    env = run(metrics_yaml("h: {type: Histogram, source: v}"), {"v": [1]})
    les = [s.labels["le"] for f in env.metrics.registry.collect() if f.name == H for s in f.samples
           if s.name.endswith("_bucket")]
    assert les == [go_float_label(b) for b in DEFAULT_BUCKETS] + ["+Inf"]
    assert les[:3] == ["0.005", "0.01", "0.025"] and "1" in les


def test_count_entry_bytes_counts_utf8_bytes_of_the_line_at_this_point():
    stages = metrics_yaml("b: {type: Counter, config: {match_all: true, count_entry_bytes: true, action: add}}")
    env = run(stages, {"x": [1, 2, 3]}, lines=["abc", "é", "日本"])
    assert sample(env, "logpipe_custom_b_total") == 3 + 2 + 6


def test_metric_labels_are_the_entrys_labels_without_reserved_ones():
    labels = [{"job": "a", "__meta": "1"}, {"job": "a"}, {"job": "b", "le": "x"}, {"job": "b", "le": "x"}]
    stages = metrics_yaml("c: {type: Counter, config: {match_all: true, action: inc}}\n"
                          "h: {type: Histogram, source: v, config: {buckets: [1]}}")
    env = run(stages, {"v": [1, 1, 1, 1]}, labels=labels)
    # `__` labels are left out (Promtail's cleanLabels): both `job="a"` entries share one series
    assert sample(env, "logpipe_custom_c_total", job="a") == 2
    assert sample(env, "logpipe_custom_c_total", job="b", le="x") == 2
    # a histogram cannot carry `le` (client_golang panics on it): it is left out there
    assert sample(env, H + "_count", job="b") == 2


def test_counter_names_get_total_once():
    stages = metrics_yaml("lines_total: {type: Counter, config: {match_all: true, action: inc}}\n"
                          "lines: {type: Counter, prefix: app_, config: {match_all: true, action: inc}}")
    env = run(stages, {"x": [1]})
    assert sample(env, "logpipe_custom_lines_total") == 1
    assert sample(env, "app_lines_total") == 1


def test_values_that_are_not_numbers_are_counted_once_per_batch():
    stages = metrics_yaml("h: {type: Histogram, source: v}\nc: {type: Counter, source: v, config: {action: add}}")
    env = run(stages, {"v": ["1", "x", "-2", None, "y"]})
    assert sample(env, "logpipe_metric_value_errors_total", metric=H) == 2
    assert sample(env, "logpipe_metric_value_errors_total", metric="logpipe_custom_c") == 3
    assert sample(env, "logpipe_stage_errors_total", stage="metrics", reason="value_not_a_number") == 4
    assert sample(env, "logpipe_stage_errors_total", stage="metrics", reason="negative_counter_add") == 1
    assert sample(env, H + "_count") == 2


def test_entries_are_left_as_they_are():
    batch = make_batch({"v": ["1", "x"]}, {"job": "a"})
    out = build_pipeline(metrics_yaml("h: {type: Histogram, source: v}")).process(batch)
    assert out.lines == ["line0", "line1"] and out.fields["v"] == ["1", "x"]


def test_each_label_set_gets_its_own_series():
    labels = [{"model": m} for m in ["a", "b", "a", "c", "b", "a"]]
    stages = metrics_yaml("c: {type: Counter, source: v, config: {action: add}}\n"
                          "g: {type: Gauge, source: v, config: {action: set}}")
    env = run(stages, {"v": [1, 2, 3, 4, 5, 6]}, labels=labels)
    assert [sample(env, "logpipe_custom_c_total", model=m) for m in "abc"] == [10, 7, 4]
    assert [sample(env, "logpipe_custom_g", model=m) for m in "abc"] == [6, 5, 4]


def test_collector_yields_metric_families():
    stages = metrics_yaml("c: {type: Counter, source: v, config: {action: inc}}\n"
                          "g: {type: Gauge, source: v, config: {action: inc}}\nh: {type: Histogram, source: v}")
    env = run(stages, {"v": [1]})
    families = {f.name: f for f in DerivedMetrics.of(env.metrics.registry).collect()}
    assert isinstance(families["logpipe_custom_c"], CounterMetricFamily)
    assert isinstance(families["logpipe_custom_g"], GaugeMetricFamily)
    assert isinstance(families[H], HistogramMetricFamily)


# --- sharing, cardinality, expiry --------------------------------------------------------------

def test_pipelines_defining_one_metric_share_its_series():
    env = new_env()
    stages = metrics_yaml("c: {type: Counter, config: {match_all: true, action: inc}}")
    build_pipeline(stages, env).process(make_batch({"x": [1, 2]}, {"job": "a"}))
    build_pipeline(stages, env).process(make_batch({"x": [1]}, {"job": "a"}))
    assert sample(env, "logpipe_custom_c_total", job="a") == 3


def test_counters_named_with_and_without_total_are_one_metric():
    env = new_env()
    build_pipeline(metrics_yaml("lines: {type: Counter, config: {match_all: true, action: inc}}\n"
                                "lines_total: {type: Counter, config: {match_all: true, action: inc}}"), env
                   ).process(make_batch({"x": [1]}))
    assert sample(env, "logpipe_custom_lines_total") == 2
    assert generate_latest(env.metrics.registry).decode().count("# TYPE logpipe_custom_lines_total") == 1


def test_one_name_with_two_types_is_refused():
    env = new_env()
    build_pipeline(metrics_yaml("c: {type: Counter, config: {match_all: true, action: inc}}"), env)
    with pytest.raises(LogpipeError, match="defined twice, as a counter and as a gauge"):
        build_pipeline(metrics_yaml("c: {type: Gauge, config: {action: inc}}"), env)


def test_max_series_refuses_new_series_counts_them_and_warns_once(caplog):
    env = new_env()
    pipeline = build_pipeline(metrics_yaml("c: {type: Counter, max_series: 2, config: {match_all: true, action: inc}}"), env)
    with caplog.at_level(logging.WARNING):
        pipeline.process(make_batch({"x": [1] * 4}, [{"k": "a"}, {"k": "b"}, {"k": "c"}, {"k": "a"}]))
        pipeline.process(make_batch({"x": [1] * 3}, [{"k": "c"}, {"k": "d"}, {"k": "b"}]))
    assert [sample(env, "logpipe_custom_c_total", k=k) for k in "abcd"] == [2, 2, None, None]
    assert sample(env, "logpipe_metric_series_dropped_total", metric="logpipe_custom_c") == 3
    assert caplog.text.count("reached max_series") == 1


def test_max_series_zero_means_no_limit():
    env = run(metrics_yaml("c: {type: Counter, max_series: 0, config: {match_all: true, action: inc}}"),
              {"x": [1] * 3}, labels=[{"k": str(i)} for i in range(3)])
    assert [sample(env, "logpipe_custom_c_total", k=str(i)) for i in range(3)] == [1, 1, 1]


@pytest.mark.parametrize("idle, seconds", [("", 300), ("max_idle_duration: 24h,", 86400), ("max_idle_duration: 1500ms,", 1)])
def test_idle_series_disappear_at_collection(idle, seconds):
    # Promtail's default max_idle_duration is 5m; its idle check is in whole seconds.
    env = new_env()
    clock = [1000.0]
    DerivedMetrics.of(env.metrics.registry).clock = lambda: clock[0]
    pipeline = build_pipeline(metrics_yaml(f"c: {{type: Counter, {idle} config: {{match_all: true, action: inc}}}}"), env)
    pipeline.process(make_batch({"x": [1]}, {"k": "a"}))
    clock[0] = 1000 + seconds - 0.5
    assert sample(env, "logpipe_custom_c_total", k="a") == 1
    clock[0] = 1000 + seconds
    assert sample(env, "logpipe_custom_c_total", k="a") is None
    # quirk: a series that comes back starts again from zero
    pipeline.process(make_batch({"x": [1]}, {"k": "a"}))
    assert sample(env, "logpipe_custom_c_total", k="a") == 1


# --- exactness against an entry-at-a-time reference --------------------------------------------

EXACT_METRICS = """
c_inc: {type: Counter, source: status, config: {action: inc}}
c_val: {type: Counter, source: status, config: {value: '500', action: inc}}
c_add: {type: Counter, source: v, config: {action: add}}
c_mix: {type: Counter, source: n, config: {action: add}}
c_all: {type: Counter, config: {match_all: true, action: inc}}
c_bytes: {type: Counter, config: {match_all: true, count_entry_bytes: true, action: add}}
g_set: {type: Gauge, source: v, config: {action: set}}
g_val: {type: Gauge, source: status, config: {value: '200', action: set}}
g_inc: {type: Gauge, source: v, config: {action: inc}}
g_dec: {type: Gauge, source: status, config: {action: dec}}
g_add: {type: Gauge, source: v, config: {action: add}}
g_sub: {type: Gauge, source: v, config: {action: sub}}
h_def: {type: Histogram, source: v}
h_cus: {type: Histogram, source: v, config: {buckets: [-1, 0, 0.5, 1, 100]}}
h_str: {type: Histogram, source: s, config: {buckets: [0.001, 0.1, 10]}}
h_val: {type: Histogram, source: status, config: {value: '404', buckets: [100, 500]}}
h_low: {type: Histogram, source: r, config: {buckets: [0.01, 1, 5]}}
"""


class Reference:
    """Promtail's metrics stage applied entry by entry, with client_golang's arithmetic: a counter
    keeps whole adds below 2^64 in an integer and the rest in a float; a gauge and a histogram's
    sum are float64 accumulators; a histogram bucket is the first bound >= the value."""

    def __init__(self, config: dict[str, dict]):
        self.config = config
        self.state: dict[tuple[str, tuple], list] = {}

    def process(self, batch: Batch) -> None:
        for i in range(len(batch)):
            for name, m in self.config.items():
                self._entry(name, m, batch, i)

    def _entry(self, name: str, m: dict, batch: Batch, i: int) -> None:
        kind, cfg = m["type"].lower(), m.get("config", {})
        action = cfg.get("action")
        labels = {k: v for k, v in batch.labels[i].items if not k.startswith("__") and not (kind == "histogram" and k == "le")}
        key = ("logpipe_custom_" + name, tuple(sorted(labels.items())))
        if cfg.get("match_all"):
            self._counter(key, action, len(batch.lines[i].encode()) if cfg.get("count_entry_bytes") else None)
            return
        col = batch.field(m.get("source", name))
        v = col[i] if col is not None else None
        if v is None:
            return
        if "value" in cfg and go_string(v) != str(cfg["value"]):
            return
        if kind == "counter":
            self._counter(key, action, v)
        elif kind == "gauge":
            number = go_number(v)
            if action in ("inc", "dec"):
                self._gauge(key, 1.0 if action == "inc" else -1.0, add=True)
            elif number is not None:
                self._gauge(key, -number if action == "sub" else number, add=action != "set")
        else:
            number = go_number(v)
            if number is None:
                return
            bounds = cfg.get("buckets", list(DEFAULT_BUCKETS))
            st = self.state.setdefault(key, ["histogram", bounds, [0] * (len(bounds) + 1), 0.0, 0])
            slot = next((j for j, b in enumerate(bounds) if number <= b), len(bounds))
            st[2][slot] += 1
            st[3] += number
            st[4] += 1

    def _counter(self, key: tuple, action: str, v: Any) -> None:
        if action == "inc":
            st = self.state.setdefault(key, ["counter", 0, 0.0])
            st[1] += 1
            return
        number = go_number(v)
        if number is None or number < 0:
            return
        st = self.state.setdefault(key, ["counter", 0, 0.0])
        if number.is_integer() and number < 2.0**64:
            st[1] += int(number)
        else:
            st[2] += number

    def _gauge(self, key: tuple, number: float, add: bool) -> None:
        st = self.state.setdefault(key, ["gauge", 0.0])
        st[1] = st[1] + number if add else number

    def samples(self) -> dict[tuple[str, tuple], float]:
        out = {}
        for (name, labels), st in self.state.items():
            if st[0] == "counter":
                out[(name + "_total", labels)] = float(st[1]) + st[2]
            elif st[0] == "gauge":
                out[(name, labels)] = st[1]
            else:
                _, bounds, counts, total, count = st
                running = 0
                for b, c in zip([go_float_label(float(b)) for b in bounds] + ["+Inf"], counts):
                    running += c
                    out[(name + "_bucket", tuple(sorted(labels + (("le", b),))))] = float(running)
                out[(name + "_sum", labels)] = total
                out[(name + "_count", labels)] = float(count)
        return out


LABEL_POOL = [
    {"job": "api", "model": "gpt"}, {"job": "api", "model": "llama"}, {"job": "api", "model": "gpt", "__x": "1"},
    {"job": "web", "le": "q"}, {"job": "web"}, {}, {"job": "batch", "model": "mixtral", "region": "eu"},
]


def random_value(rng: random.Random) -> Any:
    pick = rng.random()
    if pick < 0.25:
        return rng.gauss(0.5, 2.0)
    if pick < 0.45:
        return repr(abs(rng.gauss(0.3, 1.0)))
    if pick < 0.55:
        return rng.choice([0, 1, 7, 100, 2**60, -3, 0.1, 1e300, -0.0])
    if pick < 0.65:
        return f"{rng.randint(1, 999)}{rng.choice(['ms', 's', 'us', 'm'])}"
    if pick < 0.7:
        return rng.choice([True, False])
    if pick < 0.8:
        return rng.choice(["abc", "", " 1", "-nan", "NaN", "+Inf", "1e999", "0x1p-3", "1_5", "-7.25"])
    return None


def random_batch(rng: random.Random) -> Batch:
    n = rng.choice([1, 5, 50, 400])
    pool = [rng.choice(LABEL_POOL)] if rng.random() < 0.2 else LABEL_POOL
    labels = [rng.choice(pool) for _ in range(n)]
    # text Python's float() reads but Go's ParseFloat may not, or text neither reads
    odd = ["1e999", "-nan", "Inf", "NaN", "-1e-999"] if rng.random() < 0.5 else [None, "0.5ms", "x"]
    lines = ["".join(rng.choice("ab c\u00e9\u65e5") for _ in range(rng.randint(0, 12))) for _ in range(n)]
    fields = {
        "v": [random_value(rng) for _ in range(n)],
        "status": [rng.choice(["200", "500", "404", 200.0, 500, None, "5xx"]) for _ in range(n)],
        "n": [rng.choice([rng.random(), rng.randint(0, 9)]) for _ in range(n)],
        "r": [rng.choice(["0.25", "1", "7ms", "3", "1e999", "-nan"] + ["x"] * (n % 2)) for _ in range(n)],
        "s": [repr(rng.expovariate(5.0)) if rng.random() < 0.9 else rng.choice(odd) for _ in range(n)],
    }
    return make_batch(fields, labels, lines)


def actual_samples(env: StageEnv) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in DerivedMetrics.of(env.metrics.registry).collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_vectorized_stage_equals_the_entry_at_a_time_reference():
    import yaml

    config = yaml.safe_load(EXACT_METRICS)
    env = new_env()
    pipeline = build_pipeline(metrics_yaml(EXACT_METRICS), env)
    reference = Reference(config)
    rng = random.Random(20240607)
    for round_ in range(40):
        batch = random_batch(rng)
        reference.process(batch)
        pipeline.process(batch)
        if round_ % 8 == 7:
            expected = reference.samples()
            assert set(actual_samples(env)) == set(expected)
            registry = env.metrics.registry
            for (name, labels), value in expected.items():
                got = registry.get_sample_value(name, dict(labels))
                assert same(got, value), (name, labels, got, value)
    # the random input reached every kind of series
    names = {name for name, _ in reference.samples()}
    assert len(names) == 6 + 6 + 5 * 3


def test_float_sums_keep_entry_order():
    # 1e16 + 1 + 1 is 1e16 one add at a time; summing the batch first would give 1e16 + 2.
    env = new_env()
    pipeline = build_pipeline(metrics_yaml("g: {type: Gauge, source: v, config: {action: add}}\n"
                                           "h: {type: Histogram, source: v}"), env)
    pipeline.process(make_batch({"v": [1e16]}))
    pipeline.process(make_batch({"v": [1.0, 1.0]}))
    assert sample(env, "logpipe_custom_g") == 1e16 + 1.0 + 1.0 == 1e16
    assert sample(env, H + "_sum") == 1e16
