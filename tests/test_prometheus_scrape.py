"""A real Prometheus scrapes running `logpipe run` agents fed with the sample logs of
pipelines/: the derived series hold exactly the input's counts, and every recording rule and
every dashboard panel's PromQL evaluates (and the panels of the sample services have data)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_cli import free_port

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed")
PIPELINES = ["litellm", "nginx", "ollama", "llama-cpp", "vllm", "redis"]
DEPLOY = ROOT / "deploy"


def get(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prom")
    agents, targets = [], []
    try:
        for name in PIPELINES:
            port = free_port()
            cfg = tmp / f"{name}.yaml"
            cfg.write_text(f"server: {{http_listen_address: 127.0.0.1, http_listen_port: {port}}}\n"
                           f"positions: {{filename: {tmp}/{name}-positions.yaml}}\n"
                           f"scrape_configs:\n  - job_name: {name}\n    stdin: {{labels: {{job: {name}}}}}\n"
                           f"    pipeline_stages:\n      - include: {ROOT / 'pipelines' / name}.yaml\n")
            p = subprocess.Popen([sys.executable, "-m", "logpipe", "run", "--config", str(cfg)], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            assert p.stdin is not None
            p.stdin.write((ROOT / "pipelines" / "testdata" / f"{name}.input.log").read_bytes())
            p.stdin.flush()  # left open: the agent keeps serving /metrics until it closes
            agents.append(p)
            targets.append(f"127.0.0.1:{port}")
        rules = sorted(str(p) for p in (DEPLOY / "prometheus" / "rules").glob("*.yml"))
        (tmp / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rules,
            "scrape_configs": [{"job_name": "logpipe", "static_configs": [{"targets": targets}]}],
        }))
        port = free_port()
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        agents.append(prom)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 40
        scraped = False
        while time.monotonic() < deadline and not scraped:
            time.sleep(0.5)
            try:
                # two scrapes of every agent, all up
                r = query(base, 'count_over_time(up{job="logpipe"}[1m]) >= 2 and up{job="logpipe"} == 1')
                scraped = len(r) == len(targets)
            except OSError:
                continue
        assert scraped, "Prometheus did not scrape every agent twice in time: " + \
            "; ".join(a.stderr.read1(2000).decode() for a in agents[:-1] if a.poll() is not None)  # type: ignore[union-attr]
        time.sleep(1.5)  # let the rule groups evaluate once over the scraped data
        yield base
    finally:
        for p in agents:
            p.kill()
            p.wait()


def query(base: str, expr: str) -> list[dict]:
    body = get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def value(base: str, expr: str) -> float:
    result = query(base, expr)
    assert len(result) == 1, (expr, result)
    return float(result[0]["value"][1])


def litellm_inputs() -> list[dict]:
    out = []
    for line in (ROOT / "pipelines" / "testdata" / "litellm.input.log").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_derived_counters_and_histograms_hold_the_input_counts(prometheus):
    entries = litellm_inputs()
    with_status = [e for e in entries if "status" in e]
    assert value(prometheus, 'sum(logpipe_custom_llm_requests_total{service="litellm"})') == len(with_status)
    errors = [e for e in with_status if e["status"] >= 500 or e["status"] == 429]
    assert value(prometheus, 'sum(logpipe_custom_llm_errors_total{service="litellm"})') == len(errors)
    assert value(prometheus, 'sum(logpipe_custom_llm_request_duration_seconds_count{service="litellm"})') == len(with_status)
    under_1s = [e for e in with_status if e["latency_ms"] <= 1000]
    assert value(prometheus, 'sum(logpipe_custom_llm_request_duration_seconds_bucket{service="litellm", le="1"})') == len(under_1s)
    total_s = sum(e["latency_ms"] for e in with_status) / 1000
    assert value(prometheus, 'sum(logpipe_custom_llm_request_duration_seconds_sum{service="litellm"})') == pytest.approx(total_s)
    prompt = sum(e["tokens"]["prompt"] for e in with_status)
    assert value(prometheus, 'sum(logpipe_custom_llm_prompt_tokens_total{service="litellm"})') == prompt
    nginx_lines = (ROOT / "pipelines" / "testdata" / "nginx.input.log").read_text().splitlines()
    assert value(prometheus, 'sum(logpipe_custom_http_requests_total{service="nginx"})') == len(nginx_lines)
    five_xx = [line for line in nginx_lines if '" 5' in line]
    assert value(prometheus, 'sum(logpipe_custom_http_requests_total{service="nginx", status_class="5xx"})') == len(five_xx)


def test_every_recording_rule_evaluates(prometheus):
    groups = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "logpipe-recording.yml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert rules
    for rule in rules:
        query(prometheus, rule["expr"])
    # and Prometheus itself evaluated them without error
    for g in get(f"{prometheus}/api/v1/rules")["data"]["groups"]:
        for r in g["rules"]:
            assert r.get("health") in ("ok", "unknown"), (r["name"], r.get("lastError"))
    assert query(prometheus, "service_model:llm_requests:rate5m"), "no request rate recorded for the samples"


def dashboard_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                if (target.get("datasource") or panel.get("datasource") or {}).get("type") == "prometheus":
                    expr = target["expr"].replace("$service", ".*").replace("$__rate_interval", "1m")
                    out.append((path.name, panel["title"], expr.replace("$__interval", "1m")))
    return out


def test_every_dashboard_panel_query_evaluates(prometheus):
    queries = dashboard_queries()
    assert len(queries) >= 10
    for _, _, expr in queries:
        query(prometheus, expr)


@pytest.mark.parametrize("title", [
    "Requests per second by model", "Error ratio by model", "p95 latency by model", "Tokens per second by model",
    "HTTP requests by status class (nginx)", "HTTP p95 request time (nginx)", "Entries read per second by job",
])
def test_panels_for_the_sample_services_have_data(prometheus, title):
    exprs = [e for _, t, e in dashboard_queries() if t == title]
    assert exprs, f"no panel titled {title!r}"
    assert any(query(prometheus, e) for e in exprs), f"panel {title!r} returned no data"
