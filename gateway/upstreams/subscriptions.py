"""The resources callers subscribed to at one upstream, kept across reconnects.

Handshake-era upstreams take `resources/subscribe` and send `resources/updated`
notifications; 2026-07-28 upstreams announce updates on a `subscriptions/listen` stream
opened for the URI (the SDK client also hands them to the message handler, which is
where the connection picks every update up, whichever the era).
"""

from __future__ import annotations

import logging
import math
import warnings

import anyio
from anyio.abc import TaskGroup
from mcp import Client, MCPError
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from .sendable import sendable
from .status import describe

logger = logging.getLogger("gateway.upstreams")

LISTEN_ACK_TIMEOUT = 5.0
"""How long a resource's listen stream may take to be acknowledged."""


class UpstreamSubscriptions:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.uris: set[str] = set()
        self._client: Client | None = None
        self._tasks: TaskGroup | None = None
        self._streams: dict[str, anyio.CancelScope] = {}
        self._unfollowed: dict[str, str] = {}
        """URIs whose listen stream did not start or ended, and why."""

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(
            f"resource {uri} not followed ({why})" for uri, why in sorted(self._unfollowed.items())
        )

    async def attach(self, client: Client, tasks: TaskGroup) -> None:
        """A new session: subscribe it to everything wanted so far."""
        self._client, self._tasks = client, tasks
        for uri in sorted(self.uris):
            await self._start(uri)

    def detach(self) -> None:
        self._client = self._tasks = None
        self._streams.clear()  # the session's task group ends them
        self._unfollowed.clear()  # the next session tries again

    async def add(self, uri: str) -> None:
        sendable(f"subscription on upstream {self.upstream}", uri=uri)
        if uri not in self.uris:
            self.uris.add(uri)
            if self._client is not None:
                await self._start(uri)

    async def remove(self, uri: str) -> None:
        if uri in self.uris:
            self.uris.discard(uri)
            self._unfollowed.pop(uri, None)
            if self._client is not None:
                await self._stop(uri)

    def _handshake(self, client: Client) -> bool:
        return client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS

    async def _start(self, uri: str) -> None:
        client, tasks = self._client, self._tasks
        assert client is not None
        assert tasks is not None
        if not self._handshake(client):
            scope = anyio.CancelScope()
            self._streams[uri] = scope
            tasks.start_soon(self._listen, client, uri, scope)
            return
        try:
            with warnings.catch_warnings():  # deprecated only in the 2026 era
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.session.subscribe_resource(uri)
        except MCPError as exc:
            logger.warning("upstream %s: cannot subscribe to %s: %s", self.upstream, uri, exc)

    async def _stop(self, uri: str) -> None:
        client = self._client
        assert client is not None
        scope = self._streams.pop(uri, None)
        if scope is not None:
            scope.cancel()
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.session.unsubscribe_resource(uri)
        except MCPError as exc:
            logger.info("upstream %s: unsubscribing %s: %s", self.upstream, uri, exc)

    async def _listen(self, client: Client, uri: str, scope: anyio.CancelScope) -> None:
        # Bounded until acknowledged: a stream that never starts (one not framed as SSE
        # never does) is reported rather than waited for.
        wait = LISTEN_ACK_TIMEOUT
        with scope:
            try:
                with anyio.CancelScope(deadline=anyio.current_time() + wait) as ack:
                    async with client.listen(resource_subscriptions=[uri]) as events:
                        ack.deadline = math.inf
                        async for _ in events:
                            pass  # delivered through the message handler as well
                why = (
                    f"subscriptions/listen: not acknowledged within {wait:g} s"
                    if ack.cancelled_caught
                    else "subscriptions/listen: the upstream ended the stream"
                )
            except (MCPError, RuntimeError, TimeoutError) as exc:  # RuntimeError: SubscriptionLost
                why = f"subscriptions/listen: {describe(exc)}"
            logger.warning("upstream %s: cannot follow %s: %s", self.upstream, uri, why)
            self._unfollowed[uri] = why
