"""The engine: agent sessions for the gateway's callers. It starts a session (claimed in
the state store, `accepted` on its stream before its id is given out), runs it turn by turn
(turns.py), goes on with it when its caller answers a question or decides on an approval,
and resumes one whose engine stopped while it ran (journal.py), on whichever replica
finds it first (claims.py, recovery.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any, Final, Literal

import anyio

from ..calls.service import ToolService
from ..errors import (
    InvalidApproval,
    InvalidFlowInput,
    SessionNotWaiting,
    SessionTaken,
    UnknownSession,
)
from ..flows.access import find_flow, flow_budgets, flow_of
from ..flows.runner import FLOW_HELD
from ..state.base import START, StateStore, Stream
from ..tags.context import ResolvedContext
from .budgets import Budgets
from .cancels import Cancels
from .claims import Claims
from .envelopes import edited, parse
from .journal import Journal
from .planners.base import Emitted, Planner, Said, Told
from .session import Recorder, Session, new_session_id, restore
from .states import FINAL, RUNNING, SessionState
from .turns import AfterTaint, SessionResult, ToolsFor, Turns

__all__ = ["AfterTaint", "Engine", "Reply", "SessionResult", "ToolsFor", "Verdict"]

logger = logging.getLogger("gateway.engine")

Verdict = Literal["approve", "reject", "edit"]
Reply = Literal["answer", "approve", "reject"]
"""A caller's word on what a waiting session showed it."""
Go = Callable[[], Awaitable[bool]] | None
"""What `run` does first with a session an answer or approval was taken for (None: it
goes on with its next turn)."""
CANCEL_TRIES: Final = 5
"""Times a cancel goes after a session that moved on while it was being cancelled."""
LETTING_GO_TRIES: Final = 100
LETTING_GO_PAUSE: Final = 0.02
"""How often, and how far apart, a claim is asked for while the engine that asked the
caller lets go of the session (Engine._taken): two seconds at most."""
SNAPSHOT_POLLS: Final = 250
"""Reads of a snapshot, 20 ms apart, for it to catch up with its stream's state event."""


