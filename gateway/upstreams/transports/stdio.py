"""An upstream that is a child process speaking MCP on its stdin and stdout."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

from mcp import StdioServerParameters
from mcp.client import Transport
from mcp.client.stdio import stdio_client

from ..config import StdioUpstream, expand
from .base import UpstreamTransport


class StdioTransport(UpstreamTransport):
    starts_process: ClassVar[bool] = True
    config: StdioUpstream

    def __init__(self, name: str, config: StdioUpstream) -> None:
        super().__init__(name, config)

    @asynccontextmanager
    async def streams(self) -> AsyncIterator[Transport]:
        config = self.config
        env = {key: expand(value, self.name, f"env {key}") for key, value in config.env.items()}
        params = StdioServerParameters(
            command=config.command, args=list(config.args), env=env, cwd=config.cwd
        )
        yield stdio_client(params)
