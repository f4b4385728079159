"""One session as the engine keeps it, and how it is written down: every step an event on
the session's stream (`STREAM:{id}:events`, the source of truth), a call's full result on
`STREAM:{id}:tool_results`, and a snapshot derived from them at `SESSION:{id}`.

Events, each a JSON object with a `type`:
- `accepted`: the session exists (written before its id is given to anyone);
- `state`: a move between states (`from`, `to`, and why);
- `envelope`: what the model answered (`kind`, `confidence`, `reasoning`, the turn's
  `usage`), or `invalid_envelope` with the `problem` told back to it;
- `intent`: a call about to be sent, with its idempotency `key` (call_key: the same when a
  resumed session acts on the turn again); `result`: how it ended (`outcome` completed /
  refused / failed / timeout / not_resent, the result's text cut to RESULT_TEXT);
- `tainted`: the first untrusted result read; `plan`: a plan's steps, before they run;
- `approval_decided`, `answer`: the caller's word; `resumed`: another run took over;
  `outcome_unknown`: the calls of a resumed turn held for the user (no result came);
- `budget`: the limit that ended the session, with its figures;
- `flow`: a flow's steps, before they run (gateway/flows/runner.py); `step`: a step
  `running` (each attempt), then `completed`, `skipped` or `failed` (with the `error`);
  `replan`: a failed step handed to the planner;
- `reply`, `question`: what the caller is told.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from ..errors import SessionTaken
from ..state.base import START, StateStore, Stream, parse_id
from ..subscribers import Subscribers
from ..tags.context import ResolvedContext
from .budgets import DEFAULT, Budgets, Spent
from .journal import Journal
from .planners.base import Emitted, Entry, Said, Told
from .states import SessionState, transition

logger = logging.getLogger("gateway.engine")

RESULT_TEXT: Final = 2_000
"""Characters of a call's result kept in its `result` event (all of it on tool_results)."""


def new_session_id() -> str:
    return f"s_{secrets.token_urlsafe(12)}"


def call_key(session_id: str, turn: int, index: int | str) -> str:
    """A call's idempotency key: the session, the turn (the envelope's ordinal in the
    transcript) and the call's place in its envelope; the same every time the turn is
    acted on. `index` "" gives the turn's prefix."""
    return f"{session_id}:{turn}.{index}"


@dataclass(frozen=True, slots=True)
class SessionOwner:
    """Whose call a session's call is (CallChannel.owner): the session's, at its depth
    of nesting, which run_session reads to refuse sessions started too deep."""

    session_id: str
    depth: int


@dataclass(slots=True)
class CallSummary:
    key: str
    tool: str
    decision: str
    """allowed, or the refusal (not_granted, denied, out_of_scope, ...)."""
    ok: bool


@dataclass(slots=True)
class Session:
    id: str
    caller: ResolvedContext
    message: str
    state: SessionState = SessionState.SUBMITTED
    spent: Spent = field(default_factory=Spent)
    depth: int = 0
    """How many sessions deep this one was started (0: by a caller, not a session)."""
    budgets: Budgets = DEFAULT
    """gateway.yaml's, tightened by the caller's tags (set by the engine, from today's tags
    when a stored session goes on)."""
    transcript: list[Entry] = field(default_factory=list)
    calls: list[CallSummary] = field(default_factory=list)
    outcome: str | None = None
    """The reply, the question, or why it failed, once there is one."""
    waiting: str | None = None
    """What the caller's answer is to (input_required): `question` (the model asked),
    `confidence` (the engine asked before acting on an unsure envelope) or `approval`."""
    tainted: bool = False
    """The session has read a result its caller's tags do not trust (integrity.py)."""
    approval: dict[str, Any] | None = None
    """While waiting for an approval: `for`, the envelope's id, the `calls` held; for a
    resumed turn's calls of unknown outcome also their `keys`, where its journal starts
    (`replay`) and the `arguments` the user had edited (by call index)."""
    created: float = field(default_factory=time.time)
    last_event: str = START
    """The id of the last event written: the snapshot holds everything up to it."""
    deciding: dict[str, Any] | None = None
    """While the caller's approval is acted on: `for`, the envelope's id, the `verdict`,
    the `arguments` edited, and `replay`, where the journal of a resumed turn starts."""
    claim: str | None = None
    """This engine's hold on the session in the store while it acts on it (claims.py);
    None when it holds none. Never written down."""
    claimed_at: float = 0.0
    """When (anyio's clock) this engine asked for its claim: the store's lease runs from
    then at the latest."""
    journal: Journal | None = None
    """While a resumed turn is acted on again: what its first run recorded."""
    callback: str | None = None
    """Where its caller is told of its questions, approvals and end (a webhook URL the
    session API checked against the org's allow-list; gateway/api/notify.py)."""
    stop: str | None = None
    """Its caller asked it to stop (Engine.run watches for that): `immediate`, or
    `after_step` (no turn or flow step starts after the ones under way). Never written
    down here: the request is kept in the store (StateStore.request_cancel)."""
    flow: dict[str, Any] | None = None
    """For a session that runs a flow tag: its `name`, `digest` and `inputs`, and `phase`:
    `running`, or `replanned` once the planner took over from a step that failed."""


