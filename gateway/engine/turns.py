"""The engine's loop, turn by turn: ask the planner, validate its envelope, check it, act
through the call service, tell the model what happened, until there is a reply, a question
or an end; and where a session the engine stopped in mid-turn is picked up (journal.py).

The model never acts. Every call it asks for goes through `ToolService.call` as the
session's caller, with that caller's ResolvedContext: the same permission and scope check
as every door, no second one. A refused call is not run: the model is told it was refused
(in words that give nothing away), the refusal is audited by the call service, and it
counts against the session's violation budget. Budgets are checked before every model
turn and every call (budgets.py); the first one reached ends the session as failed,
naming it. An answer that is no envelope gets at most MAX_REPAIRS turns to be put right.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

import anyio
import mcp_types as types

from .. import jsoncodec
from ..calls.outcome import ToolCall
from ..calls.service import ToolService
from ..errors import SessionCanceled, SessionTaken
from ..flows.learning import Learning
from ..flows.planning import replan_request, run_plan
from ..flows.records import FlowEnd
from ..flows.runner import FLOW_HELD, FlowRunner, held_question
from ..state.base import START
from ..tags.context import ResolvedContext
from ..tags.flows import FLOW_TOOLS_LISTED
from . import integrity
from .acting import NESTED, Actor
from .budgets import BudgetExhausted
from .envelopes import (
    ACTING,
    ClarifyEnvelope,
    Envelope,
    ErrorEnvelope,
    InvalidEnvelope,
    ReplyEnvelope,
    edited,
    parse,
)
from .journal import Journal
from .planners.base import (
    Answer,
    Emitted,
    Planner,
    PlannerError,
    Said,
    Told,
    ToolInfo,
    Turn,
    Usage,
)
from .session import RESULT_TEXT, CallSummary, Recorder, Session, call_key
from .states import FINAL, SessionState

logger = logging.getLogger("gateway.engine")

END_SECONDS: Final = 5.0
"""How long recording a session's end may take when it ends by cancellation or a failure."""
OUTCOME_UNKNOWN: Final = "its outcome is unknown: the gateway stopped while it ran"
CANCELED_BY_CALLER: Final = "cancelled by its caller"
CANCELED_AFTER_STEP: Final = "cancelled by its caller, after the step under way"
MAX_REPAIRS: Final = 2
"""Turns in a row that may put an invalid answer right, before the session fails."""

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
    waiting: str | None = None
    """What an input_required session waits for: `question`, `confidence` or `approval`."""
    last_event: str = START
    """The session's last event when this was its result: an answer to what it showed
    is for the session as it stood then (Engine.respond)."""


