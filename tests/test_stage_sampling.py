"""sampling: keep a `rate` share of entries, count the rest (Promtail's sampling stage)."""
from __future__ import annotations

import pytest

from logpipe.errors import ConfigError
from logpipe.testing import run_pipeline

LINES = [f"line {i}" for i in range(20000)]


@pytest.mark.parametrize("rate, low, high", [(0, 0, 0), (1, 20000, 20000), (0.1, 1600, 2400), (0.5, 9400, 10600)])
def test_keeps_about_rate_of_the_entries_in_order(rate, low, high):
    r = run_pipeline(f"- sampling: {{rate: {rate}}}", LINES)
    assert low <= len(r.lines) <= high
    kept = [int(line.split()[1]) for line in r.lines]
    assert kept == sorted(kept)
    assert r.counter("logpipe_dropped_entries_total", reason="sampling_stage") == 20000 - len(r.lines)


def test_docs_example_sampling_inside_match_with_a_reason():
    stages = """\
- match:
    pipeline_name: app2
    selector: '{app="poki"}'
    stages:
      - sampling: {rate: 0, drop_counter_reason: sampled_out}
"""
    assert run_pipeline(stages, ["x", "y"], labels={"app": "loki"}).lines == ["x", "y"]
    r = run_pipeline(stages, ["x", "y"], labels={"app": "poki"})
    assert r.lines == []
    assert r.counter("logpipe_dropped_entries_total", reason="sampled_out") == 2


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rate_must_be_between_0_and_1(rate):
    with pytest.raises(ConfigError) as e:
        run_pipeline(f"- sampling: {{rate: {rate}}}", [])
    assert e.value.issues[0].path == "pipeline_stages[0].sampling.rate"
    assert "Sampling Rate must be between 0.0 and 1.0" in e.value.issues[0].message
