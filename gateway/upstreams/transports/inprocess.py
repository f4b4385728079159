"""An upstream that is an MCP server object in the gateway's own process (the gateway's
own tools, own_tools.py). Its messages cross memory streams as JSON-RPC messages, so the
guard sees them as it sees any upstream's, and the SDK client on this side is the same as
for a remote upstream: the server is listed, checked and called like any other."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.client import Transport
from mcp.server import Server
from mcp.shared.memory import MessageStream, create_client_server_memory_streams

from ..config import InProcessUpstream
from .base import UpstreamTransport


class InProcessTransport(UpstreamTransport):
    config: InProcessUpstream

    def __init__(self, name: str, config: InProcessUpstream) -> None:
        super().__init__(name, config)

    @asynccontextmanager
    async def streams(self) -> AsyncIterator[Transport]:
        yield _served(self.config.server)


@asynccontextmanager
async def _served(server: Server[Any]) -> AsyncIterator[MessageStream]:
    """The client's ends of memory streams whose other ends `server` serves, in a task
    that ends with them."""
    async with (
        create_client_server_memory_streams() as (client_streams, (read, write)),
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(server.run, read, write, server.create_initialization_options())
        try:
            yield client_streams
        finally:
            tasks.cancel_scope.cancel()
