"""Config loading: Promtail's schema, every error with file, line and YAML path, env expansion."""
from __future__ import annotations

import pytest

from logpipe.config import load_config, load_config_text
from logpipe.config.env import expand_env
from logpipe.config.units import ByteSize, Duration
from logpipe.errors import ConfigError

PROMTAIL_JOURNAL_CONFIG = """\
server:
  http_listen_port: 9080
  grpc_listen_port: 0
positions:
  filename: /tmp/positions.yaml
clients:
  - url: http://localhost:3100/loki/api/v1/push
    tenant_id: team-a
    batchwait: 1s
    batchsize: 1048576
    backoff_config:
      min_period: 500ms
      max_period: 5m
      max_retries: 10
    external_labels:
      host: node-1
scrape_configs:
  - job_name: journal
    journal:
      json: false
      max_age: 12h
      path: /var/log/journal
      labels:
        job: systemd-journal
    relabel_configs:
      - source_labels: ['__journal__systemd_unit']
        target_label: 'unit'
      - source_labels: ['__journal_priority_keyword']
        target_label: 'level'
    pipeline_stages:
      - json:
          expressions:
            level: level
            model: '"model"'
      - labels:
          level:
limits_config:
  readline_rate_enabled: true
  readline_rate: 100
"""


def test_promtail_journal_config_loads_unchanged():
    c = load_config_text(PROMTAIL_JOURNAL_CONFIG)
    assert c.server.http_listen_port == 9080
    client = c.clients[0]
    assert client.tenant_id == "team-a"
    assert client.batchwait == 1.0 and client.batchsize == 1048576
    assert client.backoff_config.max_period == 300.0 and client.backoff_config.min_period == 0.5
    sc = c.scrape_configs[0]
    assert sc.journal.max_age == 12 * 3600
    assert [s.name for s in sc.stages] == ["json", "labels"]
    assert sc.relabel_configs[1].target_label == "level"
    assert c.limits_config.readline_rate == 100.0


def issues_of(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "bad.yaml")
    return [(i.line, i.path, i.message) for i in e.value.issues]


BAD = """\
server:
  http_listen_port: "ninety"
  colour: blue
scrape_configs:
  - job_name: app
    stdin: {}
    pipeline_stages:
      - regex:
          expression: "(?P<level>[a-z+"
      - labels:
          bad-name:
      - frobnicate: {}
      - json:
          expressions: {a: "a[?"}
      - static_labels: "not a map"
  - job_name: app
    static_configs:
      - labels: {__path__: /var/log/*.log}
        targets: [localhost]
    relabel_configs:
      - action: hashmod
        source_labels: [a]
        target_label: shard
"""


def test_every_error_is_reported_at_once_with_line_and_path():
    found = issues_of(BAD)
    paths = [p for _, p, _ in found]
    assert ("server.http_listen_port" in paths) and ("server.colour" in paths)
    assert "scrape_configs[0].pipeline_stages[0].regex.expression" in paths
    assert "scrape_configs[0].pipeline_stages[1].labels.bad-name" in paths
    assert "scrape_configs[0].pipeline_stages[2].frobnicate" in paths
    assert "scrape_configs[0].pipeline_stages[4].static_labels" in paths
    assert "scrape_configs[1].job_name" in paths
    assert "scrape_configs[1].relabel_configs[0].modulus" in paths
    lines = {p: line for line, p, _ in found}
    assert lines["server.http_listen_port"] == 2
    assert lines["server.colour"] == 3
    assert lines["scrape_configs[0].pipeline_stages[0].regex.expression"] == 9
    assert lines["scrape_configs[0].pipeline_stages[1].labels.bad-name"] == 11
    assert lines["scrape_configs[0].pipeline_stages[2].frobnicate"] == 12
    assert lines["scrape_configs[1].job_name"] == 16


def test_error_text_has_file_line_and_path():
    with pytest.raises(ConfigError) as e:
        load_config_text("server:\n  http_listen_port: 99999\n", "c.yaml")
    assert str(e.value) == "c.yaml:2: server.http_listen_port: port 99999 is out of range 0-65535"


