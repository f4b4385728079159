"""A session per caller, for an upstream that cannot say whose its messages are.

A handshake-era upstream over stdio or legacy SSE sends log messages, sampling and
elicitation requests on its one session with nothing that names the call they belong to.
The gateway places them by the call in flight (relay.py); with calls of two callers in
flight at once it cannot, and refuses rather than guess. So calls of different callers
are never in flight together on one such session: the connection's own session is lent
to one caller at a time, and a caller who finds it lent out gets a session of its own
(for stdio, a process of its own), opened on demand, lent to it alone, and closed after
`IDLE` seconds unused. At most `limit` such sessions are open per upstream; beyond that, a
call waits for one to be free. A caller here is an owner (relay.CallerLink.owner): a client
session of the gateway, or a 2026-07-28 request; calls of one owner share a session.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from mcp import Client

from .relay import CallerLink

logger = logging.getLogger("gateway.upstreams")

IDLE = 60.0
"""Seconds a caller's own session stays open unused."""

Opener = Callable[[list[CallerLink]], AbstractAsyncContextManager[Client]]
"""Opens a session whose callbacks place messages among the given calls in flight."""


@dataclass(eq=False)
class Session:
    client: Client
    links: list[CallerLink]
    """The calls in flight on this session (its callbacks read them)."""
    owner: Hashable | None = None
    calls: int = 0
    closing: bool = False
    wake: anyio.Event = field(default_factory=anyio.Event)
    """Set when the owner changes or the session is to close."""


class SessionFailed(Exception):
    """A caller's own session could not be opened."""


class CallerSessions:
    def __init__(
        self,
        upstream: str,
        shared: Client,
        shared_links: list[CallerLink],
        opener: Opener,
        tasks: TaskGroup,
        limit: int,
    ) -> None:
        self.upstream = upstream
        self._shared = Session(shared, shared_links)
        self._own: list[Session] = []
        self._open = opener
        self._tasks = tasks
        self._limit = limit
        self._freed = anyio.Event()
        self._opening_for: dict[Hashable, anyio.Event] = {}

    @property
    def opened(self) -> int:
        """Sessions open besides the connection's own."""
        return len(self._own)

    @asynccontextmanager
    async def lease(
        self, owner: Hashable, deadline: float
    ) -> AsyncIterator[tuple[Client, list[CallerLink]]]:
        """A session on which only `owner`'s calls are in flight, for one call. Raises
        SessionFailed when none can be had by `deadline` (anyio time)."""
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as waited:
            session = await self._take(owner)
        if waited.cancelled_caught:
            raise SessionFailed(f"all {self._limit + 1} sessions stayed busy")
        session.calls += 1
        try:
            yield session.client, session.links
        finally:
            session.calls -= 1
            if session.calls == 0:
                session.owner = None
                session.wake.set()
                self._freed.set()

    async def _take(self, owner: Hashable) -> Session:
        while True:
            opening = self._opening_for.get(owner)
            if opening is not None:  # this caller's own session is on its way
                await opening.wait()
                continue
            everyone = [self._shared, *(s for s in self._own if not s.closing)]
            for session in everyone:
                if session.owner == owner:
                    return session
            for session in everyone:
                if session.owner is None:
                    session.owner = owner
                    session.wake.set()
                    return session
            if len(self._own) + len(self._opening_for) < self._limit:
                return await self._open_for(owner)
            freed = self._freed = anyio.Event()
            await freed.wait()

    async def _open_for(self, owner: Hashable) -> Session:
        opened = self._opening_for[owner] = anyio.Event()
        try:
            session: Session = await self._tasks.start(self._serve, owner)
        except Exception as exc:
            raise SessionFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            del self._opening_for[owner]
            opened.set()
        return session

    async def _serve(self, owner: Hashable, *, task_status: TaskStatus[Session]) -> None:
        """One caller's own session: open until unused for IDLE seconds or closed."""
        links: list[CallerLink] = []
        try:
            async with self._open(links) as client:
                session = Session(client, links, owner)
                self._own.append(session)
                logger.info(
                    "upstream %s: opened a session for another caller (%d open)",
                    self.upstream,
                    len(self._own),
                )
                task_status.started(session)
                await self._until_idle(session)
        finally:
            self._own[:] = [s for s in self._own if s.links is not links]
            self._freed.set()

    async def _until_idle(self, session: Session) -> None:
        while not session.closing:
            session.wake = anyio.Event()
            with anyio.move_on_after(IDLE if session.owner is None else math.inf) as idle:
                await session.wake.wait()
            if idle.cancelled_caught and session.owner is None:
                session.closing = True  # no lease from here on
                return

    def close(self, client: Any) -> None:
        """Close the opened session of `client` (its connection was lost)."""
        for session in self._own:
            if session.client is client:
                session.closing = True
                session.wake.set()
