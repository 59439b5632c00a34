"""Promtail's config schema as typed dataclasses; names are Promtail's YAML keys."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from logpipe.config.decode import Ctx, check_label_name, join
from logpipe.config.decode import field as yaml_field
from logpipe.config.units import ByteSize, Duration


@dataclass
class ServerConfig:
    http_listen_address: str = "127.0.0.1"
    http_listen_port: int = 9080
    log_level: Literal["debug", "info", "warn", "error"] = "info"
    log_format: Literal["logfmt", "json"] = "logfmt"
    disable: bool = False
    # Accepted so Promtail configs load unchanged; logpipe serves no gRPC.
    grpc_listen_address: str = ""
    grpc_listen_port: int = 0
    register_instrumentation: bool = True
    graceful_shutdown_timeout: Duration = Duration(30.0)
    http_server_read_timeout: Duration = Duration(30.0)
    http_server_write_timeout: Duration = Duration(30.0)
    http_server_idle_timeout: Duration = Duration(120.0)
    health_check_target: bool = True
    profiling_enabled: bool = False
    enable_runtime_reload: bool = False

    def validate(self, ctx: Ctx, path: str) -> None:
        if not 0 <= self.http_listen_port <= 65535:
            ctx.error(join(path, "http_listen_port"), f"port {self.http_listen_port} is out of range 0-65535")


@dataclass
class PositionsConfig:
    filename: str = "/var/lib/logpipe/positions.yaml"
    sync_period: Duration = Duration(10.0)
    ignore_invalid_yaml: bool = False


@dataclass
class BackoffConfig:
    min_period: Duration = Duration(0.5)
    max_period: Duration = Duration(300.0)
    max_retries: int = 10


@dataclass
class BasicAuth:
    username: str = ""
    password: str = ""
    password_file: str = ""

    def validate(self, ctx: Ctx, path: str) -> None:
        if self.password and self.password_file:
            ctx.error(path, "set at most one of password and password_file")


@dataclass
class TLSConfig:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    insecure_skip_verify: bool = False

    def validate(self, ctx: Ctx, path: str) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            ctx.error(path, "cert_file and key_file go together")


@dataclass
class ClientConfig:
    url: str
    tenant_id: str = ""
    batchwait: Duration = Duration(1.0)
    batchsize: ByteSize = ByteSize(1024 * 1024)
    external_labels: dict[str, str] = field(default_factory=dict)
    timeout: Duration = Duration(10.0)
    backoff_config: BackoffConfig = field(default_factory=BackoffConfig)
    basic_auth: BasicAuth | None = None
    bearer_token: str = ""
    bearer_token_file: str = ""
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    headers: dict[str, str] = field(default_factory=dict)
    proxy_url: str = ""
    drop_rate_limited_batches: bool = False
    # logpipe's own options
    encoding: Literal["protobuf", "json"] = "protobuf"
    compression: Literal["gzip", "none"] = "gzip"
    max_inflight_batches: int = 4
    drop_after_max_retries: bool = False
    shutdown_timeout: Duration = Duration(10.0)

    def validate(self, ctx: Ctx, path: str) -> None:
        if not re.match(r"https?://[^/\s]+", self.url):
            ctx.error(join(path, "url"), f"invalid URL {self.url!r}: expected http(s)://host[:port]/loki/api/v1/push")
        for name in self.external_labels:
            check_label_name(ctx, join(join(path, "external_labels"), name), name)
        if self.bearer_token and self.bearer_token_file:
            ctx.error(path, "set at most one of bearer_token and bearer_token_file")
        if self.basic_auth and (self.bearer_token or self.bearer_token_file):
            ctx.error(path, "basic_auth and bearer_token cannot both be set")
        if self.max_inflight_batches < 1:
            ctx.error(join(path, "max_inflight_batches"), "must be at least 1")


RELABEL_ACTIONS = (
    "replace", "keep", "drop", "keepequal", "dropequal", "hashmod", "labelmap", "labeldrop",
    "labelkeep", "lowercase", "uppercase",
)


@dataclass
class RelabelConfig:
    source_labels: list[str] = field(default_factory=list)
    separator: str = ";"
    regex: str = "(.*)"
    modulus: int = 0
    target_label: str = ""
    replacement: str = "$1"
    action: Literal[RELABEL_ACTIONS] = "replace"  # type: ignore[valid-type]

    def validate(self, ctx: Ctx, path: str) -> None:
        from logpipe.relabel import compile_anchored

        try:
            self.compiled = compile_anchored(self.regex)
        except ValueError as e:
            ctx.error(join(path, "regex"), str(e))
        for i, name in enumerate(self.source_labels):
            check_label_name(ctx, join(join(path, "source_labels"), i), name)
        needs_target = self.action in ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal")
        if needs_target and not self.target_label:
            ctx.error(path, f"relabel action {self.action!r} needs a target_label")
        if self.action == "hashmod" and self.modulus <= 0:
            ctx.error(join(path, "modulus"), "hashmod needs a modulus greater than 0")
        if self.action in ("lowercase", "uppercase", "keepequal", "dropequal", "hashmod") and self.target_label:
            check_label_name(ctx, join(path, "target_label"), self.target_label)


@dataclass
class JournalConfig:
    json: bool = False
    max_age: Duration = Duration(7 * 3600.0)
    path: str = ""
    matches: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    # logpipe's own: a batch goes to the pipeline when this many entries are read, when the
    # reader has caught up with the journal, or after batch_wait, whichever comes first.
    batch_size: int = 4096
    batch_wait: Duration = Duration(1.0)

    def validate(self, ctx: Ctx, path: str) -> None:
        for name in self.labels:
            check_label_name(ctx, join(join(path, "labels"), name), name)
        for m in self.matches.split():
            if m != "+" and "=" not in m:
                ctx.error(join(path, "matches"), f"journal match {m!r} must be FIELD=value (or + for OR)")
        if self.batch_size < 1:
            ctx.error(join(path, "batch_size"), "must be at least 1")


@dataclass
class StdinConfig:
    labels: dict[str, str] = field(default_factory=dict)

    def validate(self, ctx: Ctx, path: str) -> None:
        for name in self.labels:
            check_label_name(ctx, join(join(path, "labels"), name), name)


@dataclass
class StaticConfig:
    targets: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    def validate(self, ctx: Ctx, path: str) -> None:
        from logpipe.sources.file import check_glob

        for name in self.labels:
            check_label_name(ctx, join(join(path, "labels"), name), name)
        for name in ("__path__", "__path_exclude__"):
            if name in self.labels:
                problem = check_glob(self.labels[name])
                if problem:
                    ctx.error(join(join(path, "labels"), name), problem)


@dataclass
class ScrapeConfig:
    job_name: str
    journal: JournalConfig | None = None
    static_configs: list[StaticConfig] = field(default_factory=list)
    stdin: StdinConfig | None = None
    relabel_configs: list[RelabelConfig] = field(default_factory=list)
    pipeline_stages: list[Any] = field(default_factory=list)
    # How the files of static_configs (`__path__`) are read: Promtail's `encoding` (an IANA
    # name, e.g. UTF-16, ISO-8859-1; empty is UTF-8), Grafana Alloy's `tail_from_end` (a file
    # found at start with no saved position is read from its end), and logpipe's own
    # `partial_line_timeout`: a last line with no newline yet is sent once the file has not
    # grown for this long (0: wait for the newline however long it takes).
    encoding: str = ""
    tail_from_end: bool = False
    partial_line_timeout: Duration = Duration(10.0)

    def validate(self, ctx: Ctx, path: str) -> None:
        from logpipe.pipeline import decode_stages

        if self.job_name in ctx.job_names:
            ctx.error(join(path, "job_name"), f"duplicate job_name {self.job_name!r}")
        ctx.job_names.add(self.job_name)
        self.stages = decode_stages(self.pipeline_stages, ctx, join(path, "pipeline_stages"))
        if self.encoding:
            import codecs

            try:
                codecs.lookup(self.encoding)
            except LookupError:
                ctx.error(join(path, "encoding"), f"unknown encoding {self.encoding!r} "
                          "(use an IANA name such as UTF-8, UTF-16, UTF-16LE, ISO-8859-1, Windows-1252)")
        if self.partial_line_timeout < 0:
            ctx.error(join(path, "partial_line_timeout"), "must not be negative")

    def file_targets(self) -> list[StaticConfig]:
        """The static_configs that name files to tail (Promtail's `__path__` label)."""
        return [s for s in self.static_configs if s.labels.get("__path__")]

    def static_labels(self) -> dict[str, str]:
        """Labels every entry of this job starts with (before relabeling)."""
        out: dict[str, str] = {}
        for sc in self.static_configs:
            out.update(sc.labels)
        if self.stdin:
            out.update(self.stdin.labels)
        if self.journal:
            out.update(self.journal.labels)
        return out


@dataclass
class LimitsConfig:
    readline_rate_enabled: bool = False
    readline_rate: float = 10000.0
    readline_burst: int = 10000
    readline_rate_drop: bool = True
    max_streams: int = 0
    # 0 means no limit in Promtail; the file source still bounds a line it holds in memory,
    # at Loki's default of 256KiB (logpipe.sources.file.DEFAULT_MAX_LINE_SIZE).
    max_line_size: ByteSize = ByteSize(0)
    max_line_size_truncate: bool = False


@dataclass
class TargetConfig:
    sync_period: Duration = Duration(10.0)

    def validate(self, ctx: Ctx, path: str) -> None:
        if self.sync_period <= 0:
            ctx.error(join(path, "sync_period"), "must be greater than 0")


@dataclass
class FileWatchConfig:
    """How often a tailed file is polled for growth: from min_poll_frequency while it
    changes, backing off to max_poll_frequency while it is idle (Promtail's defaults)."""

    min_poll_frequency: Duration = Duration(0.25)
    max_poll_frequency: Duration = Duration(0.25)

    def validate(self, ctx: Ctx, path: str) -> None:
        if self.min_poll_frequency <= 0:
            ctx.error(join(path, "min_poll_frequency"), "must be greater than 0")
        if self.max_poll_frequency < self.min_poll_frequency:
            ctx.error(join(path, "max_poll_frequency"), "must not be less than min_poll_frequency")


@dataclass
class GlobalConfig:
    file_watch_config: FileWatchConfig = field(default_factory=FileWatchConfig)


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    positions: PositionsConfig = field(default_factory=PositionsConfig)
    clients: list[ClientConfig] = field(default_factory=list)
    client: ClientConfig | None = None
    scrape_configs: list[ScrapeConfig] = field(default_factory=list)
    limits_config: LimitsConfig = field(default_factory=LimitsConfig)
    target_config: TargetConfig = field(default_factory=TargetConfig)
    global_: GlobalConfig = yaml_field("global", default_factory=GlobalConfig)

    def validate(self, ctx: Ctx, path: str) -> None:
        if self.client is not None:  # Promtail's older single-client form
            self.clients = [self.client, *self.clients]

    def job(self, name: str | None) -> ScrapeConfig:
        from logpipe.errors import LogpipeError

        if not self.scrape_configs:
            raise LogpipeError("the config has no scrape_configs")
        if name is None:
            return self.scrape_configs[0]
        for sc in self.scrape_configs:
            if sc.job_name == name:
                return sc
        known = ", ".join(sc.job_name for sc in self.scrape_configs)
        raise LogpipeError(f"no scrape config with job_name {name!r} (have: {known})")
