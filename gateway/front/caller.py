"""The caller of the MCP message being handled.

Set by the transport (the `/mcp` endpoint per HTTP request, `gateway stdio` once for the
process) before the SDK sees the message; the SDK carries the sender's context variables
into its handler tasks, so every handler reads who it serves from here.
"""

from __future__ import annotations

from contextvars import ContextVar

from mcp.server.connection import Connection
from mcp.server.session import ServerSession

from ..auth import Credential

current_credential: ContextVar[Credential] = ContextVar("gateway_caller")


class NoCaller(RuntimeError):
    """A handler ran without a transport having set the caller: a wiring bug, never a
    caller's fault, and never answered with someone else's view."""


def connection_of(session: ServerSession) -> Connection:
    """The connection a session (or a request's session) belongs to: its per-connection
    state and its exit stack, which closes with it. The SDK (2.3) has no public handle on
    it; this is the one place that reaches in (pinned by the `mcp<2.4` requirement)."""
    return session._connection


def credential() -> Credential:
    try:
        return current_credential.get()
    except LookupError:
        raise NoCaller("no authenticated caller for this MCP message") from None
