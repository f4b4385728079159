"""Upstreams over HTTP: streamable HTTP, and the legacy HTTP+SSE transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import httpx2
import mcp_types as types
from mcp.client import Transport
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from ..config import HttpUpstream, expand
from ..exchange import CAPABILITIES, Exchange
from .base import CLIENT_INFO, UpstreamTransport


def expanded_headers(name: str, config: HttpUpstream) -> dict[str, str]:
    return {key: expand(value, name, f"header {key}") for key, value in config.headers.items()}


class SseTransport(UpstreamTransport):
    config: HttpUpstream

    def __init__(self, name: str, config: HttpUpstream) -> None:
        super().__init__(name, config)

    @asynccontextmanager
    async def streams(self) -> AsyncIterator[Transport]:
        yield sse_client(self.config.url, headers=expanded_headers(self.name, self.config))


class StreamableHttpTransport(UpstreamTransport):
    tells_calls_apart: ClassVar[bool] = True
    config: HttpUpstream

    def __init__(self, name: str, config: HttpUpstream) -> None:
        super().__init__(name, config)

    @asynccontextmanager
    async def streams(self) -> AsyncIterator[Transport]:
        headers = expanded_headers(self.name, self.config)
        # No read timeout: every request has the connection's own cap (call_timeout).
        async with httpx2.AsyncClient(
            headers=headers, timeout=httpx2.Timeout(30, read=None)
        ) as http:
            yield streamable_http_client(self.config.url, http_client=http)

    def exchange(self, protocol_version: str | None) -> Exchange | None:
        """An Exchange once the upstream speaks 2026-07-28 (or later); a handshake-era one
        keeps its SDK session for calls."""
        if protocol_version is None or protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            return None
        config = self.config
        return Exchange(
            self.name,
            config.url,
            expanded_headers(self.name, config),
            protocol_version,
            CLIENT_INFO,
            # As the SDK client declares them: roots only where configured (roots.py).
            CAPABILITIES.model_copy(update={"roots": types.RootsCapability(list_changed=True)})
            if config.roots
            else CAPABILITIES,
        )
