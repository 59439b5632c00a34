"""Golden tests: every pipeline in pipelines/ has sample input and expected output beside it,
and `logpipe dry-run` over the input gives exactly the expected entries; the metrics the
pipeline derives equal the expected exposition. Set LOGPIPE_UPDATE_GOLDEN=1 to rewrite the
expected files from the current output (then read the diff before committing it)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from logpipe.agent import Job
from logpipe.batch import Batch
from logpipe.config import load_config_text
from logpipe.telemetry import SelfMetrics
from tests.conftest import ROOT, run_cli

PIPELINES = ROOT / "pipelines"
TESTDATA = PIPELINES / "testdata"
NAMES = sorted(p.stem for p in PIPELINES.glob("*.yaml"))
CLOCK_NS = 1_763_640_000_000_000_000  # 2025-11-20T12:00:00Z: "now" for lines without a time or year
UPDATE = os.environ.get("LOGPIPE_UPDATE_GOLDEN") == "1"


def config_for(name: str) -> str:
    return (f"server: {{http_listen_port: 0}}\nscrape_configs:\n  - job_name: {name}\n"
            f"    stdin: {{labels: {{job: {name}}}}}\n    pipeline_stages:\n      - include: {PIPELINES / name}.yaml\n")


def test_every_pipeline_has_its_golden_files():
    assert NAMES, "no pipelines found"
    missing = [f"{n}{suffix}" for n in NAMES for suffix in (".input.log", ".expected.jsonl", ".expected.prom")
               if not (TESTDATA / f"{n}{suffix}").is_file()]
    assert not missing, f"pipelines without golden files: {missing}"


def check(path: Path, actual: str) -> None:
    if UPDATE:
        path.write_text(actual)
    assert actual == path.read_text(), f"{path.name} differs (LOGPIPE_UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("name", NAMES)
def test_dry_run_equals_expected(name, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_for(name))
    r = run_cli("dry-run", "--config", str(cfg), "--clock", str(CLOCK_NS),
                input=(TESTDATA / f"{name}.input.log").read_bytes())
    assert r.returncode == 0, r.stderr.decode()
    check(TESTDATA / f"{name}.expected.jsonl", r.stdout.decode())


@pytest.mark.parametrize("name", NAMES)
def test_derived_metrics_equal_expected(name):
    config = load_config_text(config_for(name))
    metrics = SelfMetrics()
    job = Job(config.scrape_configs[0], metrics, clock=lambda: CLOCK_NS / 1e9)
    lines = [line for line in (TESTDATA / f"{name}.input.log").read_text().splitlines() if line]
    job.process(Batch.of_lines(lines, list(range(CLOCK_NS, CLOCK_NS + len(lines))), job.labels))
    exposition = generate_latest(metrics.registry).decode()
    derived = "".join(line + "\n" for line in exposition.splitlines()
                      if "logpipe_custom_" in line and not line.startswith("# "))
    check(TESTDATA / f"{name}.expected.prom", derived)
