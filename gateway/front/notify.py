"""Telling connected clients that their lists changed, and only those whose lists did.

A client's view changes when the tag config reloads (its grants moved) or when an
upstream's offer changes (a tool came, went or was redefined). After either, every
connected client's view is computed again and compared with the one it was last shown;
a client is sent `notifications/tools/list_changed` (resources, prompts alike) only for
the lists that really differ. Two eras, two channels:
- handshake era (2025-11-25 and before): the session's standalone stream, for every
  session that completed its handshake;
- 2026-07-28: the client's open `subscriptions/listen` streams.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from mcp.server import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ToolsListChanged,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from ..principal import Principal
from .caller import credential
from .views import View, Views

logger = logging.getLogger("gateway.front")


@dataclass(slots=True)
class _Client:
    principal: Principal
    shown: View
    tell: Callable[[bool, bool, bool], Awaitable[None]]
    """Sends list_changed for (tools, resources, prompts)."""


class Audience:
    """The connected clients, and the fan-out of list_changed to them."""

    def __init__(self, views: Views) -> None:
        self._views = views
        self._clients: dict[int, _Client] = {}
        self._changed = anyio.Event()

    @property
    def connected(self) -> int:
        return len(self._clients)

    def changed(self, *_args: object) -> None:
        """Something a view depends on changed (a tag reload, a new catalog): recompute
        them soon. Safe to call from any listener in the event loop; calls coalesce."""
        self._changed.set()

    async def run(self) -> None:
        """Deliver list_changed after every change, until cancelled."""
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            await self._tell_all()

    async def _tell_all(self) -> None:
        for key, client in list(self._clients.items()):
            try:
                now = self._views.view(client.principal)
            except Exception:
                logger.exception("cannot compute the view of %s", client.principal)
                continue
            differs = now.differs(client.shown)
            client.shown = now
            if not any(differs):
                continue
            try:
                await client.tell(*differs)
            except Exception as exc:  # a client gone mid-send: forget it
                logger.debug("list_changed not delivered: %s", exc)
                self._clients.pop(key, None)

    async def middleware(
        self,
        ctx: ServerRequestContext[Any],
        call_next: Callable[[ServerRequestContext[Any]], Awaitable[Any]],
    ) -> Any:
        """Remembers each handshake-era session once it is initialized, until it closes."""
        if (
            ctx.method == "notifications/initialized"
            and ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
        ):
            self._watch_session(ctx.session)
        return await call_next(ctx)

    def _watch_session(self, session: ServerSession) -> None:
        # The SDK (2.3) gives no public handle on a session's lifetime; its connection's
        # exit stack is what closes with it (pinned by the `mcp<2.4` requirement).
        connection = session._connection
        key = id(connection)
        if key in self._clients:
            return
        principal = credential().principal

        async def tell(tools: bool, resources: bool, prompts: bool) -> None:
            if tools:
                await session.send_tool_list_changed()
            if resources:
                await session.send_resource_list_changed()
            if prompts:
                await session.send_prompt_list_changed()

        self._clients[key] = _Client(principal, self._views.view(principal), tell)
        connection.exit_stack.callback(self._clients.pop, key, None)

    async def listen(
        self, ctx: ServerRequestContext[Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        """`subscriptions/listen` (2026-07-28): one stream per call, fed with this
        caller's changes only."""
        principal = credential().principal
        bus = InMemorySubscriptionBus()

        async def tell(tools: bool, resources: bool, prompts: bool) -> None:
            if tools:
                await bus.publish(ToolsListChanged())
            if resources:
                await bus.publish(ResourcesListChanged())
            if prompts:
                await bus.publish(PromptsListChanged())

        key = id(bus)
        self._clients[key] = _Client(principal, self._views.view(principal), tell)
        try:
            return await ListenHandler(bus)(ctx, params)
        finally:
            self._clients.pop(key, None)
