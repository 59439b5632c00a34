"""The deploy/ kit: promtool passes on the Prometheus files, the systemd unit verifies, and the
configs shipped in it load in logpipe."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from logpipe.config import load_config_text

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) not installed")


@needs_promtool
@pytest.mark.parametrize("args", [
    ["check", "config", "prometheus.yml"],
    ["check", "rules", "rules/logpipe-recording.yml", "rules/logpipe-alerts.yml"],
    ["test", "rules", "tests/rules-test.yml"],
])
def test_promtool(args):
    r = subprocess.run(["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path):
    unit = (DEPLOY / "systemd" / "logpipe.service").read_text()
    # verify checks that ExecStart exists: point it at this installation's logpipe
    exe = Path(sys.executable).with_name("logpipe")
    unit = unit.replace("/opt/logpipe/.venv/bin/logpipe", str(exe))
    p = tmp_path / "logpipe.service"
    p.write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "ProtectSystem=strict" in unit and "NoNewPrivileges=yes" in unit and "StateDirectory=logpipe" in unit


def test_kubernetes_configmap_config_is_valid(monkeypatch):
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "logpipe.yaml").read_text()))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    monkeypatch.setenv("LOKI_URL", "http://loki:3100/loki/api/v1/push")
    monkeypatch.setenv("NODE_NAME", "node-1")
    config = load_config_text(cm["data"]["config.yaml"], expand=True)
    assert [sc.job_name for sc in config.scrape_configs] == ["journal", "varlog"]
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    mounts = {m["mountPath"] for m in ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert {"/var/log/journal", "/var/log"} <= mounts
