"""Instructions and cache misses per line of the tuned core's cases, counted by valgrind's
cachegrind: `python tests/bench/counts.py [--cases A,B,C] [--lines N]`.

CPU-seconds on a shared machine vary by a quarter from one minute to the next, most for work
that misses the CPU's caches, so two versions compare only over many alternating runs.
Counts do not vary: a change that saves 3% shows as 3% in one run. Each case runs its source,
its pipeline and the Loki protobuf encoding (what `logpipe bench --loki protobuf` measures,
without sending) once over N lines and once over none, in parallel; the difference, per line,
is printed. The simulated last-level cache is 1 MiB, as the L2 of the machines the figures in
README come from. Needs valgrind; the test pass only runs it once, small, when valgrind is
there."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import ensure, ensure_journal  # noqa: E402

if TYPE_CHECKING:
    from logpipe.batch import Batch

HERE = Path(__file__).resolve().parent
# case: (config, input kind, the variable its config reads the input from)
CASES = {"A": ("case-a.yaml", "litellm", "BENCH_FILE"), "B": ("case-b.yaml", "nginx", "BENCH_FILE"),
         "C": ("case-c.yaml", "journal", "BENCH_JOURNAL")}


def child(config: str, limit: int) -> None:
    """The counted work: `limit` lines through the source, the pipeline and the encoding."""
    from logpipe.agent import Job
    from logpipe.bench import encode_only, source_batches
    from logpipe.cli import tune_memory
    from logpipe.config import load_config
    from logpipe.config.schema import ClientConfig
    from logpipe.sinks.loki import LokiClient
    from logpipe.sources.file import FileOptions
    from logpipe.telemetry import SelfMetrics

    tune_memory()
    job = Job(load_config(config, expand=True).scrape_configs[0], SelfMetrics())
    client = LokiClient(ClientConfig(url="http://127.0.0.1:9/unused"), job.env.metrics)  # type: ignore[arg-type]
    read = 0

    def processed() -> Iterator[Batch]:
        nonlocal read
        for batch in source_batches(job, FileOptions()) if limit else ():
            read += len(batch)
            if (out := job.process(batch)).lines:
                yield out
            if read >= limit:
                return

    encode_only(client, processed(), "protobuf")
    print(read, flush=True)
    os._exit(0)  # the counts end here: no teardown (the client's idle sender thread included)


def counted(config: Path, limit: int, env: dict[str, str], out: Path) -> subprocess.Popen:
    valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=yes", "--LL=1048576,16,64", f"--cachegrind-out-file={out}"]
    return subprocess.Popen([*valgrind, sys.executable, __file__, "--child", str(config), str(limit)],
                            env={**os.environ, **env, "PYTHONHASHSEED": "0"}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def summary(path: Path) -> dict[str, int]:
    text = path.read_text()
    events = next(line for line in text.splitlines() if line.startswith("events:")).split()[1:]
    totals = next(line for line in text.splitlines() if line.startswith("summary:")).split()[1:]
    return dict(zip(events, map(int, totals)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="A,B,C")
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "logpipe-bench"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
    if shutil.which("valgrind") is None:
        sys.exit("counts.py needs valgrind (Debian: apt-get install valgrind)")
    for case in args.cases.split(","):
        config, kind, var = CASES[case]
        folder = Path(args.data)
        data = ensure_journal(args.lines, folder) if kind == "journal" else ensure(kind, args.lines, folder)
        with tempfile.TemporaryDirectory() as tmp:
            outs = [Path(tmp) / "lines.out", Path(tmp) / "none.out"]
            procs = [counted(HERE / config, limit, {var: str(data)}, out) for limit, out in zip((args.lines, 0), outs)]
            printed = [proc.communicate()[0] for proc in procs]
            if any(proc.returncode for proc in procs):
                sys.exit(f"case {case}: the counted run failed")
            full, empty = map(summary, outs)
        n = int(printed[0].split()[-1])
        per = {k: (full[k] - empty[k]) / n for k in full}
        d1 = per["D1mr"] + per["D1mw"]
        ll = per["DLmr"] + per["DLmw"]
        print(f"  case {case}: {per['Ir']:,.0f} instructions, {d1:,.1f} L1d misses, {ll:,.1f} L2 misses per line "
              f"({n:,} lines; misses as simulated, without the hardware's prefetching)")


if __name__ == "__main__":
    main()
