"""Host and Origin allow-lists, in the form gateway.yaml gives /mcp's (`server.allowed_hosts`,
`server.allowed_origins`): a value exactly, or `name:*` for the name on any port. The
session API checks the Host of every request as /mcp does, so that a page on a name that
resolves to the gateway (DNS rebinding) cannot reach it through a browser."""

from __future__ import annotations

from collections.abc import Iterable


def listed(value: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if value == pattern:
            return True
        if pattern.endswith(":*") and value.startswith(pattern[:-2] + ":"):
            port = value[len(pattern) - 1 :]
            if port.isascii() and port.isdigit() and len(port) <= 5:  # a port, nothing else
                return True
    return False
