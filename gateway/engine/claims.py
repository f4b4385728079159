"""Who runs a session: one engine at a time, among every replica sharing the state store.

An engine acts on a session only while it holds the session's claim in the store (a lease,
`StateStore.claim_session`): it takes it to start a session or to act on an answer, renews
it while it runs, and lets go when the session waits or ends. A replica that crashes stops
renewing, so after one lease another may take the session over and resume it. One whose
lease lapsed while it ran (a long pause, a partition) finds its next snapshot refused
(`set_claimed_session_state`) or its renewal failing, and stops without writing an end:
the session is someone else's now.

A holder stops when a renewal fails, or when it has gone two thirds of a lease without
one; its appends are fenced too (`append_claimed`): a stale holder writes no intent, so it
sends no call, once another holds the claim.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio

from ..errors import SessionTaken
from ..state.base import StateStore
from .session import Session

logger = logging.getLogger("gateway.engine")

RELEASE_SECONDS: Final = 5.0
"""How long letting go of a claim may take (the store may be what failed)."""


class Claims:
    def __init__(self, store: StateStore, lease: float) -> None:
        """`lease`: seconds a claim lasts unrenewed."""
        self.store = store
        self.lease = lease
        self._me = f"{socket.gethostname()}:{os.getpid()}"
        self.runner = f"{self._me}:{secrets.token_hex(4)}"
        """This replica's name on the run queue."""
        self.holding: set[str] = set()
        """The sessions this engine holds a claim on."""

    async def take(self, session: Session) -> bool:
        """Claim `session` for this engine (`session.claim`); False when another holds it."""
        owner = f"{self._me}:{secrets.token_hex(6)}"
        asked = anyio.current_time()
        if not await self.store.claim_session(session.id, owner, self.lease):
            return False
        session.claimed_at = asked
        session.claim = owner
        self.holding.add(session.id)
        return True

    async def let_go(self, session: Session) -> None:
        """Release the claim, if this engine still holds it; a store failure is logged
        (the claim then lapses on its own)."""
        owner, session.claim = session.claim, None
        self.holding.discard(session.id)  # also when the claim was found another's
        if owner is None:
            return
        with anyio.move_on_after(RELEASE_SECONDS, shield=True):
            try:
                await self.store.release_session(session.id, owner)
            except Exception:
                logger.warning("session %s: could not release its claim", session.id)

    @asynccontextmanager
    async def held(self, session: Session) -> AsyncIterator[None]:
        """Run the body while renewing `session`'s claim, and let go after. When the claim
        is lost, the body is cancelled (with `session.claim` None, so it records no end)
        and SessionTaken is raised. The body's own exception comes out as it is, not in
        the renewal's task group's ExceptionGroup."""
        owner = session.claim
        assert owner is not None, "a session is run only by the engine that claimed it"
        lost = False
        # On the run queue while it runs, renewed with the claim: a replica that dies
        # leaves its runs there, silent, for another to take over (recovery.py).
        entry: str | None = None
        try:
            entry = await self.store.enlist_run(session.id, self.runner)
        except Exception as exc:  # the claim is what decides: enlisted at a renewal
            logger.warning("session %s: not on the run queue yet: %s", session.id, exc)

        async def renew(scope: anyio.CancelScope) -> None:
            nonlocal lost, entry
            renewed = session.claimed_at
            # The first renewal a quarter lease after the claim, however long what came
            # between took (a resume reads its journal).
            pause = max(0.0, renewed + self.lease / 4 - anyio.current_time())
            while True:
                await anyio.sleep(pause)
                asked = anyio.current_time()  # the store's lease runs from its answer, at most
                held: bool | None = None  # None: the store did not say
                with anyio.move_on_after(self.lease / 6):
                    try:
                        held = await self.store.claim_session(session.id, owner, self.lease)
                    except Exception as exc:
                        logger.warning("session %s: renewing its claim: %s", session.id, exc)
                if held:
                    renewed, pause = asked, self.lease / 4
                    with anyio.move_on_after(self.lease / 6):
                        try:
                            if entry is None or not await self.store.renew_run(entry, self.runner):
                                entry = await self.store.enlist_run(session.id, self.runner)
                        except Exception as exc:  # the claim is what decides; logged
                            logger.warning("session %s: renewing its run: %s", session.id, exc)
                    continue
                # Unrenewed for two thirds of a lease, it stops with a third to spare before
                # the store lets another replica take the session; till then it tries again
                # soon (a slow answer of the store is not a lost claim).
                if held is False or anyio.current_time() - renewed >= self.lease * 2 / 3:
                    logger.warning("session %s: its claim was lost; stopping", session.id)
                    lost = True
                    session.claim = None
                    self.holding.discard(session.id)
                    scope.cancel()
                    return
                pause = self.lease / 12

        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(renew, tasks.cancel_scope)
                try:
                    yield
                except Exception as exc:
                    failure = exc
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            await self.let_go(session)
            with anyio.move_on_after(RELEASE_SECONDS, shield=True):
                try:
                    if entry is not None:
                        await self.store.end_run(entry)
                except Exception:  # it is taken over, found ended, and dropped
                    logger.warning("session %s: could not end its run", session.id)
        if failure is not None:
            raise failure
        if lost:
            raise SessionTaken(session.id)
