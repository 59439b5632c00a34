"""multiline: Promtail's multiline_test.go cases, the docs example, max_wait_time and batches."""
from __future__ import annotations

import pytest

from logpipe.batch import Batch, LabelSet
from logpipe.errors import ConfigError
from logpipe.pipeline.stage import StageEnv
from logpipe.testing import build_pipeline, run_pipeline

START = "- multiline: {firstline: '^START', max_wait_time: 3s}"


def test_promtail_process_case():
    lines = ["not a start line before 1", "not a start line before 2", "START line 1", "not a start line",
             "START line 2", "START line 3"]
    r = run_pipeline(START, lines, labels={"value": "label"})
    assert r.lines == ["not a start line before 1", "not a start line before 2", "START line 1\nnot a start line",
                       "START line 2", "START line 3"]


def test_promtail_multi_streams_case():
    entries = [("START line 1", "one"), ("not a start line 1", "one"), ("START line 1", "two"),
               ("not a start line 2", "one"), ("START line 2", "two"), ("START line 2", "one"),
               ("not a start line 1", "one")]
    pipeline = build_pipeline(START, StageEnv())
    batch = Batch([line for line, _ in entries], list(range(len(entries))),
                  [LabelSet.of({"value": v}) for _, v in entries])
    out = Batch.concat([pipeline.process(batch), pipeline.flush(None)])
    assert [(line, ls.get("value"), ts) for line, ls, ts in zip(out.lines, out.labels, out.ts)] == [
        ("START line 1\nnot a start line 1\nnot a start line 2", "one", 0),
        ("START line 1", "two", 2),
        ("START line 2", "two", 4),
        ("START line 2\nnot a start line 1", "one", 5),
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def with_clock(stages: str):
    pipeline = build_pipeline(stages, StageEnv())
    clock = Clock()
    pipeline.stages[0].clock = clock
    return pipeline, clock


def test_max_wait_time_releases_a_block_when_no_line_comes():
    # Promtail's MaxWaitTime case: the block goes out after max_wait_time without a new line;
    # the next continuation line starts a block that keeps the old first line's timestamp.
    pipeline, clock = with_clock("- multiline: {firstline: '^START', max_wait_time: 2s}")
    assert pipeline.process(Batch.of_lines(["START line"], 7)).lines == []
    clock.now += 1.9
    assert pipeline.flush(clock.now) is None
    clock.now += 0.1
    released = pipeline.flush(clock.now)
    assert released is not None and released.lines == ["START line"] and released.ts == [7]
    assert pipeline.flush(clock.now + 10) is None  # nothing held any more
    assert pipeline.process(Batch.of_lines(["not a start line hitting timeout"], 9)).lines == []
    tail = pipeline.flush(None)
    assert tail is not None and tail.lines == ["not a start line hitting timeout"] and tail.ts == [7]


def test_the_wait_restarts_with_each_line_of_the_stream():
    pipeline, clock = with_clock("- multiline: {firstline: '^START', max_wait_time: 2s}")
    pipeline.process(Batch.of_lines(["START"], 0))
    clock.now += 1.5
    pipeline.process(Batch.of_lines(["more"], 0))
    clock.now += 1.5
    assert pipeline.flush(clock.now) is None
    clock.now += 0.5
    assert pipeline.flush(clock.now).lines == ["START\nmore"]


@pytest.mark.parametrize(
    "max_lines, expected",
    [
        # quirk: after a block reaches max_lines, the continuation lines form a new block that
        # carries the same first-line entry (its timestamp), as Promtail's state keeps it
        (2, [("S\nc1", 0), ("c2\nc3", 0), ("S2\nc4", 4)]),
        # quirk: 0 means no limit (Promtail compares after counting)
        (0, [("S\nc1\nc2\nc3", 0), ("S2\nc4", 4)]),
        (1, [("S", 0), ("c1", 0), ("c2", 0), ("c3", 0), ("S2", 4), ("c4", 4)]),
    ],
)
def test_max_lines(max_lines, expected):
    r = run_pipeline(f"- multiline: {{firstline: '^S', max_lines: {max_lines}}}", ["S", "c1", "c2", "c3", "S2", "c4"],
                     ts=list(range(6)))
    assert list(zip(r.lines, [e["ts"] for e in r.entries])) == expected


def test_default_max_lines_is_128():
    r = run_pipeline("- multiline: {firstline: '^S'}", ["S"] + ["c"] * 200)
    assert [line.count("\n") + 1 for line in r.lines] == [128, 73]


FLASK = """\
[2020-12-03 11:36:20] "GET /hello HTTP/1.1" 200 -
[2020-12-03 11:36:23] ERROR in app: Exception on /error [GET]
Traceback (most recent call last):
  File "/home/pallets/.pyenv/versions/3.8.5/lib/python3.8/site-packages/flask/app.py", line 2447, in wsgi_app
    response = self.full_dispatch_request()
  File "/home/pallets/src/deployment_tools/hello.py", line 10, in error
    raise Exception("Sorry, this route always breaks")
Exception: Sorry, this route always breaks
[2020-12-03 11:36:23] "GET /error HTTP/1.1" 500 -
[2020-12-03 11:36:26] "GET /hello HTTP/1.1" 200 -
[2020-12-03 11:36:27] "GET /hello HTTP/1.1" 200 -"""


def test_docs_flask_traceback_becomes_one_entry():
    stages = "- multiline: {firstline: '^\\[\\d{4}-\\d{2}-\\d{2} \\d{1,2}:\\d{2}:\\d{2}\\]', max_wait_time: 3s}"
    r = run_pipeline(stages, FLASK.splitlines())
    assert len(r.lines) == 5
    assert r.lines[1].startswith("[2020-12-03 11:36:23] ERROR in app")
    assert r.lines[1].endswith("Exception: Sorry, this route always breaks")
    assert r.lines[1].count("\n") == 6


def test_docs_zero_width_space_firstline():
    r = run_pipeline("- multiline: {firstline: '^\\x{200B}\\['}", ["\u200b[a] x", "java.lang.Exception", "\tat y", "\u200b[b] z"])
    assert r.lines == ["\u200b[a] x\njava.lang.Exception\n\tat y", "\u200b[b] z"]


def test_block_spans_batches_and_keeps_its_first_line_fields():
    pipeline = build_pipeline(START + "\n- labels: {lvl: level}", StageEnv())
    b1 = Batch.of_lines(["START a", "  more a"], [1, 2], LabelSet.of({"job": "x"}))
    b1.fields["level"] = ["warn", "ignored"]
    assert pipeline.process(b1).lines == []
    b2 = Batch.of_lines(["  last a", "START b"], [3, 4], LabelSet.of({"job": "x"}))
    out = pipeline.process(b2)
    assert out.lines == ["START a\n  more a\n  last a"]
    assert out.ts == [1]
    assert [ls.as_dict() for ls in out.labels] == [{"job": "x", "lvl": "warn"}]
    tail = pipeline.flush(None)  # released entries run through the stages after multiline
    assert tail.lines == ["START b"] and tail.labels[0].as_dict() == {"job": "x"}


def test_a_carried_block_comes_before_the_new_batch_entries():
    pipeline = build_pipeline(START, StageEnv())
    pipeline.process(Batch.of_lines(["START a"], 1, LabelSet.of({"s": "1"})))
    b2 = Batch(["START b", "START c"], [5, 6], [LabelSet.of({"s": "2"}), LabelSet.of({"s": "1"})])
    assert pipeline.process(b2).lines == ["START a"]
    assert pipeline.flush(None).lines == ["START b", "START c"]


def test_pipeline_without_holding_stages_flushes_nothing():
    pipeline = build_pipeline("- static_labels: {a: b}", StageEnv())
    assert pipeline.holds_entries is False and pipeline.flush(None) is None


@pytest.mark.parametrize(
    "config, path, message",
    [
        ("{max_lines: 3}", "pipeline_stages[0].multiline", "multiline stage config must define `firstline` regular expression"),
        ("{firstline: '(a'}", "pipeline_stages[0].multiline.firstline", "multiline stage first line regex compilation error"),
        ("{firstline: a, max_wait_time: soon}", "pipeline_stages[0].multiline.max_wait_time", "invalid duration"),
    ],
)
def test_config_errors(config, path, message):
    with pytest.raises(ConfigError) as e:
        build_pipeline(f"- multiline: {config}")
    assert e.value.issues[0].path == path
    assert e.value.issues[0].message.startswith(message)


def promtail_model(entries, firstline, max_lines):
    """Promtail's per-entry state machine, written plainly: (line, stream, ts) in, and the
    entries out (released ones and the blocks still open at the end), sorted by timestamp."""
    import re

    streams, out = {}, []
    for line, stream, ts in entries:
        st = streams.get(stream)
        if st is None:
            if not re.search(firstline, line):
                out.append((ts, stream, line))
                continue
            st = streams[stream] = {"start": None, "buf": []}
        if re.search(firstline, line):
            if st["buf"]:
                out.append((st["start"], stream, "\n".join(st["buf"])))
                st["buf"] = []
            st["start"] = ts
        st["buf"].append(line)
        if len(st["buf"]) == max_lines:
            out.append((st["start"], stream, "\n".join(st["buf"])))
            st["buf"] = []
    for stream, st in streams.items():
        if st["buf"]:
            out.append((st["start"], stream, "\n".join(st["buf"])))
    return sorted(out)


@pytest.mark.parametrize("seed", range(40))
def test_matches_promtails_state_machine_on_random_input(seed):
    import random

    rng = random.Random(seed)
    max_lines = rng.choice([0, 1, 2, 3, 128])
    n = rng.randrange(1, 60)
    first_share = rng.choice([0.1, 0.5, 0.9, 1.0])
    entries = [(("S" if rng.random() < first_share else "c") + str(i), rng.choice("ab" if seed % 2 else "abcde"), i)
               for i in range(n)]
    pipeline = build_pipeline(f"- multiline: {{firstline: '^S', max_lines: {max_lines}}}", StageEnv())
    got = []
    pos = 0
    while pos < n:  # random batch sizes, so blocks cross batches
        size = rng.randrange(1, 12)
        chunk = entries[pos:pos + size]
        pos += size
        batch = Batch([e[0] for e in chunk], [e[2] for e in chunk], [LabelSet.of({"s": e[1]}) for e in chunk])
        out = pipeline.process(batch)
        got.extend(zip(out.ts, [ls.get("s") for ls in out.labels], out.lines))
    tail = pipeline.flush(None)
    if tail is not None:
        got.extend(zip(tail.ts, [ls.get("s") for ls in tail.labels], tail.lines))
    assert sorted(got) == promtail_model(entries, "^S", max_lines)
