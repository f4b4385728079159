"""One pub/sub connection per Redis store, shared by all of its followers and subscribers.

Followers of a stream listen on a channel named after the stream's key (every append
publishes on it); `subscribe` listens on the session's notify channel. The hub subscribes a
channel when its first listener arrives and waits for Redis to confirm, so that nothing
published afterwards is missed; it unsubscribes when the last one leaves. When the
connection is lost, redis-py re-subscribes on reconnecting; listeners are told that
messages may have been missed (`on_missed`), so that followers read their streams again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from redis.backoff import ExponentialWithJitterBackoff

from ..errors import StateUnavailable

logger = logging.getLogger("gateway.state")

Guard = Callable[[Callable[[], Awaitable[None]]], Awaitable[None]]
"""Runs one Redis operation bounded and behind the store's breaker."""


@dataclass(eq=False)
class Listener:
    """One follower's or subscriber's interest in a channel."""

    on_message: Callable[[bytes], None]
    on_missed: Callable[[], None]
    """Messages may have been lost (the connection dropped), or the hub is closing."""


class Hub:
    def __init__(
        self,
        pubsub: Any,
        url: str,
        op_timeout: float,
        guard: Guard,
        down: tuple[type[Exception], ...],
    ) -> None:
        self._pubsub = pubsub
        self._url = url
        self._op_timeout = op_timeout
        self._guard = guard
        self._down = down
        self._listeners: dict[str, set[Listener]] = {}
        self._confirmed: dict[str, anyio.Event] = {}
        self._activity = anyio.Event()
        self._pending: set[str] = set()
        # One subscribe at a time: the pub/sub object makes its connection on first use,
        # and two first uses at once would make two, one of which nobody reads.
        self._lock = anyio.Lock()
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        self._activity.set()
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                listener.on_missed()
        with anyio.CancelScope(shield=True):
            await self._pubsub.aclose()

    @asynccontextmanager
    async def listening(self, channel: str, listener: Listener) -> AsyncIterator[None]:
        """Register `listener`; returns once Redis has confirmed the channel's subscription.
        Raises StateUnavailable when it cannot be subscribed."""
        if self._closed:
            raise StateUnavailable(self._url, "closed")
        listeners = self._listeners.setdefault(channel, set())
        listeners.add(listener)
        try:
            confirmed = self._confirmed.get(channel)
            if confirmed is None:
                confirmed = self._confirmed[channel] = anyio.Event()
                self._pending.add(channel)
                await self._subscribe_pending()
                self._activity.set()
            with anyio.move_on_after(max(self._op_timeout, 1.0)):
                await confirmed.wait()
            if not confirmed.is_set():
                raise StateUnavailable(self._url, f"no confirmation of the subscription {channel}")
            yield
        finally:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[channel]
                self._confirmed.pop(channel, None)
                self._pending.discard(channel)
                if not self._closed:
                    await self._unsubscribe(channel)

    async def _subscribe_pending(self) -> None:
        """Subscribe every channel waiting for it, in one SUBSCRIBE: when many listeners
        arrive at once (clients reconnecting after a restart), the first to get the lock
        subscribes for all, and the bound on the operation covers the command only, not
        the wait for the lock."""
        async with self._lock:
            channels, self._pending = self._pending, set()
            if channels:
                await self._guard(lambda: self._pubsub.subscribe(*sorted(channels)))

    async def _unsubscribe(self, channel: str) -> None:
        # Best effort: the server forgets a dropped connection's channels by itself.
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(self._op_timeout),
            contextlib.suppress(*self._down),
        ):
            async with self._lock:
                await self._pubsub.unsubscribe(channel)

    async def run(self) -> None:
        """The connection's reader: confirms subscriptions and dispatches messages, until
        the hub closes (or the task is cancelled)."""
        backoff = ExponentialWithJitterBackoff(base=0.05, cap=2.0)
        failures = 0
        while not self._closed:
            if not self._listeners:
                self._activity = anyio.Event()
                await self._activity.wait()
                continue
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except self._down as exc:
                failures += 1
                logger.warning("state store %s: pub/sub connection lost: %s", self._url, exc)
                self._missed(list(self._listeners))
                await anyio.sleep(backoff.compute(failures))
                continue
            failures = 0
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        kind = kind.decode() if isinstance(kind, bytes) else kind
        channel = message["channel"]
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        if kind == "message":
            for listener in list(self._listeners.get(name, ())):
                listener.on_message(message["data"])
        elif kind == "subscribe":
            confirmed = self._confirmed.get(name)
            if confirmed is not None and not confirmed.is_set():
                confirmed.set()
            else:
                # A re-subscription after a reconnect: whatever was published while the
                # connection was down is lost to this channel's listeners.
                self._missed([name])

    def _missed(self, channels: list[str]) -> None:
        for name in channels:
            for listener in list(self._listeners.get(name, ())):
                listener.on_missed()