@pytest.mark.parametrize(
    "text, path, fragment",
    [
        ("scrape_configs:\n  - job_name: a\n    pipeline_stages:\n      - output: {}\n",
         "scrape_configs[0].pipeline_stages[0].output.source", "required"),
        ("scrape_configs:\n  - job_name: a\n    pipeline_stages:\n      - json: {}\n      - labels: {}\n",
         "scrape_configs[0].pipeline_stages[1].labels", "cannot be empty"),
        ("scrape_configs:\n  - job_name: a\n    pipeline_stages:\n      - {json: {expressions: {a: a}}, labels: {a: }}\n",
         "scrape_configs[0].pipeline_stages[0]", "exactly one key"),
        ("scrape_configs:\n  - {}\n", "scrape_configs[0]", "missing required key 'job_name'"),
        ("clients:\n  - url: localhost:3100\n", "clients[0].url", "invalid URL"),
        ("clients:\n  - url: http://l/x\n    batchwait: soon\n", "clients[0].batchwait", "invalid duration"),
        ("clients:\n  - url: http://l/x\n    encoding: xml\n", "clients[0].encoding", "must be one of"),
        ("scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - {action: explode}\n",
         "scrape_configs[0].relabel_configs[0].action", "must be one of"),
        ("scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - {source_labels: [a], regex: 'x(?=y)', target_label: b}\n",
         "scrape_configs[0].relabel_configs[0].regex", "not supported by RE2"),
        ("positons:\n  filename: x\n", "positons", "did you mean 'positions'"),
    ],
)
def test_single_errors(text, path, fragment):
    found = issues_of(text)
    assert any(p == path and fragment in m for _, p, m in found), found


def test_yaml_syntax_error_names_the_line():
    found = issues_of("server:\n  http_listen_port: 1\n  bad: [unclosed\n")
    assert found[0][0] >= 3 and "invalid YAML" in found[0][2]


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(e.value) and "cannot read config" in str(e.value)


@pytest.mark.parametrize(
    "text, env, expected",
    [
        ("url: ${LOKI}", {"LOKI": "http://x"}, "url: http://x"),
        ("url: ${LOKI:-http://default}", {}, "url: http://default"),
        ("url: ${LOKI:-http://default}", {"LOKI": ""}, "url: http://default"),
        ("url: ${LOKI:-http://default}", {"LOKI": "http://set"}, "url: http://set"),
        ("a: ${UNSET}b", {}, "a: b"),
        ("regex: '^a$'", {}, "regex: '^a$'"),
        ("cost: $$5", {}, "cost: $5"),
    ],
)
def test_expand_env(text, env, expected):
    assert expand_env(text, env) == expected


def test_expand_env_only_when_asked(monkeypatch):
    monkeypatch.setenv("JOB", "from-env")
    text = "scrape_configs:\n  - job_name: ${JOB}\n"
    assert load_config_text(text, expand=True).scrape_configs[0].job_name == "from-env"
    assert load_config_text(text).scrape_configs[0].job_name == "${JOB}"


@pytest.mark.parametrize(
    "text, seconds",
    [("500ms", 0.5), ("10s", 10), ("1m30s", 90), ("5m", 300), ("7h", 25200), ("1d", 86400), ("0", 0), ("1.5h", 5400)],
)
def test_durations(text, seconds):
    assert Duration.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10", "ten", "5 minutes", "1x"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        Duration.parse(text)


@pytest.mark.parametrize("text, n", [("1MiB", 1048576), ("256KB", 256000), ("1mb", 1000000), ("4096", 4096), ("2GiB", 2 << 30)])
def test_sizes(text, n):
    assert ByteSize.parse(text) == n


def test_string_field_keeps_the_scalar_text():
    # Go's YAML decoder hands a string field the scalar as written: 1.10 stays "1.10".
    c = load_config_text("scrape_configs:\n  - job_name: 1.10\n")
    assert c.scrape_configs[0].job_name == "1.10"
