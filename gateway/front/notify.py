"""Telling connected clients that their lists changed, and only those whose lists did.

A client's view changes when the tag config reloads (its grants moved) or when an
upstream's offer changes (a tool came, went or was redefined). After either, every
connected client's view is computed again and compared with the one it was last shown;
a client is sent `notifications/tools/list_changed` (resources, prompts alike) only for
the lists that really differ. Two eras, two channels:
- handshake era (2025-11-25 and before): the session's standalone stream, for every
  session that completed its handshake;
- 2026-07-28: the client's open `subscriptions/listen` streams.

Resource subscriptions work the same way: a client follows a URI it may read (by
`resources/subscribe`, or a listen stream's `resource_subscriptions`), the gateway follows
it at the upstream once however many clients do, and each upstream `resources/updated`
is told to the clients following that URI.
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
    ResourceUpdated,
    ToolsListChanged,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from ..errors import UpstreamError
from ..principal import Principal
from ..upstreams.pool import Pool
from .caller import connection_of, credential
from .views import View, Views

logger = logging.getLogger("gateway.front")


@dataclass(slots=True)
class _Client:
    principal: Principal
    shown: View
    tell: Callable[[bool, bool, bool], Awaitable[None]]
    """Sends list_changed for (tools, resources, prompts)."""


Tell = Callable[[str], Awaitable[None]]


class ResourceFollowers:
    """Which clients follow which resource URIs; updates from upstreams are told to them."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._followers: dict[str, dict[int, Tell]] = {}
        self._updated: list[str] = []
        self._orphaned: set[str] = set()
        self._wake = anyio.Event()
        pool.on_resource_updated(self.updated)

    async def follow(self, client: int, uri: str, tell: Tell) -> None:
        """Raises UpstreamError when no upstream offers `uri`."""
        followers = self._followers.setdefault(uri, {})
        first = not followers
        followers[client] = tell
        if first:
            try:
                await self._pool.subscribe_resource(uri)
            except UpstreamError:
                del self._followers[uri]
                raise

    async def unfollow(self, client: int, uri: str) -> None:
        followers = self._followers.get(uri, {})
        if followers.pop(client, None) is not None and not followers:
            del self._followers[uri]
            await self._pool.unsubscribe_resource(uri)

    def forget(self, client: int) -> None:
        """A client went away: drop what it followed (upstreams are told later, in run)."""
        for uri, followers in list(self._followers.items()):
            if followers.pop(client, None) is not None and not followers:
                del self._followers[uri]
                self._orphaned.add(uri)
        self._wake.set()

    def updated(self, uri: str) -> None:
        if uri in self._followers:
            self._updated.append(uri)
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            updated, self._updated = self._updated, []
            for uri in dict.fromkeys(updated):
                for client, tell in list(self._followers.get(uri, {}).items()):
                    try:
                        await tell(uri)
                    except Exception as exc:  # a client gone mid-send
                        logger.debug("resource update not delivered: %s", exc)
                        self.forget(client)
            orphaned, self._orphaned = self._orphaned, set()
            for uri in orphaned:
                if uri not in self._followers:
                    await self._pool.unsubscribe_resource(uri)


class Audience:
    """The connected clients, and the fan-out of list_changed to them."""

    def __init__(self, views: Views, followers: ResourceFollowers) -> None:
        self._views = views
        self.followers = followers
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
        """Deliver list_changed and resource updates, until cancelled."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.followers.run)
            await self._run()

    async def _run(self) -> None:
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
        connection = connection_of(session)
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
        view = self._views.view(principal)
        self._clients[key] = _Client(principal, view, tell)

        async def updated(uri: str) -> None:
            await bus.publish(ResourceUpdated(uri=uri))

        followed = []
        try:
            for uri in params.notifications.resource_subscriptions or ():
                if view.shows_resource(uri):  # the handler only relays what was asked for
                    await self.followers.follow(key, uri, updated)
                    followed.append(uri)
            return await ListenHandler(bus)(ctx, params)
        finally:
            self._clients.pop(key, None)
            for uri in followed:
                await self.followers.unfollow(key, uri)
