"""structured_metadata: Promtail's structuredmetadata_test.go cases and documented examples."""
from __future__ import annotations

import pytest

from logpipe.batch import Batch, LabelSet
from logpipe.errors import ConfigError
from logpipe.pipeline.stage import StageEnv
from logpipe.testing import build_pipeline, run_pipeline


def run_with(stages: str, extracted: dict, labels: dict[str, str] | None = None):
    batch = Batch.of_lines(["sample log line"], 0, LabelSet.of(labels or {}))
    batch.fields.update({k: [v] for k, v in extracted.items()})
    out = build_pipeline(stages, StageEnv()).process(batch)
    return out.entry(0)


@pytest.mark.parametrize(
    "stages, extracted, labels, metadata, labels_left",
    [
        ("- structured_metadata: {app: }", {"app": "loki", "component": "ingester"}, {}, {"app": "loki"}, {}),
        ("- non_indexed_labels: {app: }", {"app": "loki"}, {}, {"app": "loki"}, {}),  # the old name
        ("- structured_metadata: {stream: }", {"stream": "stderr"}, {}, {"stream": "stderr"}, {}),
        ("- structured_metadata: {app: }\n- labels: {component: }", {"app": "loki", "component": "ingester"}, {},
         {"app": "loki"}, {"component": "ingester"}),
        # Promtail: a static label named like a source moves from the labels to the metadata
        ("- static_labels: {component: querier, pod: loki-querier-664f97db8d-qhnwg}\n- structured_metadata: {pod: }",
         {}, {}, {"pod": "loki-querier-664f97db8d-qhnwg"}, {"component": "querier"}),
        ("- static_labels: {component: querier, pod: loki-querier-664f97db8d-qhnwg}\n- structured_metadata: {pod_name: pod}",
         {}, {}, {"pod_name": "loki-querier-664f97db8d-qhnwg"}, {"component": "querier"}),
        # values print as Promtail's getString; no text (a map) sets nothing
        ("- structured_metadata: {code: , obj: }", {"code": 200.0, "obj": {"a": 1}}, {}, {"code": "200"}, {}),
        ("- structured_metadata: {trace_id: }", {}, {"job": "x"}, {}, {"job": "x"}),
    ],
)
def test_promtail_structured_metadata_cases(stages, extracted, labels, metadata, labels_left):
    e = run_with(stages, extracted, labels)
    assert e["structured_metadata"] == metadata
    assert e["labels"] == labels_left


def test_docs_labels_from_relabeling_become_metadata_and_leave_the_stream():
    r = run_pipeline("- structured_metadata: {pod_uid: , pod_host_ip: }", ["sample log"],
                     labels={"job": "k8s", "pod_uid": "b3937321-fe90-4e15-ac94-495c8fdb9202", "pod_host_ip": "127.0.0.1"})
    assert r.entries[0]["labels"] == {"job": "k8s"}
    assert r.entries[0]["structured_metadata"] == {"pod_uid": "b3937321-fe90-4e15-ac94-495c8fdb9202",
                                                   "pod_host_ip": "127.0.0.1"}


def test_inside_match_per_entry():
    stages = "- match: {selector: '{source=\"test\"}', stages: [{structured_metadata: {app: }}]}"
    batch = Batch(["a", "b"], [0, 0], [LabelSet.of({"source": "test"}), LabelSet.of({"source": "other"})])
    batch.fields["app"] = ["loki", "mimir"]
    out = build_pipeline(stages, StageEnv()).process(batch)
    assert [out.entry(i)["structured_metadata"] for i in range(2)] == [{"app": "loki"}, {}]
    assert [ls.as_dict() for ls in out.labels] == [{"source": "test"}, {"source": "other"}]


def test_config_needs_valid_names():
    with pytest.raises(ConfigError) as e:
        build_pipeline("- structured_metadata: {'bad-name': x}")
    assert e.value.issues[0].path == "pipeline_stages[0].structured_metadata.bad-name"
