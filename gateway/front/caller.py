"""The caller of the MCP message being handled.

Set by the transport (the `/mcp` endpoint per HTTP request, `gateway stdio` once for the
process) before the SDK sees the message; the SDK carries the sender's context variables
into its handler tasks, so every handler reads who it serves from here.
"""

from __future__ import annotations

from contextvars import ContextVar

from ..auth import Credential
from ..sdk_internals import connection_of

__all__ = ["NoCaller", "connection_of", "credential", "current_credential"]

current_credential: ContextVar[Credential] = ContextVar("gateway_caller")


class NoCaller(RuntimeError):
    """A handler ran without a transport having set the caller: a wiring bug, never a
    caller's fault, and never answered with someone else's view."""


def credential() -> Credential:
    try:
        return current_credential.get()
    except LookupError:
        raise NoCaller("no authenticated caller for this MCP message") from None
