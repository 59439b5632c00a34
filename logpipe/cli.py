"""The `logpipe` command: run, check, dry-run, inspect, bench."""
from __future__ import annotations

import argparse
import ctypes
import gc
import io
import logging
import os
import platform
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from logpipe import __version__
from logpipe.config import Config, load_config, load_config_text
from logpipe.errors import ConfigError, LogpipeError

if TYPE_CHECKING:
    from logpipe.batch import Batch

log = logging.getLogger("logpipe")

# Promtail's single-dash flags, so a Promtail command line works unchanged.
_PROMTAIL_FLAGS = {
    "-config.file": "--config",
    "-config.expand-env": "--config.expand-env",
    "-dry-run": "--dry-run",
    "-inspect": "--inspect",
    "-stdin": "--stdin",
    "-log.level": "--log.level",
    "-check-syntax": "--check-syntax",
}


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """Translate Promtail-style arguments (`-config.file=x`, `-dry-run`) to logpipe's."""
    out: list[str] = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        alias = _PROMTAIL_FLAGS.get(name) or _PROMTAIL_FLAGS.get("-" + name.lstrip("-")) if name.startswith("-") else None
        if alias is None or (name.startswith("--") and alias == name):
            out.append(arg)
            continue
        if alias in ("--config.expand-env", "--dry-run", "--inspect", "--stdin", "--check-syntax"):
            if not eq or value.lower() in ("true", "1"):
                out.append(alias)
        else:
            out.extend([alias, value] if eq else [alias])
    # Promtail has no subcommands: its flags alone mean run (or dry-run/inspect/check).
    commands = {"run", "check", "dry-run", "inspect", "bench", "-h", "--help", "--version"}
    if not any(a in commands for a in out):
        if "--check-syntax" in out:
            out = ["check"] + [a for a in out if a != "--check-syntax"]
        elif "--inspect" in out:
            out = ["inspect"] + [a for a in out if a not in ("--inspect", "--dry-run", "--stdin")]
        elif "--dry-run" in out:
            out = ["dry-run"] + [a for a in out if a not in ("--dry-run", "--stdin")]
        else:
            out = ["run"] + out
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="logpipe", description="A Promtail-compatible log agent.")
    p.add_argument("--version", action="version", version=f"logpipe {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, required: bool) -> None:
        sp.add_argument("--config", "--config.file", dest="config", required=required, metavar="FILE",
                        help="config file (Promtail's schema)")
        sp.add_argument("--config.expand-env", dest="expand_env", action="store_true",
                        help="expand ${VAR} and ${VAR:-default} in the config")
        sp.add_argument("--log.level", dest="log_level", choices=["debug", "info", "warn", "error"])

    run = sub.add_parser("run", help="run the agent (no --config: the embedded default)")
    common(run, required=False)
    run.add_argument("--stdin", action="store_true", help="read standard input (Promtail's -stdin)")
    run.add_argument("--job", help="with --stdin: the scrape config to use")

    check = sub.add_parser("check", help="validate a config and exit 0 (valid) or 1")
    common(check, required=True)

    for name, what in (("dry-run", "print each entry as JSON"), ("inspect", "show what each stage changes")):
        sp = sub.add_parser(name, help=f"read stdin (dry-run --job of a journal job: its journal) through "
                                       f"a job's pipeline and {what}")
        common(sp, required=True)
        sp.add_argument("--job", help="scrape config job_name (default: the first)")
        sp.add_argument("--clock", type=int, metavar="UNIX_NS",
                        help="take this as the current time (Unix ns), for output that can be reproduced")

    bench = sub.add_parser("bench", help="measure a pipeline over a file held in memory")
    common(bench, required=True)
    bench.add_argument("--input", metavar="FILE", help="log lines to run through the pipeline (not for journal jobs)")
    bench.add_argument("--job", help="scrape config job_name (default: the first)")
    bench.add_argument("--repeat", type=int, default=1, help="run the input this many times")
    bench.add_argument("--source-only", action="store_true", help="read the job's source, skip the pipeline")
    bench.add_argument("--loki", choices=["protobuf", "json"],
                       help="also push the output to a Loki receiver on loopback with this encoding")
    return p


def setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level={"warn": logging.WARNING}.get(level, getattr(logging, level.upper(), logging.INFO)),
        format="ts=%(asctime)s level=%(levelname)s component=%(name)s msg=%(message)r",
    )


