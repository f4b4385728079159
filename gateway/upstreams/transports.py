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
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from .. import __version__
from .config import HttpUpstream, StdioUpstream, expand
from .guard import Listing, guarded
from .roots import roots_callback

CLIENT_INFO = types.Implementation(name="mcp-tag-gateway", version=__version__)
"""How the gateway introduces itself to upstreams."""


@asynccontextmanager
async def open_client(
    name: str,
    config: StdioUpstream | HttpUpstream,
    callbacks: dict[str, Any],
    listing: Listing | None = None,
) -> AsyncIterator[Client]:
    """A connected, initialized client; `callbacks` are the Client's handler arguments.
    The gateway keeps no response cache of its own upstreams: list_changed says when.
    What the upstream sends passes the guard (guard.py), which tells `listing` what it
    left out of tool listings. Roots are declared (and answered) only where configured
    (roots.py)."""
    listing = listing if listing is not None else Listing()
    callbacks = {**callbacks, **roots_callback(config)}
    if isinstance(config, StdioUpstream):
        env = {key: expand(value, name, f"env {key}") for key, value in config.env.items()}
        params = StdioServerParameters(
            command=config.command, args=list(config.args), env=env, cwd=config.cwd
        )
        async with Client(
            guarded(stdio_client(params), name, listing),
            cache=None,
            client_info=CLIENT_INFO,
            **callbacks,
        ) as client:
            yield client
        return
    headers = expanded_headers(name, config)
    if config.transport == "sse":
        async with Client(
            guarded(sse_client(config.url, headers=headers), name, listing),
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
            guarded(streamable_http_client(config.url, http_client=http), name, listing),
            cache=None,
            client_info=CLIENT_INFO,
            **callbacks,
        ) as client,
    ):
        yield client


def expanded_headers(name: str, config: HttpUpstream) -> dict[str, str]:
    return {key: expand(value, name, f"header {key}") for key, value in config.headers.items()}
