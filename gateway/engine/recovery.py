"""Finding the sessions whose engine stopped while they ran, and running them on here.

A session that is submitted or working while no engine holds its claim lost its engine: the
process crashed or was killed, or its replica went away (a claim not renewed lapses after
one lease). Every replica sweeps the state store once a lease and resumes such sessions
(Engine.resume: from the snapshot and the events after it), as the user they belong to,
resolved again from today's tags; the claim decides which replica gets each one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from ..errors import SessionError
from ..principal import Principal
from ..tags.context import ResolvedContext
from .loop import Engine
from .session import Session
from .states import RUNNING

logger = logging.getLogger("gateway.engine")

Resolve = Callable[[Principal, str | None], ResolvedContext]
"""A caller's context from who they are and their intent (the tags')."""


class Recovery:
    def __init__(self, engine: Engine, resolve: Resolve) -> None:
        self.engine = engine
        self.resolve = resolve

    async def run(self) -> None:
        """Sweep once a lease, for as long as it runs, each session resumed in a task."""
        async with anyio.create_task_group() as tasks:
            while True:
                try:
                    await self.sweep(tasks)
                except Exception as exc:  # the store: there is a next sweep
                    logger.warning("sessions to resume: the sweep failed: %s", exc)
                await anyio.sleep(self.engine.claims.lease)

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
