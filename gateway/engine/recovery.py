"""Finding the sessions whose engine stopped while they ran, and running them on here.

A session that is submitted or working while no engine holds its claim lost its engine: the
process crashed or was killed, or its replica went away (a claim not renewed lapses after
one lease). Every run is on the store's run queue, renewed with its claim (claims.py);
every replica asks the queue twice a lease for runs silent for a lease and resumes their
sessions (Engine.resume: from the snapshot and the events after it), as the user they
belong to, resolved again from today's tags; the queue gives each silent run to one
replica, and the claim decides. A scan of every session, at start-up and every
FULL_SWEEPS after, also finds one whose run never reached the queue (its store failed
then, or a gateway before the queue ran it).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Final

import anyio
from anyio.abc import TaskGroup

from ..errors import SessionError
from ..principal import Principal
from ..tags.context import ResolvedContext
from .loop import Engine
from .session import Session
from .states import RUNNING

logger = logging.getLogger("gateway.engine")

FULL_SWEEPS: Final = 120
"""Rounds of the run queue (half a lease each) between scans of every session."""
RUNS_TAKEN: Final = 100
"""Silent runs taken over in one round, at most."""

Resolve = Callable[[Principal, str | None], ResolvedContext]
"""A caller's context from who they are and their intent (the tags')."""


class Recovery:
    def __init__(self, engine: Engine, resolve: Resolve) -> None:
        self.engine = engine
        self.resolve = resolve

    async def run(self) -> None:
        """Ask the run queue twice a lease, and scan every session now and then, for as
        long as it runs, each session resumed in a task."""
        lease = self.engine.claims.lease
        async with anyio.create_task_group() as tasks:
            for round_ in itertools.count():
                try:
                    if round_ % FULL_SWEEPS == 0:
                        await self.sweep(tasks)
                    else:
                        await self.lapsed(tasks)
                except Exception as exc:  # the store: there is a next sweep
                    logger.warning("sessions to resume: the sweep failed: %s", exc)
                await anyio.sleep(lease / 2)

    async def lapsed(self, tasks: TaskGroup) -> int:
        """Start resuming the sessions of the runs whose runner went silent for a lease;
        how many. A run whose session needs no resuming (it ended, waits, or another
        engine holds it) is dropped from the queue."""
        claims = self.engine.claims
        store = self.engine.recorder.store
        started = 0
        for entry, session_id in await store.lapsed_runs(claims.runner, claims.lease, RUNS_TAKEN):
            session = None
            if session_id not in claims.holding:
                try:
                    session = await self._orphan(session_id)
                except Exception as exc:  # kept: taken again, and tried again, a lease on
                    logger.warning("session %s cannot be resumed: %s", session_id, exc)
                    continue
            # Dropped now: the resumed run has an entry of its own, and one left behind
            # would be taken again after a lease, only to be found held.
            await store.end_run(entry)
            if session is not None:
                tasks.start_soon(self._resume, session)
                started += 1
        return started

    async def sweep(self, tasks: TaskGroup) -> int:
        """Start resuming every session that lost its engine; how many were started (some
        may turn out held by another replica: they are left to it). When the engine has no
        planner of its own (each caller's, by sampling), only sessions that run a flow
        (which needs none): the others go on when their caller calls run_session with
        their id (Engine.pick_up)."""
        store = self.engine.recorder.store
        started = 0
        for session_id in await store.session_ids():
            if session_id in self.engine.claims.holding:
                continue
            try:  # one session's damage is its own: the sweep goes on to the next
                session = await self._orphan(session_id)
            except Exception as exc:
                logger.warning("session %s cannot be resumed: %s", session_id, exc)
                continue
            if session is not None:
                tasks.start_soon(self._resume, session)
                started += 1
        return started

    async def _orphan(self, session_id: str) -> Session | None:
        """The stored session, as its user, if it is running (nobody may be running it)."""
        snapshot = await self.engine.recorder.store.get_session_state(session_id)
        if snapshot is None or snapshot.get("state") not in RUNNING:
            return None
        flow = snapshot.get("flow") or {}
        if self.engine.turns.planner is None and flow.get("phase") != "running":
            return None
        principal = Principal(
            str(snapshot["user"]), str(snapshot["org"]), tuple(snapshot.get("roles", ()))
        )
        return self.engine.restored(snapshot, self.resolve(principal, snapshot.get("intent")))

    async def _resume(self, session: Session) -> None:
        try:
            result = await self.engine.resume(session)
        except SessionError:
            return  # held by another engine, or moved on meanwhile: not ours
        except Exception:  # the store failing before the run: there is a next sweep
            logger.exception("session %s: resuming it failed", session.id)
            return
        logger.info("session %s resumed: %s", result.session_id, result.state.value)
