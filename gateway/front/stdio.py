"""`gateway stdio`: the gateway as an MCP server on standard input and output, for desktop
clients that launch their servers as subprocesses.

One process serves one caller, fixed at start: the owner of an API key (checked as /mcp
would check it) or, for a local single-user setup, a user and org named on the command
line (only in a development config, `auth.dev: true`: no credential vouches for them).
Everything else is as over HTTP: the same views, the same checked calls, the same
audit log. Logs go to standard error; standard output carries the protocol only.
"""

from __future__ import annotations

from mcp.server.stdio import stdio_server

from .. import __version__, sdk_internals
from ..auth import Credential
from ..runtime import Runtime
from .caller import current_credential
from .server import Front


async def serve_stdio(runtime: Runtime, caller: Credential) -> None:
    """Serve until the client closes standard input."""
    sdk_internals.check()  # before anything starts: a changed SDK is refused in one message
    front = Front(runtime, __version__)
    current_credential.set(caller)  # the SDK's tasks inherit it
    async with runtime.running(), front.running(), stdio_server() as (read, write):
        server = front.server
        await server.run(read, write, server.create_initialization_options())
