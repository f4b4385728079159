"""Opening an SDK `Client` to an upstream over its configured transport: a stdio child,
streamable HTTP or legacy HTTP+SSE. `${VAR}` references in env and header values are
expanded here, at connect time (MissingVariable names a missing one, never a value)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from .. import __version__
from .config import HttpUpstream, StdioUpstream, expand
from .roots import roots_callback

CLIENT_INFO = types.Implementation(name="mcp-tag-gateway", version=__version__)
"""How the gateway introduces itself to upstreams."""


@asynccontextmanager
async def open_client(
    name: str, config: StdioUpstream | HttpUpstream, callbacks: dict[str, Any]
) -> AsyncIterator[Client]:
    """A connected, initialized client; `callbacks` are the Client's handler arguments.
    The gateway keeps no response cache of its own upstreams: list_changed says when.
    Roots are declared (and answered) only where configured (roots.py)."""
    callbacks = {**callbacks, **roots_callback(config)}
    if isinstance(config, StdioUpstream):
        env = {key: expand(value, name, f"env {key}") for key, value in config.env.items()}
        params = StdioServerParameters(
            command=config.command, args=list(config.args), env=env, cwd=config.cwd
        )
        async with Client(params, cache=None, client_info=CLIENT_INFO, **callbacks) as client:
            yield client
        return
    headers = expanded_headers(name, config)
    if config.transport == "sse":
        async with Client(
            sse_client(config.url, headers=headers),
            cache=None,
            client_info=CLIENT_INFO,
            **callbacks,
        ) as client:
            yield client
        return
    # No read timeout: every request has the connection's own cap (call_timeout).
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=None)) as http,
        Client(
            streamable_http_client(config.url, http_client=http),
            cache=None,
            client_info=CLIENT_INFO,
            **callbacks,
        ) as client,
    ):
        yield client


def expanded_headers(name: str, config: HttpUpstream) -> dict[str, str]:
    return {key: expand(value, name, f"header {key}") for key, value in config.headers.items()}
