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