class Engine:
    def __init__(
        self,
        service: ToolService,
        store: StateStore,
        tools_for: ToolsFor,
        planner: Planner | None,
        budgets: Budgets | None = None,
        confidence: float = 0.5,
        after_taint: AfterTaint = "ask",
        lease: float = 15.0,
        nested_depth: int = 0,
        taint_definitions: bool = False,
    ) -> None:
        """`confidence`: below it, an envelope that calls tools is not acted on; the
        caller is asked whether to go ahead instead. `after_taint`: what becomes of a call
        that only taint holds (integrity.py): the user is asked, or it is refused.
        `lease`: seconds this engine's claim on a session it runs lasts unrenewed
        (claims.py): after a crash, how soon another replica may take the session over.
        `nested_depth`: how deep sessions may start sessions through run_session.
        `taint_definitions`: the tool definitions a session is shown taint it, unless
        every tool's output is trusted (integrity.py)."""
        self.service = service
        self.budgets = budgets or Budgets()
        self.claims = Claims(store, lease)
        self.recorder = Recorder(store)
        self.nested_depth = nested_depth
        self.cancels = Cancels(store)
        self.sweeping = False
        """A sweep for sessions to resume runs in this process (the runtime's, recovery.py);
        without one, a caller asking after a session nobody runs resumes it (pick_up)."""
        self.turns = Turns(
            service,
            self.recorder,
            tools_for,
            planner,
            confidence,
            after_taint,
            nested_depth,
            taint_definitions,
        )

    def stop(self) -> None:
        """The gateway is shutting down: a session cancelled from now on is not recorded
        as canceled but let go, working, to be resumed: by a replica's sweep
        (recovery.py), or by its caller asking after it (`pick_up`)."""
        self.turns.stopping = True

    async def start(
        self,
        caller: ResolvedContext,
        message: str,
        depth: int = 0,
        flow: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        callback: str | None = None,
    ) -> Session:
        """A new session, `accepted` on its stream before anyone learns its id, claimed by
        this engine for `run`; `depth`: how many sessions deep it is started. With `flow`,
        it runs that flow tag of the caller's on `inputs` (UnknownFlow, InvalidFlowInput
        before anything is written). `callback`: the webhook its caller is told at."""
        session = Session(new_session_id(), caller, message, depth=depth, callback=callback)
        session.budgets = self.budgets.tightened(caller.session_limits())
        if flow is not None:
            compiled = flow_of(caller, flow)
            given = compiled.with_defaults(inputs or {})
            problem = compiled.input_problem(given)
            if problem is not None:
                raise InvalidFlowInput(f"the input of flow {flow!r} does not fit: {problem}")
            session.flow = {
                "name": flow,
                "digest": compiled.digest,
                "inputs": given,
                "phase": "running",
            }
            session.budgets = flow_budgets(session.budgets, compiled)
            message = message or f"Run the flow {flow}."
            session.message = message
        session.transcript.append(Said(message))
        if not await self.claims.take(session):  # a new id: only a bug gets here
            raise SessionTaken(session.id)
        await self.recorder.accepted(session)
        return session

    async def load(
        self, session_id: str, caller: ResolvedContext, step: str | None = None
    ) -> Session:
        """The stored session `session_id`, to go on with as `caller`; UnknownSession when
        there is none, or it is another caller's. `step`: the last event of the result
        the caller is answering; SessionNotWaiting when the session has moved on since
        (another of the caller's clients answered)."""
        snapshot = await self.recorder.store.get_session_state(session_id)
        principal = caller.principal
        if (
            snapshot is None
            or snapshot.get("user") != principal.user_id
            or snapshot.get("org") != principal.org_id
        ):
            raise UnknownSession(session_id)
        session = self.restored(snapshot, caller)
        if step is not None and step != session.last_event:
            raise SessionNotWaiting(session_id, "already answered")
        return session

    def restored(self, snapshot: dict[str, Any], caller: ResolvedContext) -> Session:
        """The session a snapshot holds, as `caller`, with budgets from today's tags."""
        session = restore(snapshot, caller)
        session.budgets = self.budgets.tightened(caller.session_limits())
        if session.flow is not None:
            flow = find_flow(caller, session.flow["name"])
            if flow is not None:
                session.budgets = flow_budgets(session.budgets, flow)
        return session

    async def answer(
        self, session: Session, text: str, planner: Planner | None = None
    ) -> SessionResult:
        """Go on with a session waiting for its caller (a question, a confidence check),
        with the caller's answer; SessionNotWaiting when it is not waiting."""
        first = await self.take_answer(session, text)
        return await self.run(session, first, planner)

    async def take_answer(self, session: Session, text: str) -> Go:
        """The first half of `answer`: claim the session and record the answer, so that a
        door can say at once whether it was taken (SessionNotWaiting) and run the session
        (`run` with what this returns) in the background."""
        if session.state is not SessionState.INPUT_REQUIRED or session.waiting == "approval":
            raise SessionNotWaiting(session.id, _waiting(session))
        asked = next(
            (entry for entry in reversed(session.transcript) if isinstance(entry, Emitted)), None
        )
        assert asked is not None, "a session waits only after an envelope"
        answered = f"The user answered: {text}"
        if session.waiting == "confidence":
            answered = (
                "That was not run: you were not sure enough, so the user was asked whether to "
                f"go ahead. {answered}"
            )
        async with self._taken(session):
            session.waiting = None
            session.transcript.append(Told(asked.id, answered))
            await self.recorder.event(session, "answer", text=text)
            session.spent.resume()
        return None

    async def respond(
        self,
        result: SessionResult,
        caller: ResolvedContext,
        reply: Reply,
        text: str,
        planner: Planner | None = None,
    ) -> SessionResult:
        """Go on with the session that `result` left waiting, with the caller's reply to
        what `result` showed it (an answer, or approve / reject and why). SessionNotWaiting
        when the session has moved on since (another of the caller's clients answered)."""
        session = await self.load(result.session_id, caller, result.last_event)
        if reply == "answer":
            return await self.answer(session, text, planner)
        return await self.approve(session, reply, text, planner=planner)

    async def approve(
        self,
        session: Session,
        verdict: Verdict,
        message: str = "",
        arguments: Mapping[int, dict[str, Any]] | None = None,
        planner: Planner | None = None,
    ) -> SessionResult:
        """The user's decision on the calls a session holds for approval: `approve` runs
        them, `edit` runs them with `arguments` (by their index in the envelope) in
        place of the model's, checked again in full; `reject` runs none, and the model
        is told so with `message`. InvalidApproval for edits that are no envelope."""
        first = await self.take_verdict(session, verdict, message, arguments)
        return await self.run(session, first, planner)

    async def take_verdict(
        self,
        session: Session,
        verdict: Verdict,
        message: str = "",
        arguments: Mapping[int, dict[str, Any]] | None = None,
    ) -> Go:
        """The first half of `approve`, as `take_answer` is of `answer`: what `run` takes."""
        if session.state is not SessionState.INPUT_REQUIRED or session.waiting != "approval":
            raise SessionNotWaiting(session.id, _waiting(session))
        approval = session.approval
        assert approval is not None
        if approval["for"] == FLOW_HELD:
            return await self._decide_flow(session, approval, verdict, message)
        emitted_id = approval["for"]
        emitted = next(
            e for e in session.transcript if isinstance(e, Emitted) and e.id == emitted_id
        )
        replay = approval.get("replay")
        if replay is not None and verdict == "edit":
            raise InvalidApproval(
                "a call whose outcome is unknown is sent again as it was, or not at all: "
                "approve or reject it"
            )
        # A held replay goes on with the edits its first run was approved with.
        edits = dict(arguments or {}) if verdict == "edit" else dict(approval.get("arguments", {}))
        try:
            parse(edited(emitted.data, edits))
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise InvalidApproval(f"the edited arguments do not fit: {exc}") from None
        # The word on calls of unknown outcome, by key: the journal reads it back.
        keys = approval.get("keys", [])
        settled = dict.fromkeys(keys, "resend" if verdict == "approve" else "skip")
        async with self._taken(session):
            await self.recorder.event(
                session,
                "approval_decided",
                verdict=verdict,
                message=message,
                arguments=edits,
                **({"settled": settled} if replay is not None else {}),
            )
        session.approval = None
        session.waiting = None
        session.deciding = {"for": emitted_id, "verdict": verdict, "arguments": edits}
        session.deciding.update(message=message, replay=replay)
        session.spent.resume()
        return lambda: self.turns.decided(session, emitted)

    async def _decide_flow(
        self,
        session: Session,
        approval: dict[str, Any],
        verdict: Verdict,
        message: str,
    ) -> Go:
        """The user's word on a flow's steps of unknown outcome: sent again, or not (then
        each fails as its on_error says)."""
        if verdict == "edit":
            raise InvalidApproval(
                "a call whose outcome is unknown is sent again as it was, or not at all: "
                "approve or reject it"
            )
        settled = dict.fromkeys(approval["keys"], "resend" if verdict == "approve" else "skip")
        async with self._taken(session):
            await self.recorder.event(
                session, "approval_decided", verdict=verdict, message=message, settled=settled
            )
        session.approval = None
        session.waiting = None
        replay = approval["replay"]
        if replay is None and session.flow is not None:  # the word on running it at all
            session.flow["approved"] = verdict == "approve"
        session.deciding = {"for": FLOW_HELD, "verdict": verdict, "replay": replay}
        session.spent.resume()
        return None

    async def pick_up(self, session: Session, planner: Planner | None = None) -> SessionResult:
        """How `session` stands, as `wait` says; but one whose engine stopped (it runs, and
        nobody holds its claim) is resumed here first, with `planner` (the caller's own
        model, say, which no sweep has)."""
        if session.state in RUNNING:
            try:
                return await self.resume(session, planner)
            except SessionTaken:
                pass  # run by another engine: wait for it
        return await self.wait(session)

    async def resume(self, session: Session, planner: Planner | None = None) -> SessionResult:
        """Go on with a session whose engine stopped while it ran (it is submitted or
        working, and no engine holds its claim), from its snapshot and the events after
        it (journal.py), as `run` does. SessionTaken when an engine holds it or ran it
        since it was loaded; SessionNotWaiting when it is not running."""
        if session.state not in RUNNING:
            raise SessionNotWaiting(session.id, _waiting(session))
        async with self._taken(session, SessionTaken(session.id), SessionTaken(session.id)):
            after = (session.deciding or {}).get("replay") or session.last_event
            journal = await Journal.read(self.recorder.store, session.id, after)
            await self.recorder.event(session, "resumed", after=session.last_event)
        logger.info("session %s: resumed after event %s", session.id, after)
        return await self.run(session, lambda: self.turns.resumed(session, journal), planner)

    async def wait(self, session: Session) -> SessionResult:
        """`session`'s result once it is not running: at once when it waits for its caller
        or has ended, else when the engine running it (this one, another replica's, or the
        one that resumes it after a crash) stops; as it stands, still running, after as
        long as a session may run (its wall clock budget, and a lease for a resume).
        Cancelling the waiting task stops only the waiting."""
        store = self.recorder.store
        with anyio.move_on_after(session.budgets.wall_seconds + 2 * self.claims.lease):
            while session.state in RUNNING:
                after = session.last_event
                async with aclosing(store.follow(session.id, Stream.EVENTS, after)) as new:
                    async for batch in new:
                        if batch.gap is not None or any(
                            event.data.get("type") == "state"
                            and event.data.get("to") not in RUNNING
                            for event in batch.events
                        ):
                            break
                    else:  # the store closed: say what it last held
                        break
                for _ in range(SNAPSHOT_POLLS):  # the snapshot is written after its event
                    snapshot = await store.get_session_state(session.id)
                    if snapshot is None:
                        raise UnknownSession(session.id)
                    session = restore(snapshot, session.caller)
                    if session.state not in RUNNING:
                        break
                    await anyio.sleep(0.02)
        return self.turns.result(session)

    @asynccontextmanager
    async def _taken(
        self,
        session: Session,
        held: Exception | None = None,
        moved_on: Exception | None = None,
    ) -> AsyncIterator[None]:
        """Claim `session`, as it was loaded, for this engine alone among every replica,
        for the body to prepare its run (which lets go in the end); let go at once if the
        body fails. Raises `held` when another holds it, `moved_on` when another acted on
        it since it was loaded (its snapshot moved on); SessionNotWaiting by default (an
        answer or approval that came too late).

        A session that waits for its caller is still held, for a moment, by the engine
        that asked (it lets go once its snapshot is written): while the stored session
        waits as loaded, the claim is asked for again, a bounded number of times."""
        for _ in range(LETTING_GO_TRIES):
            if await self.claims.take(session):
                break
            stored = await self.recorder.store.get_session_state(session.id)
            if stored is None or stored.get("last_event", START) != session.last_event:
                raise moved_on or SessionNotWaiting(session.id, "already answered")
            if stored.get("state") != SessionState.INPUT_REQUIRED.value:
                raise held or SessionNotWaiting(session.id, "already being answered")
            await anyio.sleep(LETTING_GO_PAUSE)
        else:
            raise held or SessionNotWaiting(session.id, "already being answered")
        try:
            stored = await self.recorder.store.get_session_state(session.id)
            if stored is None or stored.get("last_event", START) != session.last_event:
                raise moved_on or SessionNotWaiting(session.id, "already answered")
            yield
        except BaseException:
            await self.claims.let_go(session)
            raise

    async def run(
        self,
        session: Session,
        first: Go = None,
        planner: Planner | None = None,
    ) -> SessionResult:
        """Drive `session`, which this engine has claimed, until it replies, asks, or ends
        (after `first`, when given and it says to go on), and let go of it. The first
        budget exhausted, wherever, ends it as failed. Cancelling the awaiting task cancels
        the session (its calls in flight too), recorded as canceled; so does its caller's
        request (`cancel`), from whichever replica it came. SessionTaken when another
        engine took it over meanwhile (this one's claim lapsed): it then writes nothing
        more. `planner`: this run's, in place of the engine's (the caller's own model, by
        sampling)."""
        async with self.claims.held(session):
            async with self.cancels.running(session):
                return await self.turns.run(session, first, planner)
            return self.turns.result(session)  # cancelled at once, at its caller's request
        raise AssertionError("unreachable: held() raises when it ends the body")  # for mypy

    async def cancel(self, session: Session, mode: Literal["immediate", "after_step"]) -> None:
        """Its caller's request to stop `session`, told to the run under way wherever it
        runs, and kept for one that starts later (cancels.py); a session that nobody runs
        (it waits for its caller, or its engine is gone) ends here, now. SessionNotWaiting
        when it has ended already."""
        if session.state in FINAL:
            raise SessionNotWaiting(session.id, f"it has ended ({session.state.value})")
        await self.cancels.request(session.id, mode)
        for _ in range(CANCEL_TRIES):
            try:
                async with self._taken(
                    session, SessionTaken(session.id), SessionNotWaiting(session.id, "moved on")
                ):
                    try:
                        session.stop = mode
                        await self.turns.cancel(session)
                    finally:
                        await self.claims.let_go(session)
                return
            except SessionTaken:
                return  # an engine runs it: it sees the request (its watch, or its next run)
            except SessionNotWaiting:  # it moved on since it was read: as it is now, again
                session = await self.load(session.id, session.caller)
                if session.state in FINAL:
                    return

    async def watch_cancels(self) -> None:
        """Stop the runs here that another replica's cancel asks to (cancels.py), for as
        long as it runs (the runtime runs it)."""
        await self.cancels.watch()


def _waiting(session: Session) -> str:
    if session.state is SessionState.INPUT_REQUIRED:
        return f"waiting for {'an approval' if session.waiting == 'approval' else 'an answer'}"
    return session.state.value