class Turns:
    def __init__(
        self,
        service: ToolService,
        recorder: Recorder,
        tools_for: ToolsFor,
        planner: Planner | None,
        confidence: float,
        after_taint: AfterTaint,
        nested_depth: int = 0,
        taint_definitions: bool = False,
    ) -> None:
        self.service = service
        self.recorder = recorder
        self.tools_for = tools_for
        self.planner = planner
        self.confidence = confidence
        self.after_taint = after_taint
        self.actor = Actor(service, recorder, nested_depth)
        self.taint_definitions = taint_definitions
        self.learning = Learning(recorder.store)
        """What runs of flows did, kept to tell the planner and to learn flows from."""
        self.flows = FlowRunner(self.actor, recorder, self._repeatable, self.learning)
        self.actor.plans = lambda session, plan, turn: run_plan(self.flows, session, plan, turn)
        self.stopping = False
        """The gateway shuts down (Engine.stop): a cancelled session is left to resume."""

    async def run(
        self,
        session: Session,
        first: Callable[[], Awaitable[bool]] | None,
        planner: Planner | None = None,
    ) -> SessionResult:
        planner = planner or self.planner
        try:
            if session.stop is not None:  # its caller's request stood before this run began
                raise SessionCanceled(session.id)
            if session.flow is not None and session.flow["phase"] == "running":
                if session.state is not SessionState.WORKING:
                    await self.recorder.move(session, SessionState.WORKING)
                await self._flow(session, planner)
                return self.result(session)
            if planner is None:
                never_started = session.state is SessionState.SUBMITTED
                await self._end(
                    session,
                    SessionState.REJECTED if never_started else SessionState.FAILED,
                    "no planner is configured: set engine.planner in gateway.yaml "
                    "(anthropic, with an API key, or scripted)",
                )
                return self.result(session)
            if session.state is not SessionState.WORKING:  # a resumed session already is
                await self.recorder.move(session, SessionState.WORKING)
            if first is None or await first():
                await self._loop(session, planner)
        except BudgetExhausted as exc:
            await self._exhausted(session, exc)
        except SessionCanceled:
            await self._end(session, SessionState.CANCELED, CANCELED_AFTER_STEP)
        except SessionTaken:
            raise
        except anyio.get_cancelled_exc_class():
            why = CANCELED_BY_CALLER if session.stop is not None else "cancelled"
            await self._end_anyway(session, SessionState.CANCELED, why)
            raise
        except Exception:  # a bug, or the state store failing: the session ends, said so
            logger.exception("session %s failed", session.id)
            await self._end_anyway(session, SessionState.FAILED, "an internal error (logged)")
            if session.claim is None:  # writing the end found the session another's
                raise SessionTaken(session.id) from None
        return self.result(session)

    async def cancel(self, session: Session) -> None:
        """End `session`, which nobody runs, as its caller asked (Engine.cancel)."""
        await self._end(session, SessionState.CANCELED, CANCELED_BY_CALLER)

    async def _flow(self, session: Session, planner: Planner | None) -> None:
        """Run the flow the session names, with no model in between; on a failed step
        that says `replan`, hand the session to the planner."""
        flow, end = await self.flows.run_session(session)
        name = session.flow["name"] if session.flow is not None else ""
        if end.status == "completed":
            session.outcome = end.text
            await self.recorder.event(session, "reply", text=end.text[:RESULT_TEXT], flow=name)
            await self.recorder.move(session, SessionState.COMPLETED, "the flow completed")
        elif end.status == "failed":
            await self._end(session, SessionState.FAILED, end.text)
        elif end.status == "held":
            await self._hold_flow(session, end)
        elif planner is None:
            why = f"{end.text}; its on_error is replan, but no planner is configured"
            await self._end(session, SessionState.FAILED, why)
        else:
            assert flow is not None
            assert session.flow is not None
            session.flow["phase"] = "replanned"
            await self.recorder.event(session, "replan", flow=name, step=end.step, why=end.text)
            session.transcript.append(Said(replan_request(flow, end)))
            await self.recorder.snapshot(session)
            await self._loop(session, planner)

    async def _hold_flow(self, session: Session, end: FlowEnd) -> None:
        """Ask the user about a flow's steps whose outcome is unknown (the gateway stopped
        while they ran) and that are not safe to send again."""
        why = OUTCOME_UNKNOWN if end.asking == "outcome" else integrity.ASKED_BY_TAGS
        for held in end.held:
            self.service.held(session.caller, ToolCall(held["tool"], held["arguments"]), why)
        keys = [held["key"] for held in end.held if held["key"]]
        calls = [{**held, "why": why} for held in end.held]
        replay = end.after if end.asking == "outcome" else None
        session.approval = {"for": FLOW_HELD, "calls": calls, "keys": keys, "replay": replay}
        if keys:
            await self.recorder.event(session, "outcome_unknown", keys=keys)
        assert session.flow is not None
        question = held_question(session.flow["name"], end)
        await self._ask(session, question, "approval")

    async def _end_anyway(self, session: Session, state: SessionState, why: str) -> None:
        """End a session that is not final, shielded from cancellation and bounded (the
        store may be what failed); a failure to write it down is logged, not raised. Not
        one this engine lost its claim on (its new holder goes on with it), nor one that
        the gateway's shutdown cancelled (Engine.stop: it is left to resume)."""
        if session.state in FINAL or session.claim is None:
            return
        if self.stopping and state is SessionState.CANCELED:
            logger.info("session %s: left to resume, the gateway is stopping", session.id)
            return
        with anyio.move_on_after(END_SECONDS, shield=True) as scope:
            try:
                await self._end(session, state, why)
            except SessionTaken:  # another engine holds it now: its end is not ours to write
                session.claim = None
                return
            except Exception:
                logger.exception("session %s: could not record it as %s", session.id, state)
        if scope.cancelled_caught:
            logger.warning("session %s: recording it as %s timed out", session.id, state)
        session.state, session.outcome = state, why

    async def _loop(self, session: Session, planner: Planner) -> None:
        repairs = 0
        # Read once a run, not every turn: the prompt stays the same from turn to turn (a
        # cached prefix), and the store is not asked again for what a turn cannot change.
        notes = await self.learning.notes(session.caller) if session.caller.flows else []
        while True:
            if session.stop is not None:
                raise SessionCanceled(session.id)
            session.spent.before_turn(session.budgets)
            turn = self._turn(session, notes)
            if self.taint_definitions and not session.tainted:
                await self._read_definitions(session, turn.tools)
            try:
                answer = await planner.decide(turn)
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
            if not await self._handle(session, answer.id, envelope, _turns(session)):
                return

    async def _handle(self, session: Session, emitted: str, envelope: Envelope, turn: int) -> bool:
        """Act on a valid envelope, the session's `turn`th; whether the loop goes on."""
        if isinstance(envelope, ACTING) and envelope.confidence < self.confidence:
            question = (
                f"I am not sure enough to go on (confidence {envelope.confidence:.2f}): "
                f"{envelope.reasoning or 'no reason given'}. Shall I go ahead?"
            )
            await self._ask(session, question, "confidence")
            return False
        if isinstance(envelope, ReplyEnvelope):
            session.outcome = envelope.text
            await self.recorder.event(session, "reply", text=envelope.text)
            await self.recorder.move(session, SessionState.COMPLETED, "replied")
            return False
        if isinstance(envelope, ClarifyEnvelope):
            await self._ask(session, envelope.question, "question")
            return False
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
            if self.after_taint == "refuse" and all(h.why == integrity.AFTER_TAINT for h in holds):
                await self._refuse_after_taint(session, emitted, turn, holds)
                return True
            for hold in holds:
                self.service.held(session.caller, ToolCall(hold.tool, hold.arguments), hold.why)
            calls = [asdict(h) for h in holds]
            session.approval = {"for": emitted, "calls": calls, "keys": []}
            await self._ask(session, integrity.question(holds), "approval")
            return False
        if isinstance(envelope, ErrorEnvelope):
            await self._end(session, SessionState.FAILED, f"the model gave up: {envelope.reason}")
            return False
        await self._act_and_tell(session, emitted, envelope, turn)
        return True

    async def _act_and_tell(
        self, session: Session, emitted: str, envelope: Envelope, turn: int, note: str = ""
    ) -> None:
        """Act on `envelope`, tell the model what came of it, and end the turn."""
        text = await self.actor.act(session, envelope, turn)
        session.transcript.append(Told(emitted, f"{note}\n\n{text}" if note else text))
        session.deciding = None
        session.journal = None
        await self.recorder.snapshot(session)  # a turn's end: what a resume starts from

    async def _refuse_after_taint(
        self, session: Session, emitted: str, turn: int, holds: Sequence[integrity.Held]
    ) -> None:
        """Refuse the calls only taint holds: audited, counted as violations, and told."""
        for hold in holds:
            key = call_key(session.id, turn, hold.index)
            await self.actor.refuse(
                session, key, hold.tool, hold.arguments, "after_taint", hold.why
            )
        session.transcript.append(Told(emitted, f"Not run: {integrity.AFTER_TAINT}."))
        for _ in holds:
            session.spent.violation(session.budgets)

    async def decided(self, session: Session, emitted: Emitted) -> bool:
        """Act on the caller's decision (`session.deciding`) on what `emitted` asked for:
        a held call, or a resumed turn's calls of unknown outcome (`replay`: its journal
        says which were made and what the user said of the others)."""
        deciding = session.deciding
        assert deciding is not None
        replay, edits, said = deciding.get("replay"), deciding["arguments"], deciding["message"]
        if replay is None and deciding["verdict"] == "reject":
            told = f"The user did not approve it, so it was not run. {said}"
            session.transcript.append(Told(emitted.id, told.strip()))
            session.deciding = None
            return True
        if replay is None:
            note = "The user edited the arguments before it ran." if edits else ""
        else:
            note = f"The user said: {said}" if said else ""
            if session.journal is None:
                session.journal = await Journal.read(self.recorder.store, session.id, replay)
        # As the user decided: with the edits made, if any (on a replay, when first approved).
        envelope = parse(edited(emitted.data, edits))
        await self._act_and_tell(session, emitted.id, envelope, _turns(session), note)
        return True

    async def resumed(self, session: Session, journal: Journal) -> bool:
        """Pick a resumed session up where its engine stopped; whether the loop goes on."""
        decided = journal.last("envelope")
        if decided is not None and not any(
            isinstance(entry, Emitted) and entry.id == decided["id"] for entry in session.transcript
        ):  # the model's answer reached the stream, not the snapshot: it counts, once
            session.transcript.append(Emitted(decided["id"], decided["data"]))
            session.spent.add(Usage(**decided["usage"]))
        if any(event.get("type") == "tainted" for event in journal.events):
            session.tainted = True
        last = session.transcript[-1]
        if not isinstance(last, Emitted):
            return True  # the turn had ended: the model decides next
        turn = _turns(session)
        prefix = call_key(session.id, turn, "")
        session.journal = journal
        if journal.acted(prefix):
            unknown = [i for i in journal.unknown(prefix) if not self._repeatable(i["tool"])]
            if unknown:
                await self._hold_unknown(session, last.id, unknown, journal.after)
                return False
        if session.deciding is not None and session.deciding["for"] == last.id:
            return await self.decided(session, last)
        try:
            envelope = parse(last.data)
        except InvalidEnvelope:  # not kept unanswered; should it be, the model decides again
            session.journal = None
            return True
        if journal.acted(prefix):  # it passed every check before: acted on as it was
            await self._act_and_tell(session, last.id, envelope, turn)
            return True
        return await self._handle(session, last.id, envelope, turn)

    async def _hold_unknown(
        self, session: Session, emitted: str, unknown: Sequence[dict[str, Any]], after: str
    ) -> None:
        """Ask the user about calls that may or may not have reached their upstream (the
        engine stopped while they ran) and are not safe to repeat: approve sends them again
        (with the same idempotency keys), reject goes on without them."""
        calls = [
            {
                "index": int(intent["key"].rsplit(".", 1)[1]),
                "tool": intent["tool"],
                "arguments": intent["arguments"],
                "why": OUTCOME_UNKNOWN,
            }
            for intent in unknown
        ]
        for held in calls:
            self.service.held(
                session.caller, ToolCall(held["tool"], held["arguments"]), OUTCOME_UNKNOWN
            )
        keys = [intent["key"] for intent in unknown]
        deciding = session.deciding
        edits = deciding["arguments"] if deciding and deciding["for"] == emitted else {}
        session.approval = {
            "for": emitted,
            "calls": calls,
            "keys": keys,
            "replay": after,
            "arguments": edits,
        }
        session.deciding = None
        session.journal = None
        await self.recorder.event(session, "outcome_unknown", keys=keys)
        names = ", ".join(sorted({call["tool"] for call in calls}))
        question = (
            f"The gateway stopped while {names} ran, so whether it took effect is unknown, "
            "and it is not safe to repeat. Send it again (approve), or go on without it "
            "(reject)?"
        )
        await self._ask(session, question, "approval")

    def _read_only(self, tool: str) -> bool:
        entry = self.service.pool.catalog.tools.get(tool)
        return entry is not None and entry.read_only

    def _repeatable(self, tool: str) -> bool:
        entry = self.service.pool.catalog.tools.get(tool)
        return entry is not None and entry.repeatable

    async def _read_definitions(self, session: Session, tools: Sequence[ToolInfo]) -> None:
        """The model is about to read tool definitions, the upstreams' text: with
        `taint_definitions`, any of a tool whose output the caller's tags do not trust
        taints the session before its first decision, so that no call it plans after
        reading them runs without the checks of integrity.py."""
        untrusted = [t.name for t in tools if not session.caller.trusts_output(t.name)]
        if untrusted:
            session.tainted = True
            await self.recorder.event(session, "tainted", definitions=untrusted[:20])

    def _turn(self, session: Session, notes: Sequence[str] = ()) -> Turn:
        """The turn the planner is asked: the caller's prompt (with what recent runs of
        its flows say, `notes`), the tools it may use, the transcript."""
        tools = tuple(
            ToolInfo(tool.name, tool.description or "", dict(tool.input_schema))
            for tool in self.tools_for(session.caller)
            # What a session may not call, it is not shown either; a flow it follows by a
            # plan that names it, not by its tool.
            if (tool.name != NESTED or session.depth < self.actor.nested_depth)
            and not tool.name.startswith(FLOW_TOOLS_LISTED)
        )
        system = session.caller.prompt
        if notes:
            listed = "\n".join(f"- {note}" for note in notes)
            system = f"{system}\n\n## What recent runs of your flows say\n\n{listed}"
        return Turn(system, tools, tuple(session.transcript))

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
            usage=asdict(usage),
        )

    async def _ask(self, session: Session, question: str, waiting: str) -> None:
        if session.stop is not None:  # asked to stop: it does, rather than ask
            raise SessionCanceled(session.id)
        session.outcome = question
        session.waiting = waiting
        session.spent.pause()
        # What it waits for, on the event too: a client following the stream learns it
        # without reading the session again (an approval's id is the id of the `state`
        # event that follows, which moves the session to input_required).
        held = (
            {"calls": session.approval["calls"]}
            if waiting == "approval" and session.approval
            else {}
        )
        await self.recorder.event(session, "question", text=question, waiting=waiting, **held)
        await self.recorder.move(session, SessionState.INPUT_REQUIRED, "asked the caller")

    async def _exhausted(self, session: Session, exc: BudgetExhausted) -> None:
        await self.recorder.event(session, "budget", name=exc.name, used=exc.used, limit=exc.limit)
        await self._end(session, SessionState.FAILED, str(exc))

    async def _end(self, session: Session, state: SessionState, why: str) -> None:
        session.outcome = why
        await self.recorder.move(session, state, why)

    def result(self, session: Session) -> SessionResult:
        return SessionResult(
            session.id,
            session.state,
            session.outcome,
            tuple(session.calls),
            session.spent.summary(),
            session.waiting if session.state is SessionState.INPUT_REQUIRED else None,
            session.last_event,
        )


def _turns(session: Session) -> int:
    """How many envelopes the session has had: the latest's ordinal, the turn that an
    answer, an approval or a resume acts on (a session stops right after one)."""
    return sum(isinstance(entry, Emitted) for entry in session.transcript)
