"""A session's events as its caller follows them, over SSE (`GET /events/{id}`) or a
WebSocket: the same frames on both.

Every (re)connection begins with a `snapshot` frame (the session as GET /sessions/{id}
shows it), then replays the stream from where the client says it is (SSE's
`Last-Event-ID`, the WebSocket's `since`; from the beginning when it says nothing), then
follows it live, and ends after the event that moves the session to a final state. An
event's frame is the event itself with its `id`, which is the stream entry's id (SSE's
`id:` too), so a client that resumes after the last id it saw misses nothing and sees
nothing twice. Events the stream no longer holds (trimmed to its length, or expired) are
a `gap` frame, never skipped in silence.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, Final

from ..engine.states import FINAL
from ..errors import ApiError, InvalidStreamId
from ..state.base import START, StateStore, Stream, StreamEvent, StreamGap, parse_id

Frame = tuple[str | None, dict[str, Any]]
"""A stream id (None for the snapshot and gaps) and what the client is sent."""
ENDED: Final = frozenset(state.value for state in FINAL)
FUTURE_SLACK: Final = 60.0
"""Seconds an id may lie ahead of this clock (a Redis server's clock differs a little)."""


def resume_point(value: str | None, name: str) -> str:
    """Where a client resumes: after the event id it names (START when none); 400 for
    one that is no stream id."""
    if value is None or value == "":
        return START
    try:
        millis, _ = parse_id(value)
    except InvalidStreamId:
        raise ApiError(
            400, "invalid_event_id", f"{name} must be a stream id like 1700000000000-0"
        ) from None
    if (
        millis > (time.time() + FUTURE_SLACK) * 1000
    ):  # no such event, nor will be: it would wait forever
        raise ApiError(400, "invalid_event_id", f"{name} names an event not yet written")
    return value


def _frame(event: StreamEvent) -> dict[str, Any]:
    """An event as sent: its fields and its stream id, as `id` (an envelope's own id, the
    model's answer's, goes on as `answer_id`)."""
    frame = {**event.data, "id": event.id}
    if "id" in event.data:
        frame["answer_id"] = event.data["id"]
    return frame


def gap_frame(gap: StreamGap) -> Frame:
    return None, {"type": "gap", "after": gap.after_id, "lost_through": gap.lost_through}


async def frames(
    store: StateStore,
    session_id: str,
    after: str,
    snapshot: Callable[[], Awaitable[dict[str, Any]]],
) -> AsyncGenerator[Frame, None]:
    """The frames of one connection (see the module docstring). `snapshot()`: the
    session's view now, read once the connection is made."""
    view = await snapshot()
    yield None, {"type": "snapshot", "session": view}
    if view["status"] in ENDED:  # what is left of the stream, then the end
        while True:
            batch = await store.read(session_id, Stream.EVENTS, after, 100)
            if batch.gap is not None:
                yield gap_frame(batch.gap)
            for event in batch.events:
                yield event.id, _frame(event)
            if not batch.events:
                return
            after = batch.events[-1].id
    async with aclosing(store.follow(session_id, Stream.EVENTS, after)) as batches:
        async for batch in batches:
            if batch.gap is not None:
                yield gap_frame(batch.gap)
            for event in batch.events:
                yield event.id, _frame(event)
                if event.data.get("type") == "state" and event.data.get("to") in ENDED:
                    return
