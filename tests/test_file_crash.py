"""`logpipe run` tailing a 200,000-line file, killed with SIGKILL three times while it sends:
every line still arrives, at least once; the lines sent twice are the unacknowledged tails."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

N = 200_000


def start(cfg: Path, out: Path) -> subprocess.Popen:
    with open(out, "ab") as sink:  # the stdout sink writes here, across runs
        return subprocess.Popen([sys.executable, "-m", "logpipe", "run", "--config", str(cfg)],
                                stdout=sink, stderr=subprocess.DEVNULL)


def delivered(out: Path) -> list[str]:
    lines = []
    for raw in out.read_bytes().splitlines():
        try:
            lines.append(json.loads(raw)["line"])
        except ValueError:
            pass  # a write torn by the kill: its batch was never acknowledged, so it is sent again
    return lines


def test_kill_9_three_times_loses_no_line(tmp_path):
    log, out, cfg = tmp_path / "big.log", tmp_path / "out.jsonl", tmp_path / "config.yaml"
    expected = [f"line {i:06d} {'x' * (i % 50)}" for i in range(N)]
    log.write_text("\n".join(expected) + "\n")
    cfg.write_text(f"""\
server: {{http_listen_port: 0}}
positions: {{filename: {tmp_path / 'positions.yaml'}, sync_period: 50ms}}
global: {{file_watch_config: {{min_poll_frequency: 20ms, max_poll_frequency: 50ms}}}}
scrape_configs:
  - job_name: big
    static_configs:
      - labels: {{job: big, __path__: {log}}}
""")
    out.write_bytes(b"")
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    full = len(b"".join(b'{"ts":1700000000000000000,"labels":{"job":"big","filename":"%s"},"line":"%s",'
                        b'"structured_metadata":{}}\n' % (str(log).encode(), line.encode()) for line in expected))
    for _ in range(3):
        # Killed while sending, at a random point of what is left to send.
        before = out.stat().st_size
        target = before + int(rnd.uniform(0.05, 0.35) * full)
        proc = start(cfg, out)
        deadline = time.monotonic() + 20
        while out.stat().st_size < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with open(out, "ab") as f:  # a torn last write stays a line of its own
            if out.stat().st_size and not out.read_bytes().endswith(b"\n"):
                f.write(b"\n")
    proc = start(cfg, out)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(set(delivered(out))) < N:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    got = delivered(out)
    counts = Counter(got)
    assert set(counts) == set(expected), f"seed {seed}: {N - len(set(counts) & set(expected))} lines missing"
    twice = sum(1 for c in counts.values() if c > 1)
    print(f"\nkill -9 x3 (seed {seed}): {N} lines, all arrived; {twice} arrived twice, "
          f"{len(got) - N} extra deliveries in all")
    # Within one file, delivery keeps the file's order: each run resumes where acks stopped.
    first_seen = list(dict.fromkeys(got))
    assert first_seen == expected
    assert os.path.exists(tmp_path / "positions.yaml")
