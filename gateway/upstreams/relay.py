"""What an upstream sends towards the caller while a call runs: progress, log messages,
and requests of its own (sampling, elicitation) that only the caller can answer.

Each call in flight has a `CallerLink`. An upstream's message is handed to the link of the
call it belongs to, found in one of two ways:
- the calling task's context (`current_link`): the SDK client runs its callbacks in the
  context of the request they answer for streamable HTTP, and for 2026-07-28 upstreams
  over any transport, so this is exact even with many calls in flight;
- otherwise (a handshake-era stdio or SSE upstream gives no way to tell) the link of the
  one call in flight, when exactly one is.
A message that fits neither is never guessed at: logs are logged here, and a request gets
an error answer, so nothing reaches a caller it does not concern.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import mcp_types as types
from mcp.shared.dispatcher import ProgressFnT

ProgressCallback = ProgressFnT
"""`async (progress, total, message)`, as the upstream reported them."""
LogCallback = Callable[[types.LoggingMessageNotificationParams], Awaitable[None]]

SamplingAnswer = types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData
ElicitationAnswer = types.ElicitResult | types.ErrorData


class Asker(Protocol):
    """Puts an upstream's request to the caller, and returns the caller's answer (or an
    error the upstream will see)."""

    async def create_message(self, params: types.CreateMessageRequestParams) -> SamplingAnswer: ...

    async def elicit(self, params: types.ElicitRequestParams) -> ElicitationAnswer: ...


@dataclass(frozen=True, slots=True)
class CallerLink:
    on_log: LogCallback | None = None
    asker: Asker | None = None


current_link: ContextVar[CallerLink | None] = ContextVar("gateway_caller_link", default=None)


def link_for(in_flight: Sequence[CallerLink]) -> CallerLink | None:
    """The link an upstream message belongs to (see the module docstring), or None."""
    link = current_link.get()
    if link is not None:
        return link
    return in_flight[0] if len(in_flight) == 1 else None


NO_CALLER = types.ErrorData(
    code=types.INVALID_REQUEST,
    message="the gateway cannot tell which caller this request is for; it was not forwarded",
)
