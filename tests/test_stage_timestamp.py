"""timestamp stage and Go layouts: Promtail's formats, fudge and skip, fallback formats, locations."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from logpipe.errors import ConfigError
from logpipe.golayout import Layout, LayoutError
from logpipe.testing import build_pipeline, run_pipeline

T0 = 1_000  # the entries' own time before the stage


def ns(iso: str, frac: int = 0) -> int:
    return int(datetime.fromisoformat(iso).timestamp()) * 1_000_000_000 + frac


def stamp(fmt: str, value: str, extra: str = "") -> int:
    stages = f"- regex: {{expression: '^(?P<t>.*)$'}}\n- timestamp: {{source: t, format: '{fmt}'{extra}}}"
    return run_pipeline(stages, [value], ts=T0).batch.ts[0]


@pytest.mark.parametrize(
    "fmt, value, expected",
    [
        ("RFC3339", "2019-01-01T01:00:00Z", ns("2019-01-01T01:00:00+00:00")),
        ("RFC3339", "2019-01-01T01:00:00.5+01:00", ns("2019-01-01T00:00:00+00:00", 500_000_000)),
        ("RFC3339Nano", "2019-01-01T01:00:00.123456789Z", ns("2019-01-01T01:00:00+00:00", 123456789)),
        ("Unix", "1562708916", 1562708916 * 10**9),
        ("Unix", "1562708916.414", 1562708916 * 10**9 + 414_000_000),
        ("UnixMs", "1562708916414", 1562708916414 * 10**6),
        ("UnixUs", "1562708916414123", 1562708916414123 * 10**3),
        ("UnixNs", "1562708916414123456", 1562708916414123456),
        ("RFC1123", "Mon, 01 Jan 2019 01:00:00 UTC", ns("2019-01-01T01:00:00+00:00")),
        ("RFC1123Z", "Mon, 01 Jan 2019 01:00:00 -0700", ns("2019-01-01T08:00:00+00:00")),
        ("02/Jan/2006:15:04:05 -0700", "20/Nov/2026:10:00:08 +0000", ns("2026-11-20T10:00:08+00:00")),
        ("2006-01-02 15:04:05,000", "2026-11-20 10:00:08,250", ns("2026-11-20T10:00:08+00:00", 250_000_000)),
        # Go reads a fraction after the seconds even when the layout has none
        ("2006-01-02 15:04:05", "2026-11-20 10:00:08.75", ns("2026-11-20T10:00:08+00:00", 750_000_000)),
        # .999 takes any number of digits; month names are case-insensitive; _2 pads with a space
        ("2006-01-02T15:04:05.999Z07:00", "2026-11-20T10:00:08.1Z", ns("2026-11-20T10:00:08+00:00", 100_000_000)),
        ("Jan _2 2006 15:04:05", "nov  5 2026 10:00:08", ns("2026-11-05T10:00:08+00:00")),
        ("3:04PM 2006-01-02", "10:30PM 2026-11-20", ns("2026-11-20T22:30:00+00:00")),
    ],
)
def test_formats(fmt, value, expected):
    assert stamp(fmt, value) == expected


@pytest.mark.parametrize("fmt, value", [
    ("2006-01-02 15:04:05.000", "2026-11-20 10:00:08.12"),  # .000 wants exactly three digits
    ("RFC3339", "2026-11-20 10:00:08Z"),
    ("UnixMs", "12.5"),
    ("02/Jan/2006", "32/Nov/2026"),
])
def test_values_that_do_not_parse_keep_the_entry_time(fmt, value):
    assert stamp(fmt, value, ", action_on_failure: skip") == T0


def test_location_applies_to_layouts_without_zone():
    assert stamp("2006-01-02 15:04:05", "2026-07-01 12:00:00", ", location: America/New_York") == \
        ns("2026-07-01T16:00:00+00:00")


def test_fallback_formats_in_order():
    extra = ", fallback_formats: ['UnixMs', '02 Jan 06 15:04']"
    assert stamp("RFC3339", "1562708916414", extra) == 1562708916414 * 10**6
    assert stamp("RFC3339", "01 Jan 19 01:00", extra) == ns("2019-01-01T01:00:00+00:00")


def test_fudge_adds_a_nanosecond_per_failure_to_the_streams_last_time():
    stages = "- regex: {expression: '^(?P<t>\\S+)'}\n- timestamp: {source: t, format: RFC3339}"
    lines = ["2026-11-20T10:00:00Z a", "garbage b", "garbage c", "2026-11-20T10:00:05Z d", "garbage e"]
    r = run_pipeline(stages, lines, ts=T0)
    base = ns("2026-11-20T10:00:00+00:00")
    assert r.batch.ts == [base, base + 1, base + 2, base + 5 * 10**9, base + 5 * 10**9 + 1]
    assert r.counter("logpipe_stage_errors_total", stage="timestamp", reason="parse_failed") == 3


def test_fudge_without_a_known_time_keeps_the_entry_time_and_streams_are_separate():
    stages = ("- regex: {expression: '^(?P<s>\\w) (?P<t>\\S+)'}\n- labels: {s: }\n"
              "- timestamp: {source: t, format: RFC3339}")
    r = run_pipeline(stages, ["a bad", "a 2026-11-20T10:00:00Z", "b bad", "a bad"], ts=T0)
    base = ns("2026-11-20T10:00:00+00:00")
    assert r.batch.ts == [T0, base, T0, base + 1]


def test_year_less_layouts_take_the_current_year_with_promtails_turn_of_year():
    layout = Layout("Jan _2 15:04:05")
    jan = datetime(2027, 1, 2, tzinfo=timezone.utc)
    assert layout.parse("Dec 31 23:59:59", now=jan).unix_ns == ns("2026-12-31T23:59:59+00:00")
    dec = datetime(2026, 12, 31, tzinfo=timezone.utc)
    assert layout.parse("Jan  1 00:00:01", now=dec).unix_ns == ns("2027-01-01T00:00:01+00:00")
    assert layout.parse("Jun  1 00:00:00", now=dec).unix_ns == ns("2026-06-01T00:00:00+00:00")


def test_year_less_layout_uses_the_stage_clock():
    from logpipe.batch import Batch
    from logpipe.pipeline.stage import StageEnv

    env = StageEnv(clock=lambda: ns("2030-03-01T00:00:00+00:00") / 1e9)
    p = build_pipeline("- regex: {expression: '^(?P<t>.*)$'}\n- timestamp: {source: t, format: '01-02 15:04:05'}", env)
    assert p.process(Batch.of_lines(["11-20 10:00:12"], T0)).ts == [ns("2030-11-20T10:00:12+00:00")]


def test_layout_errors_are_layout_errors():
    with pytest.raises(LayoutError):
        Layout("2006-01-02").parse("2026-13-01")


@pytest.mark.parametrize("stage, path, fragment", [
    ("{format: RFC3339}", "pipeline_stages[0].timestamp.source", "source value is required"),
    ("{source: t}", "pipeline_stages[0].timestamp.format", "format is required"),
    ("{source: t, format: RFC3339, location: Mars/Olympus}", "pipeline_stages[0].timestamp.location", "unknown time zone"),
    ("{source: t, format: RFC3339, action_on_failure: panic}", "pipeline_stages[0].timestamp.action_on_failure", "fudge or skip"),
])
def test_config_errors(stage, path, fragment):
    with pytest.raises(ConfigError) as e:
        build_pipeline(f"- timestamp: {stage}")
    assert any(i.path == path and fragment in i.message for i in e.value.issues), e.value.issues


def test_a_column_of_utc_times_parses_as_entry_by_entry():
    import random

    from logpipe.pipeline.timestamp import make_parser, rfc3339_utc_column

    rnd = random.Random(7)
    values = []
    for _ in range(2000):
        frac = "" if rnd.random() < 0.2 else "." + "".join(rnd.choices("0123456789", k=rnd.randint(1, 9)))
        values.append(f"{rnd.randint(1900, 2200):04d}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T"
                      f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}{frac}Z")
    values += ["2024-02-29T23:59:59.999999999Z", "1969-12-31T23:59:59.5Z", "2000-01-01T00:00:00Z"]
    one = make_parser("RFC3339Nano", None, lambda: 0.0)
    assert rfc3339_utc_column(values) == [one(v) for v in values]
    # anything else leaves the column to the entry-by-entry path
    for odd in ["2023-02-29T00:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01T00:00:00+02:00",
                "2024-01-01T00:00:00.1234567890Z", "2024-01-01 00:00:00Z", None]:
        assert rfc3339_utc_column(values[:3] + [odd]) is None


def test_a_column_of_one_day_and_one_width():
    """The common column: every time of the same day and length (the date is read once)."""
    from logpipe.pipeline.timestamp import make_parser, rfc3339_utc_column

    one = make_parser("RFC3339Nano", None, lambda: 0.0)
    values = [f"2024-02-29T{h:02d}:{m:02d}:{m:02d}.{h * m:06d}Z" for h in range(24) for m in range(0, 60, 7)]
    assert rfc3339_utc_column(values) == [one(v) for v in values]
    mixed = ["2024-01-01T00:00:00.1Z", "2024-01-01T00:00:00.123Z"]  # two lengths, whose sum two rows would fit
    assert rfc3339_utc_column(mixed) == [one(v) for v in mixed]
    for bad in (
        [v.replace("2024-02-29", "2023-02-29") for v in values],  # one day, and not a date
        values[:-1] + [values[-1].replace("T23:", "T24:")],
        # a text holding a newline, laid out so that every row still ends at one
        ["2024-01-01T00:00:00Z\n2024-01-01T00:00:00Z", "2024-01-01T00:00:00", ""],
    ):
        assert rfc3339_utc_column(bad) is None


def test_a_column_with_one_bad_time_still_parses_the_rest():
    r = run_pipeline("- json: {expressions: {t: t}}\n- timestamp: {source: t, format: RFC3339Nano}",
                     ['{"t": "2024-05-01T10:00:00.5Z"}', '{"t": "2024-02-30T10:00:00Z"}', '{"t": "2024-05-01T12:00:00+02:00"}'],
                     ts=[7, 8, 9])
    assert r.batch.ts == [1714557600500000000, 1714557600500000001, 1714557600000000000]  # fudged: last + 1ns
