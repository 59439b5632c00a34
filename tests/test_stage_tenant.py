"""tenant: Promtail's tenant_test.go cases and documented examples."""
from __future__ import annotations

import pytest

from logpipe.batch import Batch, LabelSet
from logpipe.errors import ConfigError
from logpipe.pipeline.stage import StageEnv
from logpipe.testing import build_pipeline, run_pipeline

TENANT = "__tenant_id__"


def run_with(stages: str, labels: dict[str, str], extracted: dict) -> tuple[dict[str, str], StageEnv]:
    env = StageEnv()
    batch = Batch.of_lines(["hello world"], 1_000_000_001, LabelSet.of(labels))
    batch.fields.update({k: [v] for k, v in extracted.items()})
    out = build_pipeline(stages, env).process(batch)
    assert out.lines == ["hello world"] and out.ts == [1_000_000_001]
    return out.labels[0].as_dict(), env


# Promtail's TestTenantStage_Process table: (config, labels, extracted, expected tenant).
@pytest.mark.parametrize(
    "config, labels, extracted, tenant",
    [
        ("{source: tenant_id}", {}, {}, None),
        ("{source: tenant_id}", {TENANT: "foo"}, {}, "foo"),
        ("{source: tenant_id}", {}, {"tenant_id": "bar"}, "bar"),
        ("{source: tenant_id}", {TENANT: "foo"}, {"tenant_id": "bar"}, "bar"),
        ("{source: tenant_id}", {}, {"tenant_id": ["bar"]}, None),  # no text: skipped
        ("{value: bar}", {}, {}, "bar"),
        ("{value: bar}", {TENANT: "foo"}, {}, "bar"),
        ("{label: namespace}", {"namespace": "team-a"}, {}, "team-a"),
        ("{label: namespace}", {TENANT: "foo"}, {}, "foo"),
        # an empty value leaves the tenant as it was
        ("{source: tenant_id}", {TENANT: "foo"}, {"tenant_id": ""}, "foo"),
        # numbers are written as Promtail's getString writes them
        ("{source: tenant_id}", {}, {"tenant_id": 42.0}, "42"),
    ],
)
def test_promtail_tenant_cases(config, labels, extracted, tenant):
    got, _ = run_with(f"- tenant: {config}", labels, extracted)
    assert got.get(TENANT) == tenant


def test_a_value_with_no_text_is_counted_once_per_batch():
    env = StageEnv()
    batch = Batch.of_lines(["a", "b", "c"], 0)
    batch.fields["t"] = [{"x": 1}, "ok", {"y": 2}]
    out = build_pipeline("- tenant: {source: t}", env).process(batch)
    assert [ls.get(TENANT) for ls in out.labels] == [None, "ok", None]
    assert env.metrics.registry.get_sample_value("logpipe_stage_errors_total", {"stage": "tenant", "reason": "not_a_string"}) == 2


def test_docs_override_inside_match():
    stages = """\
- static_labels: {app: api}
- match:
    selector: '{app="api"}'
    stages:
      - tenant: {value: team-api}
"""
    assert run_pipeline(stages, ["x"]).labels == [{"app": "api", TENANT: "team-api"}]


def test_docs_tenant_from_a_relabeled_label():
    stages = "- match: {selector: '{namespace=~\".+\"}', stages: [{tenant: {label: namespace}}]}"
    r = run_pipeline(stages, ["x"], labels={"namespace": "ns1"})
    assert r.labels == [{"namespace": "ns1", TENANT: "ns1"}]
    assert run_pipeline(stages, ["x"]).labels == [{}]


@pytest.mark.parametrize(
    "config, message",
    [
        ("{}", "label, source or value config are required"),
        ("{source: ''}", "label, source or value config are required"),
        ("{source: a, value: b}", "label, source and value are mutually exclusive"),
        ("{label: a, source: b}", "label, source and value are mutually exclusive"),
    ],
)
def test_config_errors(config, message):
    with pytest.raises(ConfigError) as e:
        build_pipeline(f"- tenant: {config}")
    assert e.value.issues[0].message.startswith(message)
