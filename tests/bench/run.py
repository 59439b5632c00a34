"""Run the benchmark cases: `python tests/bench/run.py [--lines N] [--cases A,B] [--repeat N]`.

Each case runs `logpipe bench` in its own process (so its peak RssAnon is its own) and is
printed beside a floor measured right after it on the same lines, so the ratio holds on a
noisy machine. Not part of the test pass; figures go in README and closing notes."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import ensure  # noqa: E402

HERE = Path(__file__).resolve().parent
CASES = {"litellm": HERE / "litellm.yaml", "nginx": HERE / "nginx.yaml"}
# Variants over the same input, for the cost of one stage: (name, input kind, config)
VARIANTS = [("litellm-json", "litellm", HERE / "litellm-json.yaml"), ("litellm-scrub", "litellm", HERE / "litellm-scrub.yaml")]


def floor_json(path: Path) -> float:
    lines = path.read_text().splitlines()
    c0 = time.process_time()
    for line in lines:
        orjson.loads(line)
    return len(lines) / (time.process_time() - c0)


def floor_regex(path: Path, config: Path) -> float:
    import yaml

    expr = yaml.safe_load(config.read_text())["scrape_configs"][0]["pipeline_stages"][0]["regex"]["expression"]
    text = path.read_text()
    n = text.count("\n")
    rx = re.compile(expr.lstrip("^"))
    c0 = time.process_time()
    rx.findall(text)
    return n / (time.process_time() - c0)


def floor_journalctl(directory: Path) -> float:
    """journalctl -o cat over the same journal: the C floor for reading it."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["journalctl", "--directory", str(directory), "-o", "cat", "--no-pager"],
                         stdout=subprocess.PIPE, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out.count(b"\n") / cpu


