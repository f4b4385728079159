"""A session per caller, for an upstream that cannot say whose its messages are.

A handshake-era upstream over stdio or legacy SSE sends log messages, sampling and
elicitation requests on its one session with nothing that names the call they belong to.
The gateway places them by the call in flight (relay.py); with calls of two callers in
flight at once it cannot, and refuses rather than guess. So calls of different callers
are never in flight together on one such session: the connection's own session is lent
to one caller at a time (and kept for it a moment after its last call: HOLD), and a caller
who finds it lent out gets a session of its own (for stdio, a process of its own), opened
on demand, lent to it alone, and closed after `IDLE` seconds unused. At most `limit` such
sessions are open per upstream; beyond that, a call waits for one to be free. A caller here
is an owner (relay.CallerLink.owner): a client session of the gateway, or a 2026-07-28
request; calls of one owner share a session. One user may have many owners (a 2026-07-28
client's every call is one), so the sessions that one user's calls hold at once are
capped too (`per_user`): its further calls wait for one of its own rather than take the
sessions other users need.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup, TaskStatus
from mcp import Client

from .relay import CallerLink, current_link

logger = logging.getLogger("gateway.upstreams")

IDLE = 60.0
"""Seconds a caller's own session stays open unused."""
HOLD = 1.0
"""Seconds a session stays its owner's after a call that ended: what the upstream sent
during the call may still be in the SDK client's hands, and must not reach the next."""
HOLD_AFTER_ABANDON = 10.0
"""The same after a call that did not end (cancelled, timed out, connection lost): its
handler may go on talking until it notices."""

Opener = Callable[[list[CallerLink]], AbstractAsyncContextManager[Client]]
"""Opens a session whose callbacks place messages among the given calls in flight."""


@dataclass(eq=False)
class Session:
    client: Client
    links: list[CallerLink]
    """The calls in flight on this session (its callbacks read them)."""
    owner: Hashable | None = None
    user: Hashable | None = None
    """Whose calls the owner makes (see CallerSessions.lease)."""
    calls: int = 0
    held_until: float = 0.0
    """Until when (anyio time) the owner keeps it after its last call: see HOLD."""
    closing: bool = False
    wake: anyio.Event = field(default_factory=anyio.Event)
    """Set when its calls change or it is to close."""

    def free_for(self, owner: Hashable, now: float) -> bool:
        if self.closing:
            return False
        if self.owner == owner:
            return True
        return self.calls == 0 and (self.owner is None or now >= self.held_until)

    def held_by(self, user: Hashable, now: float) -> bool:
        """Whether `user`'s calls hold it: a call in flight, or its hold not run out."""
        return self.user == user and (self.calls > 0 or now < self.held_until)


class SessionFailed(Exception):
    """No session could be had for a caller: none free in time, or a new one failed."""


