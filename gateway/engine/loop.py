"""The engine's loop: ask the planner, validate its envelope, check it, act through the
call service, tell the model what happened, until there is a reply, a question or an end.

The model never acts. Every call it asks for goes through `ToolService.call` as the
session's caller, with that caller's ResolvedContext: the same permission and scope check
as every door, no second one. A refused call is not run: the model is told it was refused
(in words that give nothing away), the refusal is audited by the call service, and it
counts against the session's violation budget. Budgets are checked before every model
turn and every call (budgets.py); the first one reached ends the session as failed,
naming it. An answer that is no envelope gets at most MAX_REPAIRS turns to be put right.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

import anyio
import mcp_types as types

from .. import jsoncodec
from ..calls.outcome import ToolCall
from ..calls.service import ToolService
from ..errors import InvalidApproval, SessionNotWaiting, SessionTaken, UnknownSession
from ..state.base import START, StateStore
from ..tags.context import ResolvedContext
from . import integrity
from .acting import NESTED, Actor
from .budgets import BudgetExhausted, Budgets
from .claims import Claims
from .envelopes import (
    ACTING,
    ClarifyEnvelope,
    Envelope,
    ErrorEnvelope,
    InvalidEnvelope,
    ReplyEnvelope,
    parse,
)
from .planners.base import Answer, Emitted, Planner, PlannerError, Said, Told, ToolInfo, Turn
from .session import (
    CallSummary,
    Recorder,
    Session,
    new_session_id,
    restore,
)
from .states import FINAL, SessionState

logger = logging.getLogger("gateway.engine")

END_SECONDS: Final = 5.0
"""How long recording a session's end may take when it ends by cancellation or a failure."""
MAX_REPAIRS: Final = 2
"""Turns in a row that may put an invalid answer right, before the session fails."""

Verdict = Literal["approve", "reject", "edit"]
AfterTaint = Literal["ask", "refuse"]

ToolsFor = Callable[[ResolvedContext], Sequence[types.Tool]]
"""The tools a caller may use (its view of the catalog), in a stable order."""


