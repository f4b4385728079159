"""How run_session talks to its caller during the call: progress as the session advances
(from its event stream, so the first report already carries the session's id, which a
caller cut off by a restart needs), and a session's question or approval put to the
caller by elicitation, where it declared elicitation (the handshake era): its answer goes
on with the session in the same call. A caller that cannot be asked gets the question as
the call's result and answers by calling again with the session id."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import aclosing
from typing import Any, Final

import mcp_types as types

from ..jsoncodec import unencodable
from ..own_tools import Progress
from ..state.base import StateStore, Stream
from ..upstreams.relay import Asker
from .envelopes import MAX_TEXT
from .journal import stream_events
from .loop import Reply, SessionResult

CAUGHT_UP: Final = 10_000
"""Events reported at most once the session stopped (the rest were reported live)."""

DECISION: Final = {
    "type": "object",
    "properties": {
        "decision": {"type": "string", "enum": ["approve", "reject"], "title": "Decision"},
        "message": {"type": "string", "title": "Why (if you reject)"},
    },
    "required": ["decision"],
}
ANSWER: Final = {
    "type": "object",
    "properties": {"answer": {"type": "string", "title": "Your answer"}},
    "required": ["answer"],
}


class Reporter:
    """Reports a session's events as progress: while it runs (`follow`, until cancelled),
    and what is left once it stopped (`catch_up`), so the last report, its end, comes
    before the call's result."""

    def __init__(self, progress: Progress, store: StateStore, session_id: str, after: str) -> None:
        self.progress = progress
        self.store = store
        self.session_id = session_id
        self.cursor = after
        self.sent = 0
        self._tools: dict[str, str] = {}  # by call key, for the results

    async def follow(self) -> None:
        async with aclosing(self.store.follow(self.session_id, Stream.EVENTS, self.cursor)) as new:
            async for batch in new:
                for event in batch.events:
                    await self._tell(event.id, event.data)

    async def catch_up(self) -> None:
        events = stream_events(self.store, self.session_id, Stream.EVENTS, self.cursor, CAUGHT_UP)
        async for event in events:
            await self._tell(event.id, event.data)

    async def _tell(self, event_id: str, event: Mapping[str, Any]) -> None:
        said = _said(self.session_id, event, self._tools)
        if said is not None:
            self.sent += 1
            await self.progress(self.sent, None, said)
        self.cursor = event_id  # once told: cut off in the middle, catch_up tells it again


def _said(session_id: str, event: Mapping[str, Any], tools: dict[str, str]) -> str | None:
    kind = event.get("type")
    key = str(event.get("key", ""))
    if kind == "accepted":
        return f"session {session_id} accepted"
    if kind == "resumed":
        return f"session {session_id} resumed"
    if kind == "envelope":
        return f"the model answered: {event.get('kind')}"
    if kind == "intent":
        tools[key] = str(event.get("tool"))
        return f"calling {tools[key]}"
    if kind == "result":
        return f"{tools.get(key, 'a call')}: {event.get('outcome')}"
    if kind == "state":
        return f"session {event.get('to')}"
    if kind == "flow":
        return f"flow {event.get('flow')}: {len(event.get('steps') or [])} steps"
    if kind == "step":
        status = event.get("status")
        attempt = event.get("attempt", 1)
        again = f" (attempt {attempt})" if status == "running" and attempt != 1 else ""
        why = f": {event.get('error')}" if status == "failed" else ""
        return f"step {event.get('step')}: {status}{again}{why}"
    if kind == "replan":
        return f"step {event.get('step')} failed: the planner is asked for new steps"
    return None


async def ask(asker: Asker, result: SessionResult) -> tuple[Reply, str] | None:
    """Put what `result` waits for to the caller by elicitation: ("approve" or "reject",
    why) for an approval, ("answer", text) for a question; None when the caller cannot be
    asked (it did not declare elicitation), would not answer now, or answered what a
    `message` could not carry (too long, not valid Unicode)."""
    approval = result.waiting == "approval"
    params = types.ElicitRequestFormParams(
        message=result.text or "",
        requested_schema=DECISION if approval else ANSWER,
    )
    answered = await asker.elicit(params)
    if isinstance(answered, types.ErrorData) or answered.action != "accept":
        return None
    content = answered.content or {}
    # What a caller may say in a `message` argument, and no more: text run_session's schema
    # would take (its length) and the store can keep (valid Unicode).
    if any(
        isinstance(value, str) and (len(value) > MAX_TEXT or unencodable(value) is not None)
        for value in content.values()
    ):
        return None
    if approval:
        decision = content.get("decision")
        why = str(content.get("message", ""))
        if decision == "approve":
            return "approve", why
        if decision == "reject":
            return "reject", why
        return None
    text = content.get("answer")
    return ("answer", text) if isinstance(text, str) and text else None