class CallerSessions:
    def __init__(
        self,
        upstream: str,
        shared: Client,
        shared_links: list[CallerLink],
        opener: Opener,
        tasks: TaskGroup,
        limit: int,
        per_user: int | None = None,
    ) -> None:
        """`limit`: sessions opened besides `shared`; `per_user`: sessions (`shared`
        counted) that one user's calls may hold at once (no cap when None)."""
        self.upstream = upstream
        self._shared = Session(shared, shared_links)
        self._own: list[Session] = []
        self._open = opener
        self._tasks = tasks
        self._limit = limit
        self._per_user = per_user
        self._freed = anyio.Event()
        self._opening_for: dict[Hashable, tuple[anyio.Event, Hashable | None]] = {}
        """Owners whose session is being opened: when it is ready, and for whom."""

    @property
    def opened(self) -> int:
        """Sessions open besides the connection's own."""
        return len(self._own)

    @asynccontextmanager
    async def lease(
        self, owner: Hashable, deadline: float, user: Hashable | None = None
    ) -> AsyncIterator[tuple[Client, list[CallerLink]]]:
        """A session on which only `owner`'s calls are in flight, for one call. `user`:
        whose calls the owner makes (none: not capped per user). Raises SessionFailed
        when none can be had by `deadline` (anyio time)."""
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as waited:
            session = await self._take(owner, user)
        if waited.cancelled_caught:
            if self._at_cap(user, anyio.current_time()):
                raise SessionFailed(
                    f"the {self._per_user} sessions that one user's calls may hold stayed busy"
                )
            raise SessionFailed(f"all {self._limit + 1} sessions stayed busy")
        session.calls += 1
        ended = False
        try:
            yield session.client, session.links
            ended = True
        finally:
            session.calls -= 1
            if session.calls == 0:
                # What the upstream sent for this call may still be on its way: the
                # session stays this owner's for a while, longer after a call that did
                # not end (cancelled, timed out, lost), whose handler may still be talking.
                hold = HOLD if ended else HOLD_AFTER_ABANDON
                session.held_until = anyio.current_time() + hold
                session.wake.set()
                self._freed.set()

    def _at_cap(self, user: Hashable | None, now: float) -> bool:
        """Whether `user`'s calls hold all the sessions they may."""
        if user is None or self._per_user is None:
            return False
        holding = sum(s.held_by(user, now) for s in (self._shared, *self._own))
        holding += sum(who == user for _, who in self._opening_for.values())
        return holding >= self._per_user

    async def _take(self, owner: Hashable, user: Hashable | None) -> Session:
        while True:
            opening = self._opening_for.get(owner)
            if opening is not None:  # this caller's own session is on its way
                await opening[0].wait()
                continue
            now = anyio.current_time()
            everyone = [self._shared, *self._own]
            mine = next((s for s in everyone if s.owner == owner and not s.closing), None)
            # A session of this owner's is no new one for its user.
            at_cap = mine is None and self._at_cap(user, now)
            free = mine
            if free is None and not at_cap:
                free = next((s for s in everyone if s.free_for(owner, now)), None)
            if free is not None:
                free.owner = owner
                free.user = user
                free.wake.set()
                return free
            if not at_cap and len(self._own) + len(self._opening_for) < self._limit:
                return await self._open_for(owner, user)
            # Wait for a call to end, or for a hold to run out.
            if self._freed.is_set():
                self._freed = anyio.Event()
            held = [s.held_until for s in everyone if s.calls == 0 and s.held_until > now]
            with anyio.move_on_after(min(held) - now if held else math.inf):
                await self._freed.wait()

    async def _open_for(self, owner: Hashable, user: Hashable | None) -> Session:
        opened = anyio.Event()
        self._opening_for[owner] = (opened, user)
        try:
            session: Session = await self._tasks.start(self._serve, owner, user)
        except Exception as exc:
            raise SessionFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            del self._opening_for[owner]
            opened.set()
        return session

    async def _serve(
        self, owner: Hashable, user: Hashable | None, *, task_status: TaskStatus[Session]
    ) -> None:
        """One caller's own session: open until unused for IDLE seconds or closed. Its
        failures end it alone, never the connection whose task group runs it."""
        links: list[CallerLink] = []
        started = False
        # This task began in the context of the call that opened it: the SDK client's
        # tasks, started here, must not take that call for the owner of every message.
        current_link.set(None)
        try:
            async with self._open(links) as client:
                session = Session(client, links, owner, user)
                self._own.append(session)
                logger.info(
                    "upstream %s: opened a session for another caller (%d open)",
                    self.upstream,
                    len(self._own),
                )
                task_status.started(session)
                started = True
                await self._until_idle(session)
        except Exception as exc:
            if not started:
                raise  # to _open_for, which tells the caller
            logger.warning("upstream %s: a caller's session failed: %r", self.upstream, exc)
        finally:
            self._own[:] = [s for s in self._own if s.links is not links]
            self._freed.set()

    async def _until_idle(self, session: Session) -> None:
        while not session.closing:
            session.wake = anyio.Event()
            with anyio.move_on_after(IDLE if session.calls == 0 else math.inf) as idle:
                await session.wake.wait()
            if idle.cancelled_caught and session.calls == 0:
                session.closing = True  # no lease from here on
                return

    def close(self, client: Client) -> None:
        """Close the opened session of `client` (its connection was lost)."""
        for session in self._own:
            if session.client is client:
                session.closing = True
                session.wake.set()