def default_config() -> Config:
    """The embedded default: the bundled sample logs, Loki if LOKI_URL is set, else stdout."""
    text = resources.files("logpipe").joinpath("default.yaml").read_text()
    loki = os.environ.get("LOKI_URL")
    if loki:
        text += f"clients:\n  - url: {loki!r}\n"
    return load_config_text(text, "<embedded default>", expand=True)


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, expand=args.expand_env)


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    jobs = ", ".join(sc.job_name for sc in config.scrape_configs) or "none"
    print(f"{args.config}: valid ({len(config.scrape_configs)} scrape configs: {jobs}; {len(config.clients)} clients)")
    return 0


def cmd_dry_run(args: argparse.Namespace) -> int:
    from logpipe.agent import Agent, on_signals
    from logpipe.sinks.stdout import StdoutSink

    config = _load(args)
    agent = Agent(config, [StdoutSink(sys.stdout.buffer)])
    sc = config.job(args.job) if args.job else None
    if sc is not None and sc.journal is not None:
        agent.add_journal(sc, follow=False)  # the journal from max_age to its end, then exit
    elif sc is not None and sc.file_targets():
        agent.add_files(sc, follow=False)  # the job's files to their end, then exit
    else:
        agent.add_stdin(sys.stdin.buffer, args.job, args.clock)
    on_signals()
    agent.start()
    try:
        agent.wait()
    finally:
        agent.shutdown()
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from logpipe.agent import Job, on_signals
    from logpipe.inspect import inspect_batch
    from logpipe.sources.stdin import StdinSource
    from logpipe.telemetry import SelfMetrics

    config = _load(args)
    metrics = SelfMetrics()
    if args.clock is None:
        job = Job(config.job(args.job), metrics)
        source = StdinSource(sys.stdin.buffer, job, metrics)
    else:
        job = Job(config.job(args.job), metrics, clock=lambda: args.clock / 1e9)
        source = StdinSource(sys.stdin.buffer, job, metrics, clock=lambda: args.clock)
    on_signals()
    for batch in source.batches():
        for text in inspect_batch(job.pipeline, job.relabeled(batch)):
            sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0


def host_has_journal() -> bool:
    from logpipe.sources.journal import SYSTEM_JOURNAL_DIRS

    return any(any(Path(d).rglob("*.journal")) for d in SYSTEM_JOURNAL_DIRS if Path(d).is_dir())


def cmd_run(args: argparse.Namespace) -> int:
    from logpipe.agent import Agent, Sink, on_signals
    from logpipe.positions import Positions
    from logpipe.sinks.loki import LokiClient
    from logpipe.sinks.stdout import StdoutSink
    from logpipe.telemetry import SelfMetrics

    embedded = not args.config
    config = default_config() if embedded else _load(args)
    if args.log_level is None:
        logging.getLogger().setLevel(config.server.log_level.upper().replace("WARN", "WARNING"))
    p = config.positions
    positions = Positions(p.filename, p.sync_period, p.ignore_invalid_yaml)
    metrics = SelfMetrics(process=True)
    sinks: list[Sink] = [LokiClient(c, metrics) for c in config.clients]  # every entry to every client
    agent = Agent(config, sinks or [StdoutSink(sys.stdout.buffer)], metrics=metrics, positions=positions)
    samples = False
    if embedded:
        if host_has_journal():
            agent.add_configured_sources()
        else:
            log.info("no local journal: sending the bundled sample logs")
            agent.add_stdin(io.BytesIO(bundled_samples()), "samples")
            samples = True
    else:
        if args.stdin or any(sc.stdin is not None for sc in config.scrape_configs):
            agent.add_stdin(sys.stdin.buffer, args.job)
        agent.add_configured_sources()
    if not agent.sources:
        raise LogpipeError("scrape_configs: nothing to read: add a `journal`, `static_configs` (with `__path__`) or `stdin` scrape config (or pass --stdin)")
    on_signals()
    agent.start_server()
    agent.start()
    try:
        agent.wait()
        if samples and not agent.stop_event.is_set():
            log.info("samples sent; serving /metrics until interrupted (Ctrl-C)")
            agent.serve_forever()
    finally:
        agent.shutdown(max((c.shutdown_timeout for c in config.clients), default=10.0))
    return 0


