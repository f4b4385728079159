"""What an upstream sends towards the caller while a call runs: progress, log messages,
and requests of its own (sampling, elicitation) that only the caller can answer.

Each call in flight has a `CallerLink`. An upstream's message is handed to the link of the
call it belongs to, found in one of two ways:
- the calling task's context (`current_link`): the SDK client runs its callbacks in the
  context of the request they answer for streamable HTTP, and for 2026-07-28 upstreams
  over any transport, so this is exact even with many calls in flight;
- otherwise (a handshake-era stdio or SSE upstream gives no way to tell) the link of the
  one call in flight, when exactly one is, or when all the calls in flight are one
  caller's (sessions.py keeps it so), the first of them that can take the message.
A message that fits neither is never guessed at: logs are logged here, and a request gets
an error answer, so nothing reaches a caller it does not concern.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import mcp_types as types
from mcp.client.session import ClientRequestContext
from mcp.shared.dispatcher import ProgressFnT
from pydantic import BaseModel

logger = logging.getLogger("gateway.upstreams")

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


@runtime_checkable
class Declaring(Protocol):
    """An asker that can say what its caller declared it may be asked (sampling, with
    tools or not; elicitation)."""

    def capabilities(self) -> types.ClientCapabilities | None: ...


@dataclass(frozen=True, slots=True)
class CallerLink:
    on_log: LogCallback | None = None
    asker: Asker | None = None
    owner: Hashable | None = None
    """Where the call's messages go (a client session, or a 2026-07-28 request): links of
    one owner may take each other's messages."""


current_link: ContextVar[CallerLink | None] = ContextVar("gateway_caller_link", default=None)

own_links: dict[str, CallerLink] = {}
"""Calls under way to the gateway's own (in-process) tools, by the id their request carries
(LINK_META): how such a tool, which acts as its caller, reaches that caller during the call
(run_session's questions go to the caller's asker, as an upstream's would). Process-local,
as the in-process upstream is."""


def link_for(
    in_flight: Sequence[CallerLink], takes: Callable[[CallerLink], bool] = lambda _link: True
) -> CallerLink | None:
    """The link an upstream message belongs to (see the module docstring), or None.
    `takes`: whether a link can take the message (when several of one caller's are in
    flight)."""
    link = current_link.get()
    if link is not None:
        return link
    if len(in_flight) == 1:
        return in_flight[0]
    owner = in_flight[0].owner if in_flight else None
    if owner is None or any(other.owner != owner for other in in_flight):
        return None
    return next((other for other in in_flight if takes(other)), None)


NO_CALLER = types.ErrorData(
    code=types.INVALID_REQUEST,
    message="the gateway cannot tell which caller this request is for; it was not forwarded",
)


def client_callbacks(
    upstream: str,
    links: list[CallerLink],
    on_message: Callable[[object], Awaitable[None]] | None,
) -> dict[str, Any]:
    """The SDK `Client`'s callbacks for a session of `upstream` whose calls in flight are
    `links`: each message goes to the call it belongs to (see the module docstring). A log
    that cannot be placed is logged here; a request gets an error answer. `on_message`
    takes the session's other notifications (None: dropped)."""

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        link = link_for(links, lambda link: link.on_log is not None)
        if link is not None and link.on_log is not None:
            await link.on_log(params)
            return
        logger.info("upstream %s [%s] %s", upstream, params.level, params.data)

    async def on_sampling(
        _context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> SamplingAnswer:
        link = link_for(links, lambda link: link.asker is not None)
        if link is None or link.asker is None:
            return NO_CALLER
        return await link.asker.create_message(params)

    async def on_elicitation(
        _context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> ElicitationAnswer:
        link = link_for(links, lambda link: link.asker is not None)
        if link is None or link.asker is None:
            return NO_CALLER
        return await link.asker.elicit(params)

    async def ignore(_message: object) -> None:
        pass

    return {
        "message_handler": on_message or ignore,
        "logging_callback": on_log,
        "sampling_callback": on_sampling,
        "elicitation_callback": on_elicitation,
    }


M = TypeVar("M", bound=BaseModel)


def unstamped(result: M) -> M:
    """An upstream's result without its serverInfo stamp: the caller deals with the
    gateway, which adds its own."""
    meta: Any = getattr(result, "meta", None)
    if not meta or types.SERVER_INFO_META_KEY not in meta:
        return result
    rest = {k: v for k, v in meta.items() if k != types.SERVER_INFO_META_KEY}
    return result.model_copy(update={"meta": rest or None})
