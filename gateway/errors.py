"""The gateway's exception hierarchy.

Every error the gateway raises on purpose derives from `GatewayError`, so callers can catch
the family without catching programming errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One mistake in one configuration file, located as precisely as the input allows."""

    file: str
    message: str
    line: int | None = None
    tag: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.tag is not None:
            parts.append(f"tag {self.tag!r}")
        if self.field:
            parts.append(self.field)
        return f"{': '.join(parts)}: {self.message}"


class ConfigError(GatewayError):
    """A configuration that cannot be used. Carries every issue found, not just the first."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        if not self.issues:
            raise ValueError("ConfigError needs at least one issue")
        super().__init__(self._summary())

    def _summary(self) -> str:
        count = len(self.issues)
        head = "1 configuration error" if count == 1 else f"{count} configuration errors"
        return head + ":\n" + "\n".join(f"  {issue}" for issue in self.issues)