@dataclass(frozen=True, slots=True)
class SessionResult:
    session_id: str
    state: SessionState
    text: str | None
    """The reply, the question (input_required), or why the session ended otherwise."""
    calls: tuple[CallSummary, ...]
    spent: dict[str, Any]


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
    ) -> None:
        """`confidence`: below it, an envelope that calls tools is not acted on; the
        caller is asked whether to go ahead instead. `after_taint`: what becomes of a call
        that only taint holds (integrity.py): the user is asked, or it is refused.
        `lease`: seconds this engine's claim on a session it runs lasts unrenewed
        (claims.py): after a crash, how soon another replica may take the session over."""
        self.service = service
        self.tools_for = tools_for
        self.planner = planner
        self.budgets = budgets or Budgets()
        self.confidence = confidence
        self.after_taint = after_taint
        self.claims = Claims(store, lease)
        self.recorder = Recorder(store)
        self._actor = Actor(service, self.recorder, self.budgets)

    async def start(self, caller: ResolvedContext, message: str) -> Session:
        """A new session, `accepted` on its stream before anyone learns its id, claimed by
        this engine for `run`."""
        session = Session(new_session_id(), caller, message)
        session.transcript.append(Said(message))
        if not await self.claims.take(session):  # a new id: only a bug gets here
            raise SessionTaken(session.id)
        await self.recorder.accepted(session)
        return session

    async def load(self, session_id: str, caller: ResolvedContext) -> Session:
        """The stored session `session_id`, to go on with as `caller`; UnknownSession when
        there is none, or it is another caller's."""
        snapshot = await self.recorder.store.get_session_state(session_id)
        principal = caller.principal
        if (
            snapshot is None
            or snapshot.get("user") != principal.user_id
            or snapshot.get("org") != principal.org_id
        ):
            raise UnknownSession(session_id)
        return restore(snapshot, caller)

    async def answer(self, session: Session, text: str) -> SessionResult:
        """Go on with a session waiting for its caller (a question, a confidence check),
        with the caller's answer; SessionNotWaiting when it is not waiting."""
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
        await self._take(session)
        try:
            session.waiting = None
            session.transcript.append(Told(asked.id, answered))
            await self.recorder.event(session, "answer", text=text)
            session.spent.resume()
        except BaseException:
            await self.claims.let_go(session)
            raise
        return await self.run(session)

    async def approve(
        self,
        session: Session,
        verdict: Verdict,
        message: str = "",
        arguments: Mapping[int, dict[str, Any]] | None = None,
    ) -> SessionResult:
        """The user's decision on the calls a session holds for approval: `approve` runs
        them, `edit` runs them with `arguments` (by their index in the envelope) in
        place of the model's, checked again in full; `reject` runs none, and the model
        is told so with `message`. InvalidApproval for edits that are no envelope."""
        if session.state is not SessionState.INPUT_REQUIRED or session.waiting != "approval":
            raise SessionNotWaiting(session.id, _waiting(session))
        assert session.approval is not None
        emitted_id = session.approval["for"]
        emitted = next(
            e for e in session.transcript if isinstance(e, Emitted) and e.id == emitted_id
        )
        edits = dict(arguments or {}) if verdict == "edit" else {}
        envelope = None
        if verdict != "reject":
            try:
                envelope = parse(_edited(emitted.data, edits))
            except (ValueError, IndexError, KeyError, TypeError) as exc:
                raise InvalidApproval(f"the edited arguments do not fit: {exc}") from None
        await self._take(session)
        try:
            await self.recorder.event(
                session, "approval_decided", verdict=verdict, message=message, arguments=edits
            )
        except BaseException:
            await self.claims.let_go(session)
            raise
        session.approval = None
        session.waiting = None
        session.spent.resume()

        async def decided() -> None:
            if envelope is None:
                told = f"The user did not approve it, so it was not run. {message}".strip()
                session.transcript.append(Told(emitted_id, told))
                return
            text = await self._actor.act(session, envelope)
            if edits:
                text = f"The user edited the arguments before it ran.\n\n{text}"
            session.transcript.append(Told(emitted_id, text))

        return await self.run(session, decided)

    async def _take(self, session: Session) -> None:
        """Claim a waiting session to act on its answer or approval, in this engine alone
        among every replica, or raise SessionNotWaiting: another holds it, or acted on one
        since `session` was loaded (its snapshot moved on)."""
        if not await self.claims.take(session):
            raise SessionNotWaiting(session.id, "already being answered")
        try:
            stored = await self.recorder.store.get_session_state(session.id)
            if stored is None or stored.get("last_event", START) != session.last_event:
                raise SessionNotWaiting(session.id, "already answered")
        except BaseException:
            await self.claims.let_go(session)
            raise

    async def run(
        self, session: Session, first: Callable[[], Awaitable[None]] | None = None
    ) -> SessionResult:
        """Drive `session`, which this engine has claimed, until it replies, asks, or ends
        (after `first`, when given), and let go of it. The first budget exhausted,
        wherever, ends it as failed. Cancelling the awaiting task cancels the session (its
        calls in flight too), recorded as canceled. SessionTaken when another engine took
        it over meanwhile (this one's claim lapsed): it then writes nothing more."""
        async with self.claims.held(session):
            return await self._run(session, first)
        raise AssertionError("unreachable: held() raises when it ends the body")  # for mypy

    async def _run(
        self, session: Session, first: Callable[[], Awaitable[None]] | None
    ) -> SessionResult:
        try:
            if self.planner is None:
                never_started = session.state is SessionState.SUBMITTED
                await self._end(
                    session,
                    SessionState.REJECTED if never_started else SessionState.FAILED,
                    "no planner is configured: set engine.planner in gateway.yaml "
                    "(anthropic, with an API key, or scripted)",
                )
                return self._result(session)
            await self.recorder.move(session, SessionState.WORKING)
            if first is not None:
                await first()
            await self._loop(session, self.planner)
        except BudgetExhausted as exc:
            await self._exhausted(session, exc)
        except SessionTaken:
            raise
        except anyio.get_cancelled_exc_class():
            await self._end_anyway(session, SessionState.CANCELED, "cancelled")
            raise
        except Exception:  # a bug, or the state store failing: the session ends, said so
            logger.exception("session %s failed", session.id)
            await self._end_anyway(session, SessionState.FAILED, "an internal error (logged)")
        return self._result(session)

    async def _end_anyway(self, session: Session, state: SessionState, why: str) -> None:
        """End a session that is not final, shielded from cancellation and bounded (the
        store may be what failed); a failure to write it down is logged, not raised. Not
        one this engine lost its claim on: its new holder goes on with it."""
        if session.state in FINAL or session.claim is None:
            return
        with anyio.move_on_after(END_SECONDS, shield=True) as scope:
            try:
                await self._end(session, state, why)
            except Exception:
                logger.exception("session %s: could not record it as %s", session.id, state)
        if scope.cancelled_caught:
            logger.warning("session %s: recording it as %s timed out", session.id, state)
        session.state, session.outcome = state, why

    async def _loop(self, session: Session, planner: Planner) -> None:
        repairs = 0
        while True:
            session.spent.before_turn(self.budgets)
            try:
                answer = await planner.decide(self._turn(session))
            except PlannerError as exc:
                await self._end(session, SessionState.FAILED, f"the planner failed: {exc}")
                return
            session.spent.add(answer.usage)
            data = answer.data
            unwritable = jsoncodec.unencodable(data, "the answer")
            if unwritable is not None:  # the store could not keep it: neither can we
                data = None
            session.transcript.append(Emitted(answer.id, data))
            try:
                if unwritable is not None:
                    raise InvalidEnvelope(unwritable)
                envelope = parse(data)
            except InvalidEnvelope as exc:
                repairs += 1
                await self.recorder.event(
                    session,
                    "invalid_envelope",
                    id=answer.id,
                    problem=str(exc),
                    repair=repairs,
                    data=data,
                )
                if repairs > MAX_REPAIRS:
                    why = f"the model gave no valid envelope in {repairs} turns: {exc}"
                    await self._end(session, SessionState.FAILED, why)
                    return
                told = f"That is not a valid envelope: {exc}. Answer with one valid envelope."
                session.transcript.append(Told(answer.id, told, is_error=True))
                await self.recorder.snapshot(session)
                continue
            repairs = 0
            await self._envelope_event(session, answer, envelope)
            if isinstance(envelope, ACTING) and envelope.confidence < self.confidence:
                question = (
                    f"I am not sure enough to go on (confidence {envelope.confidence:.2f}): "
                    f"{envelope.reasoning or 'no reason given'}. Shall I go ahead?"
                )
                await self._ask(session, question, "confidence")
                return
            if isinstance(envelope, ReplyEnvelope):
                session.outcome = envelope.text
                await self.recorder.event(session, "reply", text=envelope.text)
                await self.recorder.move(session, SessionState.COMPLETED, "replied")
                return
            if isinstance(envelope, ClarifyEnvelope):
                await self._ask(session, envelope.question, "question")
                return
            holds = integrity.held(
                session.caller,
                envelope,
                session.tainted,
                self._read_only,
                lambda tool, arguments: self.service.would_permit(
                    session.caller, ToolCall(tool, arguments)
                ),
            )
            if holds:
                if self.after_taint == "refuse" and all(
                    h.why == integrity.AFTER_TAINT for h in holds
                ):
                    await self._refuse_after_taint(session, answer.id, holds)
                    continue
                session.approval = {"for": answer.id, "calls": [asdict(h) for h in holds]}
                await self._ask(session, integrity.question(holds), "approval")
                return
            if isinstance(envelope, ErrorEnvelope):
                await self._end(
                    session, SessionState.FAILED, f"the model gave up: {envelope.reason}"
                )
                return
            told = await self._actor.act(session, envelope)
            session.transcript.append(Told(answer.id, told))
            await self.recorder.snapshot(session)  # a turn's end: what a resume starts from

    async def _refuse_after_taint(
        self, session: Session, emitted: str, holds: Sequence[integrity.Held]
    ) -> None:
        """Refuse the calls only taint holds: audited, counted as violations, and told."""
        for hold in holds:
            await self._actor.refuse(session, hold.tool, hold.arguments, "after_taint", hold.why)
        session.transcript.append(Told(emitted, f"Not run: {integrity.AFTER_TAINT}."))
        for _ in holds:
            session.spent.violation(self.budgets)

    def _read_only(self, tool: str) -> bool:
        entry = self.service.pool.catalog.tools.get(tool)
        return entry is not None and entry.read_only

    def _turn(self, session: Session) -> Turn:
        tools = tuple(
            ToolInfo(tool.name, tool.description or "", dict(tool.input_schema))
            for tool in self.tools_for(session.caller)
            if tool.name != NESTED  # a session may not call it: not shown either
        )
        return Turn(session.caller.prompt, tools, tuple(session.transcript))

    async def _envelope_event(self, session: Session, answer: Answer, envelope: Envelope) -> None:
        usage = answer.usage
        await self.recorder.event(
            session,
            "envelope",
            id=answer.id,
            kind=envelope.kind,
            confidence=envelope.confidence,
            reasoning=envelope.reasoning,
            data=answer.data,
            usage={name: value for name, value in asdict(usage).items() if name != "cost_usd"},
        )

    async def _ask(self, session: Session, question: str, waiting: str) -> None:
        session.outcome = question
        session.waiting = waiting
        session.spent.pause()
        await self.recorder.event(session, "question", text=question)
        await self.recorder.move(session, SessionState.INPUT_REQUIRED, "asked the caller")

    async def _exhausted(self, session: Session, exc: BudgetExhausted) -> None:
        await self.recorder.event(session, "budget", name=exc.name, used=exc.used, limit=exc.limit)
        await self._end(session, SessionState.FAILED, str(exc))

    async def _end(self, session: Session, state: SessionState, why: str) -> None:
        session.outcome = why
        await self.recorder.move(session, state, why)

    def _result(self, session: Session) -> SessionResult:
        return SessionResult(
            session.id,
            session.state,
            session.outcome,
            tuple(session.calls),
            session.spent.summary(),
        )


def _waiting(session: Session) -> str:
    if session.state is SessionState.INPUT_REQUIRED:
        return f"waiting for {'an approval' if session.waiting == 'approval' else 'an answer'}"
    return session.state.value


def _edited(data: Any, edits: Mapping[int, dict[str, Any]]) -> Any:
    """The envelope `data` with the arguments of the calls in `edits` (by index) replaced."""
    if not edits:
        return data
    data = copy.deepcopy(data)
    kind = data["kind"]
    calls = (
        [data["call"]] if kind == "tool" else data["calls"] if kind == "tools" else data["steps"]
    )
    for index, arguments in edits.items():
        if index < 0:
            raise IndexError(f"no call {index}")
        calls[index]["arguments"] = dict(arguments)
    return data
