"""A caller's request to stop a session, wherever it runs.

The request is kept in the store (StateStore.request_cancel), so a run that starts after
it (a resume, an answer) reads it first thing. A run under way is registered here
(`running`) for as long as it runs: a cancel made on this replica stops it at once
(`stop`), and one made on another replica reaches it through one pub/sub channel that
every replica follows (`watch`), not a subscription per run. Immediate cancels the run's
scope, which records the session as canceled; after_step lets what runs now finish
(Session.stop), in the turn loop and between a flow's steps.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio

from ..state.base import StateStore
from .session import Session

logger = logging.getLogger("gateway.engine")

CANCELS: Final = "_cancels"
"""The channel (a session's, by name) where a cancel is told to every replica."""


class Cancels:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._running: dict[str, tuple[Session, anyio.CancelScope]] = {}
        """The runs under way on this replica, by session: what a cancel stops."""

    @asynccontextmanager
    async def running(self, session: Session) -> AsyncIterator[None]:
        """Run the body as a run of `session` that a cancel can stop (the module
        docstring); a cancelled body comes out as the end of the block."""
        with anyio.CancelScope() as scope:
            self._running[session.id] = (session, scope)
            try:
                # Read once registered: a request standing from before (made while the
                # session waited, or while its engine was gone) stops it first thing, and
                # one made since is told to this run.
                standing = await self.store.cancel_request(session.id)
                if standing is not None:
                    session.stop = standing
                yield
            finally:
                if self._running.get(session.id, (None,))[0] is session:
                    del self._running[session.id]

    async def request(self, session_id: str, mode: str) -> None:
        """Keep the request, and tell it to the run under way, here or elsewhere."""
        await self.store.request_cancel(session_id, mode)
        if not self.stop(session_id, mode):  # another replica's, maybe
            await self.store.pub_event(CANCELS, {"session": session_id, "mode": mode})

    def stop(self, session_id: str, mode: str) -> bool:
        """Stop the run of `session_id` if this replica has it under way; whether it had."""
        running = self._running.get(session_id)
        if running is None:
            return False
        session, scope = running
        logger.info("session %s: cancelled by its caller (%s)", session_id, mode)
        session.stop = mode
        if mode != "after_step":
            scope.cancel()
        return True

    async def watch(self) -> None:
        """Stop the runs here that another replica's cancel asks to, for as long as it
        runs (the runtime runs it, as Engine.watch_cancels)."""
        while True:
            try:
                async with self.store.subscribe(CANCELS) as told:
                    async for payload in told:
                        self.stop(str(payload.get("session")), str(payload.get("mode")))
            except Exception as exc:  # the store: a run reads the request when it starts
                logger.warning("watching for cancellations: %s", exc)
            await anyio.sleep(1)
