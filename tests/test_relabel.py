"""Prometheus relabeling as Promtail applies it to a target's labels."""
from __future__ import annotations

import hashlib

import pytest

from logpipe.batch import LabelSet
from logpipe.config import load_config_text
from logpipe.relabel import Relabeler


def relabel(rules_yaml: str, labels: dict[str, str]) -> dict[str, str] | None:
    c = load_config_text("scrape_configs:\n  - job_name: j\n    relabel_configs:\n" + rules_yaml)
    out = Relabeler(c.scrape_configs[0].relabel_configs)(LabelSet.of(labels))
    return None if out is None else out.as_dict()


JOURNAL = {"__journal__systemd_unit": "ollama.service", "__journal_priority_keyword": "warning", "job": "journal"}


@pytest.mark.parametrize(
    "rules, labels, expected",
    [
        # the relabeling of a typical Promtail journal setup
        ("      - {source_labels: [__journal__systemd_unit], target_label: unit}\n"
         "      - {source_labels: [__journal_priority_keyword], target_label: level}\n",
         JOURNAL, {"job": "journal", "unit": "ollama.service", "level": "warning"}),
        # regex is anchored at both ends
        ("      - {source_labels: [job], regex: 'jour', target_label: x}\n", JOURNAL, {"job": "journal"}),
        ("      - {source_labels: [__journal__systemd_unit], regex: '(.*)\\.service', target_label: unit, replacement: 'svc-$1'}\n",
         JOURNAL, {"job": "journal", "unit": "svc-ollama"}),
        # Go expansion: `$1x` is the group named "1x", which does not exist -> ""
        ("      - {source_labels: [job], regex: '(.*)', target_label: x, replacement: '$1x'}\n", {"job": "a"}, {"job": "a"}),
        ("      - {source_labels: [job], regex: '(.*)', target_label: x, replacement: '${1}x'}\n", {"job": "a"}, {"job": "a", "x": "ax"}),
        # an empty result removes the target label
        ("      - {source_labels: [missing], target_label: job}\n", {"job": "a"}, {}),
        ("      - {source_labels: [a, b], separator: '-', target_label: ab}\n", {"a": "1", "b": "2"}, {"a": "1", "b": "2", "ab": "1-2"}),
        ("      - {source_labels: [job], regex: 'journal', action: keep}\n", JOURNAL, {"job": "journal"}),
        ("      - {source_labels: [job], regex: 'other', action: keep}\n", JOURNAL, None),
        ("      - {source_labels: [job], regex: 'journal', action: drop}\n", JOURNAL, None),
        ("      - {source_labels: [a], target_label: b, action: keepequal}\n", {"a": "1", "b": "1"}, {"a": "1", "b": "1"}),
        ("      - {source_labels: [a], target_label: b, action: keepequal}\n", {"a": "1", "b": "2"}, None),
        ("      - {source_labels: [a], target_label: b, action: dropequal}\n", {"a": "1", "b": "1"}, None),
        ("      - {regex: '__journal_(.+)', action: labelmap}\n", JOURNAL,
         {"job": "journal", "_systemd_unit": "ollama.service", "priority_keyword": "warning"}),
        ("      - {regex: 'a|b', action: labeldrop}\n", {"a": "1", "b": "2", "c": "3"}, {"c": "3"}),
        ("      - {regex: 'a|b', action: labelkeep}\n", {"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "2"}),
        ("      - {source_labels: [a], target_label: a, action: lowercase}\n", {"a": "MiXed"}, {"a": "mixed"}),
        ("      - {source_labels: [a], target_label: b, action: uppercase}\n", {"a": "MiXed"}, {"a": "MiXed", "b": "MIXED"}),
    ],
)
def test_relabel(rules, labels, expected):
    assert relabel(rules, labels) == expected


def test_hashmod_matches_prometheus():
    # Prometheus: md5 of the value, the last 8 bytes as a big-endian integer, modulo.
    want = int.from_bytes(hashlib.md5(b"node-1").digest()[8:], "big") % 8
    out = relabel("      - {source_labels: [h], target_label: shard, modulus: 8, action: hashmod}\n", {"h": "node-1"})
    assert out == {"h": "node-1", "shard": str(want)}


def test_relabel_runs_once_per_distinct_label_set():
    c = load_config_text("scrape_configs:\n  - job_name: j\n    relabel_configs:\n      - {source_labels: [a], target_label: b}\n")
    r = Relabeler(c.scrape_configs[0].relabel_configs)
    calls = []
    apply = r._apply
    r._apply = lambda lb: calls.append(1) or apply(lb)
    ls = LabelSet.of({"a": "1"})
    results = list(map(r.__getitem__, [ls] * 1000))
    assert len(calls) == 1 and all(x is results[0] for x in results)
