"""The benchmarks, as a smoke run over small inputs: every case runs and reports; no thresholds
(timings are figures for notes and README, never pass/fail)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.journal_files import JOURNAL_REMOTE

RUN = Path(__file__).resolve().parent / "bench" / "run.py"


def test_every_bench_case_runs_on_a_small_input(tmp_path):
    cases = ["A", "B", "D", "litellm", "nginx", "loki", "file"]
    if JOURNAL_REMOTE and shutil.which("journalctl"):
        cases += ["C", "journal"]
    r = subprocess.run([sys.executable, str(RUN), "--lines", "3000", "--block", "2", "--data", str(tmp_path), "--cases", ",".join(cases),
                        "--repeat", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for case in ("A", "B") + (("C",) if "C" in cases else ()):
        assert f"  case {case}: " in r.stdout, r.stdout
    assert "case D: 3,000 of 3,000 lines delivered" in r.stdout, r.stdout
    assert "Loki sink (protobuf)" in r.stdout and "Loki sink (json)" in r.stdout
    assert "source alone" in r.stdout and "floor (cat file > /dev/null)" in r.stdout


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="counting needs valgrind")
def test_the_counts_run_on_a_small_input(tmp_path):
    r = subprocess.run([sys.executable, str(RUN.parent / "counts.py"), "--cases", "B", "--lines", "500", "--data", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "  case B: " in r.stdout and "instructions" in r.stdout and "(500 lines;" in r.stdout, r.stdout