EventHook = Callable[["Session", str, Mapping[str, Any]], None]
"""Told of every event a session writes, once written: the session, the event's type and
its fields (metrics.py counts turns, tokens and states from them). It must not block."""


class Recorder:
    """Writes a session's events and snapshot to the state store, in that order."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.hooks = Subscribers[EventHook]()

    def on_event(self, hook: EventHook) -> Callable[[], None]:
        """Tell `hook` of every event written from now on; returns what stops it."""
        return self.hooks.add(hook)

    async def event(self, session: Session, type_: str, **fields: Any) -> str:
        """Append the event, if this engine still holds the session's claim; else
        SessionTaken (and nothing is written: a stale holder sends no call after it)."""
        written = await self.store.append_claimed(
            session.id, Stream.EVENTS, {"type": type_, **fields}, _owner(session)
        )
        if written is None:
            raise SessionTaken(session.id)
        event_id = written
        # Parallel calls' events may come back out of order: the latest is the greatest.
        if parse_id(event_id) > parse_id(session.last_event):
            session.last_event = event_id
        for hook in self.hooks.current:
            try:
                hook(session, type_, fields)
            except Exception:
                logger.exception("an event hook failed")
        return event_id

    async def accepted(self, session: Session) -> None:
        principal = session.caller.principal
        await self.event(
            session,
            "accepted",
            user=principal.user_id,
            org=principal.org_id,
            intent=session.caller.intent,
            message=session.message,
        )
        await self.snapshot(session)

    async def move(self, session: Session, to: SessionState, why: str = "") -> None:
        """The state change, checked against the table, then written."""
        before = session.state
        transition(before, to)  # raises for a move the table does not hold
        await self.event(session, "state", **{"from": before.value, "to": to.value, "why": why})
        session.state = to
        await self.snapshot(session)

    async def result(self, session: Session, key: str, full: dict[str, Any]) -> None:
        """A call's full result, under the claim as every event (SessionTaken without)."""
        stream, event = Stream.TOOL_RESULTS, {"key": key, **full}
        if await self.store.append_claimed(session.id, stream, event, _owner(session)) is None:
            raise SessionTaken(session.id)

    async def snapshot(self, session: Session) -> None:
        """Write the snapshot, if this engine still holds the session's claim; else
        SessionTaken (and nothing is written)."""
        principal = session.caller.principal
        owner = _owner(session)
        written = await self.store.set_claimed_session_state(
            session.id,
            {
                "id": session.id,
                "state": session.state.value,
                "user": principal.user_id,
                "org": principal.org_id,
                "roles": list(principal.roles),
                "intent": session.caller.intent,
                "message": session.message,
                "outcome": session.outcome,
                "waiting": session.waiting,
                "tainted": session.tainted,
                "depth": session.depth,
                "approval": session.approval,
                "deciding": session.deciding,
                "created": session.created,
                "spent": session.spent.summary(),
                "calls_seen": dict(session.spent.calls_seen),
                "calls": [asdict(call) for call in session.calls],
                "transcript": [_entry(entry) for entry in session.transcript],
                "last_event": session.last_event,
                "flow": session.flow,
                "callback": session.callback,
            },
            owner,
        )
        if not written:
            raise SessionTaken(session.id)


def _owner(session: Session) -> str:
    """The claim this engine writes the session under; SessionTaken when it holds none."""
    if session.claim is None:
        raise SessionTaken(session.id)
    return session.claim


def _entry(entry: Entry) -> dict[str, Any]:
    if isinstance(entry, Said):
        return {"said": entry.text}
    if isinstance(entry, Emitted):
        return {"emitted": entry.id, "data": entry.data}
    assert isinstance(entry, Told)
    return {"told": entry.to, "text": entry.text, "is_error": entry.is_error}


def restore(snapshot: dict[str, Any], caller: ResolvedContext) -> Session:
    """The session a snapshot holds, run on as `caller` (whose identity the caller of this
    has checked against the snapshot's)."""
    spent = Spent.restored(snapshot["spent"], snapshot["calls_seen"])
    return Session(
        id=snapshot["id"],
        caller=caller,
        message=snapshot["message"],
        state=SessionState(snapshot["state"]),
        spent=spent,
        transcript=[_restored(entry) for entry in snapshot["transcript"]],
        calls=[CallSummary(**call) for call in snapshot["calls"]],
        outcome=snapshot["outcome"],
        waiting=snapshot["waiting"],
        tainted=snapshot["tainted"],
        depth=snapshot.get("depth", 0),
        approval=snapshot["approval"],
        deciding=snapshot.get("deciding"),
        created=snapshot["created"],
        last_event=snapshot.get("last_event", START),
        flow=snapshot.get("flow"),
        callback=snapshot.get("callback"),
    )


def _restored(entry: dict[str, Any]) -> Entry:
    if "said" in entry:
        return Said(entry["said"])
    if "emitted" in entry:
        return Emitted(entry["emitted"], entry["data"])
    return Told(entry["told"], entry["text"], entry["is_error"])
