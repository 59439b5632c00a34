"""Deterministic benchmark inputs: LiteLLM-style JSON lines and nginx combined lines."""
from __future__ import annotations

import random
import sys
from pathlib import Path

MODELS = ["gpt-4o", "gpt-4o-mini", "llama3-70b", "claude-3-5-sonnet", "mistral-large", "qwen2-72b"]
LEVELS = ["INFO"] * 17 + ["WARNING", "ERROR", "DEBUG"]
PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/health", "/v1/models"]
AGENTS = ["python-httpx/0.27.0", "curl/8.5.0", "OpenAI/Python 1.40.0", "kube-probe/1.29"]


def litellm(n: int, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        sec = i // 2000
        ts = f"2026-11-20T{10 + sec // 3600 % 14:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.{rnd.randrange(10**6):06d}Z"
        status = 200 if rnd.random() < 0.95 else rnd.choice([400, 429, 500, 503])
        level = "ERROR" if status >= 500 else rnd.choice(LEVELS)
        out.append(
            '{"timestamp": "%s", "level": "%s", "model": "%s", "status": %d, "latency_ms": %.1f, '
            '"message": "POST /chat/completions %d", "request_id": "req-%016x", "user": "team-%d", '
            '"tokens": {"prompt": %d, "completion": %d}}'
            % (ts, level, rnd.choice(MODELS), status, rnd.lognormvariate(6, 1), status, rnd.getrandbits(64),
               rnd.randrange(50), rnd.randrange(4000), rnd.randrange(1000))
        )
    return out


def nginx(n: int, seed: int = 2) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        sec = i // 2000
        ts = f"20/Nov/2026:{10 + sec // 3600 % 14:02d}:{sec // 60 % 60:02d}:{sec % 60:02d} +0000"
        status = rnd.choice([200] * 30 + [201, 204, 301, 400, 401, 404, 429, 500, 502, 503])
        out.append(
            '10.%d.%d.%d - - [%s] "%s %s HTTP/1.1" %d %d "-" "%s" %.3f'
            % (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256), ts, rnd.choice(["GET", "POST", "POST"]),
               rnd.choice(PATHS), status, rnd.randrange(100000), rnd.choice(AGENTS), rnd.expovariate(2))
        )
    return out


KINDS = {"litellm": litellm, "nginx": nginx}


def ensure(kind: str, n: int, folder: Path) -> Path:
    path = folder / f"{kind}-{n}.log"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(KINDS[kind](n)) + "\n")
        tmp.rename(path)
    return path


if __name__ == "__main__":
    kind, n = sys.argv[1], int(sys.argv[2])
    sys.stdout.write("\n".join(KINDS[kind](n)) + "\n")


UNITS = ["ollama.service", "litellm.service", "vllm.service", "redis-server.service"]


def journal_export(n: int, seed: int = 3):
    """Export-format entries across four units, about 20 fields each like a real journal."""
    import time as _time

    rnd = random.Random(seed)
    start_us = int(_time.time() * 1e6) - n * 100  # all within max_age of the bench configs
    lit = litellm(2000, seed)
    ngx = nginx(2000, seed)
    for i in range(n):
        unit = UNITS[i % 4]
        if unit == "litellm.service":
            msg = lit[i % 2000]
        elif unit == "ollama.service":
            msg = (f'time=2026-11-20T10:00:{i % 60:02d}.000Z level={rnd.choice(["INFO", "INFO", "WARN", "ERROR"])} '
                   f'source=server.go:{rnd.randrange(900)} msg="request served" model=llama3 duration={rnd.random():.3f}s')
        elif unit == "vllm.service":
            msg = ngx[i % 2000]
        else:
            msg = f"1234:M 20 Nov 2026 10:00:{i % 60:02d}.{i % 1000:03d} * Background saving started by pid {i}"
        fields = (
            f"__REALTIME_TIMESTAMP={start_us + i * 100}\n__MONOTONIC_TIMESTAMP={i * 100}\n"
            f"_BOOT_ID=8d3e1c7f2b4a4f0e9c6d5b3a2f1e0d9c\n_MACHINE_ID=2f4c6e8a0b1d3f5e7a9c1e3f5a7c9e1b\n"
            f"_HOSTNAME=gpu-node-1\n_TRANSPORT=stdout\nPRIORITY={rnd.choice('3466666')}\nSYSLOG_FACILITY=3\n"
            f"SYSLOG_IDENTIFIER={unit.split('.')[0]}\n_PID={1000 + i % 4}\n_UID=998\n_GID=998\n_COMM={unit.split('.')[0]}\n"
            f"_EXE=/usr/bin/{unit.split('.')[0]}\n_CMDLINE=/usr/bin/{unit.split('.')[0]} serve\n"
            f"_CAP_EFFECTIVE=0\n_SELINUX_CONTEXT=unconfined\n_SYSTEMD_CGROUP=/system.slice/{unit}\n"
            f"_SYSTEMD_UNIT={unit}\n_SYSTEMD_SLICE=system.slice\n_SYSTEMD_INVOCATION_ID=4b8f0c2d9e1a4c3b\n"
            f"_STREAM_ID=0d7c9e1b3a5f\nMESSAGE={msg}\n\n"
        )
        yield fields.encode()


def ensure_journal(n: int, folder: Path) -> Path:
    """A directory holding an n-entry journal (made once, then reused)."""
    import shutil
    import subprocess

    d = folder / f"journal-{n}"
    done = d / ".complete"
    if done.exists():
        return d
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    exe = next(p for p in ("/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote")
               if Path(p).exists())
    proc = subprocess.Popen([exe, f"--output={d}/bench.journal", "-"], stdin=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    chunk: list[bytes] = []
    for e in journal_export(n):
        chunk.append(e)
        if len(chunk) == 10000:
            proc.stdin.write(b"".join(chunk))
            chunk = []
    proc.stdin.write(b"".join(chunk))
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("systemd-journal-remote failed")
    done.touch()
    return d