def floor_cat(path: Path) -> float:
    """cat FILE > /dev/null: the floor for reading the file at all."""
    import resource

    n = path.read_bytes().count(b"\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return n / max(cpu, 1e-6)


def run_case(args: list[str], env: dict[str, str] | None = None, pick: str = "") -> int | None:
    """Run `logpipe bench`, print what it says, return the lines per CPU-second of its first
    report (or of the one whose name holds `pick`)."""
    import os

    r = subprocess.run([sys.executable, "-m", "logpipe", "bench", *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    print(r.stdout.strip() or r.stderr.strip())
    line = next((x for x in r.stdout.splitlines() if pick in x and "lines per CPU-second" in x), "")
    m = re.search(r"([\d,]+) lines per CPU-second", line)
    return int(m.group(1).replace(",", "")) if m else None


def case_d(data: Path, block: float, lines: int) -> None:
    """Case A under `logpipe run` while Loki answers 429 for `block` seconds, then 2xx: peak
    RssAnon over the run, and its range while blocked (flat: the sources stop reading)."""
    import os
    import signal

    import yaml

    from logpipe.loki_receiver import LokiReceiver

    receiver = LokiReceiver(record=False).start()
    receiver.failing = 429
    config = yaml.safe_load((HERE / "case-a.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        config["positions"] = {"filename": f"{tmp}/positions.yaml"}
        config["clients"] = [{"url": receiver.url, "backoff_config": {"min_period": "100ms", "max_period": "1s"}}]
        cfg = Path(tmp) / "case-d.yaml"
        cfg.write_text(yaml.safe_dump(config))
        proc = subprocess.Popen([sys.executable, "-m", "logpipe", "run", "--config.expand-env", "--config", str(cfg),
                                 "--log.level", "error"], env={**os.environ, "BENCH_FILE": str(data)})
        blocked: list[float] = []
        peak = 0.0
        t0 = time.monotonic()
        try:
            while receiver.accepted < lines and time.monotonic() - t0 < block + 600:
                time.sleep(0.25)
                rss = rss_anon_mib(proc.pid)
                peak = max(peak, rss)
                if time.monotonic() - t0 < block:
                    blocked.append(rss)
                else:
                    receiver.failing = None
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            receiver.stop()
    late = blocked[len(blocked) // 4 :] or [0.0]  # after start-up
    print(f"case D: {receiver.accepted:,} of {lines:,} lines delivered after {block:.0f}s of 429s; peak RssAnon "
          f"{peak:.1f} MiB; while blocked {min(late):.1f}-{max(late):.1f} MiB")


def paired(times: int, case: Callable[[], float | None], floor: Callable[[], float]) -> tuple[float, float, str] | None:
    """`times` runs of the case, each followed at once by its floor: the best of each, and
    each run's ratio to its own floor, the median first. A shared machine's speed drifts within
    minutes, so a ratio of runs made minutes apart would carry the drift; a slow run is noise
    from elsewhere, never a faster program."""
    pairs = [(rate, floor()) for rate in (case() for _ in range(times)) if rate]
    if not pairs:
        return None
    ratios = sorted(rate / f for rate, f in pairs)
    median = ratios[len(ratios) // 2]
    text = f"{median:.2f}x" + (f" (median of {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else "")
    return max(r for r, _ in pairs), max(f for _, f in pairs), text


def rss_anon_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "logpipe-bench"))
    ap.add_argument("--cases", default="A,B,C,D,litellm,nginx,journal,loki,file")
    ap.add_argument("--block", type=float, default=60.0, help="case D: seconds of 429s")
    ap.add_argument("--repeat", type=int, default=1, help="cases A, B, C and the journal: this many runs, each "
                                                          "followed by its floor")
    args = ap.parse_args()
    n = args.repeat
    cases = args.cases.split(",")
    if "D" in cases:
        case_d(ensure("litellm", args.lines, Path(args.data)), args.block, args.lines)
    # the tuned core's targets: source -> pipeline -> Loki protobuf encoding, each beside its floor
    for case, kind in (("A", "litellm"), ("B", "nginx")):
        if case in cases:
            data = ensure(kind, args.lines, Path(args.data))
            config = HERE / f"case-{case.lower()}.yaml"
            got = paired(n, lambda: run_case(["--config", str(config), "--config.expand-env", "--loki", "protobuf",
                                              "--log.level", "warn"], {"BENCH_FILE": str(data)}, pick="Loki protobuf"),
                         lambda: floor_json(data) if kind == "litellm" else floor_regex(data, config))
            what = "orjson.loads per line" if kind == "litellm" else "one re.findall over the text"
            if got:
                print(f"  case {case}: {got[0]:,.0f} lines per CPU-second; floor ({what}) {got[1]:,.0f}; ratio {got[2]}")
    if "C" in cases:
        from generate import ensure_journal

        directory = ensure_journal(args.lines, Path(args.data))
        got = paired(n, lambda: run_case(["--config", str(HERE / "case-c.yaml"), "--config.expand-env", "--loki",
                                          "protobuf", "--log.level", "warn"], {"BENCH_JOURNAL": str(directory)},
                                         pick="Loki protobuf"),
                     lambda: floor_journalctl(directory))
        if got:
            print(f"  case C: {got[0]:,.0f} entries per CPU-second; floor (journalctl -o cat > /dev/null) "
                  f"{got[1]:,.0f}; ratio {got[2]}")
    for kind in ("litellm", "nginx"):
        if kind not in cases:
            continue
        config = CASES[kind]
        data = ensure(kind, args.lines, Path(args.data))
        rate = run_case(["--config", str(config), "--input", str(data)])
        floor = floor_json(data) if kind == "litellm" else floor_regex(data, config)
        what = "orjson.loads per line" if kind == "litellm" else "one re.findall over the text"
        if rate:
            print(f"  floor ({what}): {floor:,.0f} lines per CPU-second; ratio {rate / floor:.2f}x")
    for name, kind, config in VARIANTS:
        if kind in cases:
            run_case(["--config", str(config), "--input", str(ensure(kind, args.lines, Path(args.data)))])
    if "loki" in cases:  # the Loki sink's cost over the json pipeline, both encodings
        data = ensure("litellm", args.lines, Path(args.data))
        for encoding in ("protobuf", "json"):
            run_case(["--config", str(HERE / "litellm-json.yaml"), "--input", str(data), "--loki", encoding,
                      "--log.level", "warn"])
    if "journal" in cases:
        from generate import ensure_journal

        directory = ensure_journal(args.lines, Path(args.data))
        env = {"BENCH_JOURNAL": str(directory)}
        got = paired(n, lambda: run_case(["--config", str(HERE / "journal.yaml"), "--config.expand-env"], env),
                     lambda: floor_journalctl(directory))
        if got:
            print(f"  floor (journalctl -o cat > /dev/null): {got[1]:,.0f} entries per CPU-second; ratio {got[2]}")
        run_case(["--config", str(HERE / "journal-json.yaml"), "--config.expand-env"], env)
    if "file" in cases:  # the file source over the litellm input, with the json pipeline and alone
        data = ensure("litellm", args.lines, Path(args.data))
        env = {"BENCH_FILE": str(data)}
        config = ["--config", str(HERE / "file-json.yaml"), "--config.expand-env"]
        run_case(config, env)
        rate = run_case(config + ["--source-only"], env)
        floor = floor_cat(data)
        if rate:
            print(f"  floor (cat file > /dev/null): {floor:,.0f} lines per CPU-second; ratio {rate / floor:.2f}x")


if __name__ == "__main__":
    main()
