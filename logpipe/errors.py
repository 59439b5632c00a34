"""One exception hierarchy: every error a user can cause is a LogpipeError."""
from __future__ import annotations

from dataclasses import dataclass


class LogpipeError(Exception):
    """Base of every error logpipe reports to a user (one line, no traceback)."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: where it is and what is wrong."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(LogpipeError):
    """A config that cannot run; carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class SourceError(LogpipeError):
    """A source cannot read (missing directory, no permission, unreadable file)."""


class SinkError(LogpipeError):
    """A sink cannot deliver and cannot recover by retrying."""