def bundled_samples() -> bytes:
    folder = resources.files("logpipe").joinpath("samples")
    return b"".join(f.read_bytes() for f in sorted(folder.iterdir(), key=lambda f: f.name) if f.name.endswith(".log"))


def cmd_bench(args: argparse.Namespace) -> int:
    from logpipe.agent import Job
    from logpipe.bench import bench_loki, load_lines, measure, memory_batches, run_job, source_batches
    from logpipe.sources.file import FileOptions
    from logpipe.telemetry import SelfMetrics

    config = _load(args)
    sc = config.job(args.job)
    job = Job(sc, SelfMetrics())
    if sc.journal is not None or sc.file_targets():
        opts = FileOptions.of(config, sc)

        def batches() -> Iterator[Batch]:
            return source_batches(job, opts)
    else:
        if not args.input:
            raise LogpipeError("bench: --input FILE is needed for a job that reads neither the journal nor files")
        lines = load_lines(args.input) * args.repeat

        def batches() -> Iterator[Batch]:
            return memory_batches(job, lines)
    if args.loki:
        alone, sent, encoded = bench_loki(job, batches, args.loki)
        for figures in (alone, sent, encoded):
            print(figures.report())
        sink = (sent.cpu - alone.cpu) / max(sent.lines_out, 1) * 1e6
        share = encoded.cpu / max(encoded.lines_in, 1) * sent.lines_out / sent.cpu
        print(f"Loki sink ({args.loki}): {sink:.2f} µs of CPU per entry for encoding and sending, "
              f"{(sent.cpu - alone.cpu) / sent.cpu:.0%} of the whole; encoding alone "
              f"{encoded.cpu / max(encoded.lines_in, 1) * 1e6:.2f} µs per entry, {share:.0%} of the whole")
        return 0
    what = "source alone" if args.source_only else f"{len(job.pipeline.stages)} stages"
    print(measure(f"{job.name} ({what})", lambda: run_job(job, batches(), source_only=args.source_only)).report())
    return 0


COMMANDS = {"run": cmd_run, "check": cmd_check, "dry-run": cmd_dry_run, "inspect": cmd_inspect, "bench": cmd_bench}


def tune_memory() -> None:
    """A batch makes and frees thousands of small dicts and lists at once; reference counting
    frees them (they hold no cycles), yet at Python's default thresholds the cycle collector
    would rescan them hundreds of times per batch: over a quarter of a json pipeline's CPU.

    glibc gives each thread that allocates its own malloc arena, and memory freed in one is
    not reused by the others: with sources, the Loki sender and the HTTP server each in a
    thread, that held 10 MiB more at peak. Under the GIL the threads gain nothing from
    separate arenas, so there is one."""
    gc.set_threshold(10_000, 50, 1000)
    if platform.libc_ver()[0] == "glibc":
        M_ARENA_MAX = -8  # from malloc.h
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)


def main(argv: Sequence[str] | None = None) -> int:
    tune_memory()
    args = build_parser().parse_args(normalize_argv(sys.argv[1:] if argv is None else argv))
    setup_logging(args.log_level or "info")
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        for issue in e.issues:
            print(issue, file=sys.stderr)
        n = len(e.issues)
        print(f"logpipe: {n} error{'s' if n != 1 else ''} in config; nothing was started", file=sys.stderr)
        return 1
    except LogpipeError as e:
        print(f"logpipe: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
