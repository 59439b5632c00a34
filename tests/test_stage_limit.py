"""limit: Promtail's token-bucket semantics, dropping or waiting, per label value."""
from __future__ import annotations

import pytest

from logpipe.batch import Batch, LabelSet
from logpipe.errors import ConfigError
from logpipe.pipeline.stage import StageEnv
from logpipe.testing import build_pipeline, run_pipeline


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def limit_pipeline(config: str):
    env = StageEnv()
    pipeline = build_pipeline(f"- limit: {config}", env)
    fake = FakeTime()
    stage = pipeline.stages[0]
    stage.clock, stage.sleep = fake.clock, fake.sleep
    return pipeline, fake, env


def lines(n: int, labels: dict[str, str] | None = None) -> Batch:
    return Batch.of_lines([f"l{i}" for i in range(n)], 0, LabelSet.of(labels or {}))


def dropped(env: StageEnv) -> float:
    return env.metrics.registry.get_sample_value("logpipe_dropped_entries_total", {"reason": "ratelimit_drop_stage", "host": ""}) or 0


def test_promtail_drop_pipeline_keeps_one_of_ten():
    # TestLimitDropPipeline: rate 1, burst 1, drop: ten entries at once, one goes through
    r = run_pipeline("- limit: {rate: 1, burst: 1, drop: true}", [f"l{i}" for i in range(10)], labels={"app": "loki"})
    assert r.lines == ["l0"]
    assert r.counter("logpipe_dropped_entries_total", reason="ratelimit_drop_stage") == 9


def test_drop_refills_at_rate_up_to_burst():
    pipeline, fake, env = limit_pipeline("{rate: 10, burst: 5, drop: true}")
    assert len(pipeline.process(lines(8))) == 5  # starts full
    fake.now += 0.25  # 2.5 tokens
    assert pipeline.process(lines(8)).lines == ["l0", "l1"]
    fake.now += 60  # never more than burst
    assert len(pipeline.process(lines(8))) == 5
    assert dropped(env) == 3 + 6 + 3


def test_wait_mode_passes_everything_and_blocks_as_long_as_the_tokens_take():
    # TestLimitWaitPipeline: rate 1, burst 1, no drop: all five entries come out, after ~4s
    pipeline, fake, env = limit_pipeline("{rate: 1, burst: 1, drop: false}")
    assert len(pipeline.process(lines(5))) == 5
    assert fake.slept == [pytest.approx(4.0)]
    # the debt carries over: the next entry waits a full token more
    assert len(pipeline.process(lines(1))) == 1
    assert fake.slept[1] == pytest.approx(1.0)
    assert dropped(env) == 0


def test_wait_mode_does_not_wait_within_the_burst():
    pipeline, fake, _ = limit_pipeline("{rate: 10, burst: 10}")
    pipeline.process(lines(10))
    assert fake.slept == []


def test_by_label_name_limits_each_value_and_spares_entries_without_the_label():
    pipeline, fake, env = limit_pipeline("{rate: 1, burst: 2, drop: true, by_label_name: namespace}")
    labels = [LabelSet.of({"namespace": "a"}), LabelSet.of({"namespace": "b"}), LabelSet.of({})]
    batch = Batch([f"{ls.get('namespace')}{i}" for i in range(4) for ls in labels], [0] * 12,
                  [ls for _ in range(4) for ls in labels])
    out = pipeline.process(batch)
    assert out.lines == ["a0", "b0", "None0", "a1", "b1", "None1", "None2", "None3"]
    assert dropped(env) == 4


@pytest.mark.parametrize(
    "config, message",
    [
        ("{rate: 0, burst: 1}", "limit stage failed to parse rate or burst"),
        ("{rate: 1}", "limit stage failed to parse rate or burst"),
        ("{rate: 1, burst: 1, by_label_name: ns}", "When ratelimiting by label, drop must be true"),
    ],
)
def test_config_errors(config, message):
    with pytest.raises(ConfigError) as e:
        build_pipeline(f"- limit: {config}")
    assert e.value.issues[0].message.startswith(message)
